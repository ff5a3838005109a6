"""The simulator over HTTP: its ASGI app in-process, and a real uvicorn server on loopback
driven by the SDK, by the CLI, and by the provider's own JavaScript and curl samples.

The provider's samples are read from the reference copy of its documentation at run time
and changed only where they must be (base URL, key, poll interval); none of their code is
kept in this repository.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from sora2_async import APIConnectionError, Sora2Client, TaskState, VideoRequest
from sora2_async.testing import Durations, Faults, Simulator, serve_in_thread
from sora2_async.testing._mp4 import boxes
from tests.helpers import free_port

REAL_TIME = pytest.mark.parametrize("anyio_backend", ["asyncio-real", "trio-real"], indirect=True)
ZH_DOC = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "reference"
    / "nanophoto-sora2-api.zh.txt"
)
PROVIDER_URL = "https://nanophoto.ai"
PLACEHOLDER_KEY = "YOUR_API_KEY"
KEY = "sample-key"


# -- the ASGI app in-process (virtual time) ------------------------------------------------------


def asgi_client(sim: Simulator, host: str = "127.0.0.1:8000") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=sim.asgi_app())
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "video_host"),
    [
        ("127.0.0.1:8000", "localhost:8000"),
        ("localhost:8000", "127.0.0.1:8000"),
        ("sim.example:81", "sim.example:81"),
        ("sim.example", "sim.example"),
    ],
)
async def test_asgi_app_serves_the_api_videos_and_stats(host: str, video_host: str) -> None:
    sim = Simulator(durations=Durations(sora2=60.0))
    auth = {"Authorization": "Bearer k"}
    async with asgi_client(sim, host) as http:
        created = await http.post(
            "/api/sora-2/generate", json={"prompt": "p", "mode": "textToVideo"}, headers=auth
        )
        task_id = created.json()["taskId"]
        await anyio.sleep(60)
        done = (
            await http.post("/api/sora-2/check-status", json={"taskId": task_id}, headers=auth)
        ).json()
        video = await http.get(f"/_videos/{task_id}.mp4")
        refused = await http.post(f"/_videos/{task_id}.mp4")
        stats = (await http.get("/_simulator/stats")).json()
        missing = await http.post("/api/sora-2/elsewhere", json={}, headers=auth)
    assert created.status_code == 200
    assert done["videoUrl"] == f"http://{video_host}/_videos/{task_id}.mp4"
    assert video.status_code == 200
    assert [kind for kind, _ in boxes(video.content)] == ["ftyp", "moov", "mdat"]
    assert refused.status_code == 405
    assert missing.status_code == 404
    assert stats["requests_by_endpoint"] == {"generate": 1, "check_status": 1}
    assert stats["video_requests"] == 1  # the 405 never reached the video host
    assert stats["tasks_created"] == 1


@pytest.mark.anyio
async def test_asgi_app_refuses_huge_bodies_and_honours_a_fixed_video_url() -> None:
    sim = Simulator()
    transport = httpx.ASGITransport(app=sim.asgi_app(video_base_url="https://cdn.example/v/"))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        huge = await http.post("/api/sora-2/generate", content=b"x" * (2 << 20))
    assert huge.status_code == 413
    assert huge.json()["errorCode"] == "INVALID_INPUT"
    assert sim.asgi_app(video_base_url="https://cdn.example/v/")._video_base({}, {}) == (
        "https://cdn.example/v"
    )


@pytest.mark.anyio
async def test_asgi_lifespan_starts_and_stops() -> None:
    app = Simulator().asgi_app()
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return incoming.pop(0)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan"}, receive, send)  # type: ignore[arg-type]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- a real server on loopback (real time) -------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[Simulator, str]]:
    """A fast simulator (a 3-minute video takes 0.3 s) served by uvicorn on a free port."""
    sim = Simulator(time_scale=600, seed=1)
    with serve_in_thread(sim) as base_url:
        yield sim, base_url


@pytest.mark.anyio
@REAL_TIME
async def test_sdk_over_http(served: tuple[Simulator, str], tmp_path: Path) -> None:
    sim, base_url = served
    async with Sora2Client(KEY, base_url=base_url) as client:
        task = await client.generate(VideoRequest("a corgi surfing"))
        status = await client.check_status(task)
        while not status.done:
            await anyio.sleep(0.05)
            status = await client.check_status(task)
        assert status.state is TaskState.COMPLETED
        assert status.video_url is not None
        assert status.video_url.startswith(base_url.replace("127.0.0.1", "localhost") + "/_videos/")
        path = await client.download(status, tmp_path / "video.mp4")
    assert [kind for kind, _ in boxes(path.read_bytes())] == ["ftyp", "moov", "mdat"]
    stats = sim.stats()
    assert stats.tasks_created == 1
    assert stats.video_requests == 1
    assert stats.video_requests_with_authorization == 0  # the key never went to the video host
    async with httpx.AsyncClient() as http:
        assert (await http.get(base_url + "/_simulator/stats")).json() == stats.as_json()


@pytest.mark.anyio
@REAL_TIME
async def test_dropped_connection_and_slow_body_over_http(served: tuple[Simulator, str]) -> None:
    sim, base_url = served
    body = {"taskId": "task_none"}
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base_url) as http:
        sim.faults = Faults(drop_connection=1.0)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.post("/api/sora-2/check-status", json=body, headers=auth)
        sim.faults = Faults(slow_body=1.0, slow_body_seconds=0.2)
        started = time.monotonic()
        slow = await http.post("/api/sora-2/check-status", json=body, headers=auth)
        assert time.monotonic() - started >= 0.15
        assert slow.json()["errorCode"] == "TASK_NOT_FOUND"
        sim.faults = Faults(malformed=1.0)
        broken = [
            await http.post("/api/sora-2/check-status", json=body, headers=auth) for _ in range(6)
        ]
    assert {r.status_code for r in broken} <= {200, 404, 502}
    assert any(r.status_code == 502 for r in broken)
    async with Sora2Client(KEY, base_url=base_url, max_retries=0) as client:
        sim.faults = Faults(drop_connection=1.0)
        with pytest.raises(APIConnectionError):
            await client.generate(VideoRequest("lost answer"))
    assert sim.stats().tasks_created == 1  # it exists: the answer was lost, not the request


def test_the_command_line_serves_over_http() -> None:
    port = free_port()
    command = [sys.executable, "-m", "sora2_async.testing", "--port", str(port)]
    command += ["--time-scale", "600", "--api-key", "cli-key", "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(base_url + "/_simulator/stats", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        generate = base_url + "/api/sora-2/generate"
        body = {"prompt": "p", "mode": "textToVideo"}
        good = httpx.post(generate, json=body, headers={"Authorization": "Bearer cli-key"})
        bad = httpx.post(generate, json=body, headers={"Authorization": "Bearer other"})
        assert good.status_code == 200
        assert bad.status_code == 401
        stats = httpx.get(base_url + "/_simulator/stats").json()
        assert stats["tasks_created"] == 1
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert b"sora2 simulator: API at http://127.0.0.1:" in err


# -- the provider's own samples ------------------------------------------------------------------


def provider_doc() -> str:
    if not ZH_DOC.is_file():
        pytest.skip(f"the provider's documentation is not at {ZH_DOC}")
    return ZH_DOC.read_text(encoding="utf-8")


def substitute(text: str, old: str, new: str) -> str:
    if old not in text:
        pytest.fail(f"the provider's sample no longer contains {old!r}: update this test")
    return text.replace(old, new)


def javascript_sample(base_url: str) -> str:
    """The ``generateVideo`` sample with only base URL, key and poll interval changed."""
    doc = provider_doc()
    start = doc.find("async function generateVideo()")
    call = doc.find("\ngenerateVideo();", start)
    if start < 0 or call < 0:
        pytest.fail("the provider's JavaScript sample was not found in its documentation")
    code = doc[start : call + len("\ngenerateVideo();")] + "\n"
    code = substitute(code, PROVIDER_URL, base_url)
    code = substitute(code, PLACEHOLDER_KEY, KEY)
    return substitute(code, "setTimeout(resolve, 5000)", "setTimeout(resolve, 50)")


def test_the_providers_javascript_sample_gets_a_video(
    served: tuple[Simulator, str], tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    sim, base_url = served
    script = tmp_path / "sample.mjs"
    script.write_text(javascript_sample(base_url), encoding="utf-8")
    result = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    found = re.search(r"(http://localhost:\d+/_videos/task_\w+\.mp4)", result.stdout)
    assert found, result.stdout + result.stderr
    video = httpx.get(found.group(1))
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    stats = sim.stats()
    assert stats.tasks_created == 1
    assert stats.requests_by_endpoint["check_status"] >= 1
    assert stats.responses_429 == 0


def curl_samples(base_url: str) -> list[list[str]]:
    """Each curl command of the documentation as argv, with URL and key substituted."""
    doc = provider_doc()
    blocks = re.findall(r"^curl -X POST .*?'\s*$", doc, flags=re.MULTILINE | re.DOTALL)
    if len(blocks) < 3:
        pytest.fail("the provider's curl samples were not found in its documentation")
    commands = []
    for block in blocks:
        block = substitute(block, PROVIDER_URL, base_url)
        block = substitute(block, PLACEHOLDER_KEY, KEY)
        commands.append(shlex.split(block.replace("\\\n", " ")))
    return commands


def test_the_providers_curl_samples(served: tuple[Simulator, str]) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    sim, base_url = served

    def run(argv: list[str]) -> dict[str, object]:
        result = subprocess.run([curl, "-sS", *argv[1:]], capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr
        answer: dict[str, object] = json.loads(result.stdout)
        return answer

    generates = [c for c in curl_samples(base_url) if any(a.endswith("/generate") for a in c)]
    statuses = [c for c in curl_samples(base_url) if any(a.endswith("/check-status") for a in c)]
    assert len(generates) == 2
    assert len(statuses) == 1
    task_ids = []
    for command in generates:
        answer = run(command)
        assert answer["success"] is True
        assert answer["status"] == "processing"
        task_ids.append(answer["taskId"])
    modes = {record.mode.value for record in sim.tasks.values()}
    assert modes == {"textToVideo", "imageToVideo"}
    # The documented task id is nobody's; the same command about a real one answers it.
    assert run(statuses[0])["errorCode"] == "TASK_NOT_FOUND"
    mine = [a.replace("task_abc123", str(task_ids[0])) for a in statuses[0]]
    answer = run(mine)
    assert answer["taskId"] == task_ids[0]
    assert answer["status"] in ("processing", "completed")
