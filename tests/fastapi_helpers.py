"""Running the FastAPI example for real: uvicorn on loopback, in a thread, its logs captured.

The example (``docs/examples/fastapi_app.py``) reads its settings from the environment when
its lifespan starts, so a test sets them (``monkeypatch.setenv``) before :func:`serve_app`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx

from tests.helpers import free_port as free_port  # re-exported: test_fastapi_app imports it here

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "fastapi_app.py"


def load_example() -> ModuleType:
    """The example app's module (imported once per test session)."""
    name = "sora2_fastapi_example"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Served:
    """A running app: its ``url``, and :meth:`stop` (what Ctrl-C or SIGTERM does)."""

    def __init__(self, url: str, server: Any, thread: threading.Thread) -> None:
        self.url, self.server, self.thread = url, server, thread

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to shut down, and wait until its thread has ended."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the app's server did not stop"


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[Served]:
    """Serve ``app`` with uvicorn in a thread until the block ends (or it is stopped).

    uvicorn is given no logging config, so its records reach the root logger (and caplog).
    """
    import uvicorn

    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="info")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    served = Served(f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread)
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "the app's server died while starting"
            assert time.monotonic() < deadline, "the app's server did not start"
            time.sleep(0.005)
        yield served
    finally:
        served.stop()
        sock.close()


async def sse_views(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """The ``data`` of every server-sent event of ``path``, once the server ends the stream."""
    views: list[dict[str, Any]] = []
    async with http.stream("GET", path) as response:
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                views.append(json.loads(line.removeprefix("data: ")))
    return views


async def until(condition: Callable[[], object], *, within: float, every: float = 0.01) -> None:
    """Wait until ``condition()`` is true: state of another thread, or of the simulator."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 (nothing to wait on across threads)
            await anyio.sleep(every)


def api_requests(stats: Any) -> int:
    """All API requests the simulator received, whatever the endpoint."""
    return sum(stats.requests_by_endpoint.values())
