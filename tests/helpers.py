"""Plain helpers shared by several test modules (fixtures live in ``conftest.py``).

* :func:`free_port`, for a server a test starts on loopback; :class:`RedisServer`, a real
  ``redis-server`` on one.
* The mocked API wire of ``test_http``, ``test_api`` and ``test_client``: the contract's
  answers, :class:`Script` (answers in turn, timed), :func:`route`, :func:`sent_json` and
  :func:`client`. They go with conftest's ``api`` fixture (respx, at :data:`BASE`) and its
  ``clean_env``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import httpx
import respx

from sora2_async import Sora2Client

MakerT = TypeVar("MakerT")


@contextlib.asynccontextmanager
async def store_makers(
    kind: str, request: Any, make: Callable[[Any], MakerT]
) -> AsyncIterator[MakerT]:
    """``make(redis)``, closed (``aclose``) when the block ends: ``redis`` is a coredis client
    on the session's real ``redis-server`` for the ``redis`` kind, ``None`` for the others."""
    async with contextlib.AsyncExitStack() as stack:
        redis = None
        if kind == "redis":
            import coredis

            server = request.getfixturevalue("redis_server")
            client = coredis.Redis.from_url(server.url, decode_responses=False)
            redis = await stack.enter_async_context(client)
        made = make(redis)
        try:
            yield made
        finally:
            await made.aclose()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the mocked API wire -------------------------------------------------------------------------

KEY = "sk-SECRET-123"
BASE = "https://nanophoto.ai"
GENERATE = "/api/sora-2/generate"
STATUS = "/api/sora-2/check-status"
TASK_ID = "task_abc123"
VIDEO_URL = "https://video.nanophoto.ai/sora/task_abc123.mp4"

ACCEPTED = {"success": True, "status": "processing", "taskId": TASK_ID, "message": "accepted"}
PROCESSING = {
    "success": True,
    "status": "processing",
    "progress": "generating",
    "message": "Video is being generated",
    "taskId": TASK_ID,
}
COMPLETED = {
    "success": True,
    "status": "completed",
    "videoUrl": VIDEO_URL,
    "taskId": TASK_ID,
    "generationTime": 120,
    "creditsUsed": 4,
}
FAILED = {
    "success": False,
    "status": "failed",
    "error": "Video generation failed",
    "errorCode": "GENERATION_FAILED",
    "taskId": TASK_ID,
}
INTERNAL = {"success": False, "error": "Internal server error", "errorCode": "INTERNAL_ERROR"}
RATE_LIMITED = {
    "success": False,
    "error": "API key rate limit exceeded. Please try again later.",
    "errorCode": "API_KEY_RATE_LIMIT_EXCEEDED",
}
HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
MAY_EXIST = "may exist"

Answer = httpx.Response | BaseException | type[BaseException]


class Script:
    """A respx side effect: answers in turn (the last one repeats), noting when each came.

    An answer is an ``httpx.Response``, or an exception (class) to raise as the transport would.
    """

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(anyio.current_time())
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, type):
            raise answer("injected failure", request=request)  # type: ignore[call-arg]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def ok(body: dict[str, Any], status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def html(status: int) -> httpx.Response:
    return httpx.Response(status, content=HTML, headers={"Content-Type": "text/html"})


def route(api: respx.MockRouter, path: str, *answers: Answer) -> tuple[respx.Route, Script]:
    script = Script(*answers)
    return api.post(path).mock(side_effect=script), script


def sent_json(route: respx.Route, index: int = -1) -> Any:
    return json.loads(route.calls[index].request.content)


def client(**kwargs: Any) -> Sora2Client:
    return Sora2Client(KEY, **kwargs)


def text_of(error: BaseException) -> str:
    """Everything a user could see of ``error``: its traceback, repr and message."""
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


class RedisServer:
    """Debian's ``redis-server`` on a free loopback port, persistence off; stopped by
    :meth:`stop`. :meth:`restart` loses every key, as a real restart without persistence."""

    def __init__(self) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.01)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
