"""The FastAPI example served for real: uvicorn on loopback in front of the simulator over HTTP.

The simulator runs ``SCALE`` times faster than the API and the app's client is told the same
(``SORA2_TIME_SCALE``), so minutes of generation take a fraction of a second. The HTTP
clients are httpx on asyncio and on trio; the app itself runs on asyncio under uvicorn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from sora2_async.testing import Simulator, serve_in_thread
from tests.fastapi_helpers import (
    EXAMPLE,
    api_requests,
    free_port,
    load_example,
    serve_app,
    sse_views,
    until,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio-real", "trio-real"], indirect=True),
]

VIDEOS = 20
WATCHERS = 50


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("NANOPHOTO_API_KEY", "fastapi-test-key")
    return load_example()


def configure(monkeypatch: pytest.MonkeyPatch, base_url: str, scale: float, limit: int) -> None:
    monkeypatch.setenv("NANOPHOTO_BASE_URL", base_url)
    monkeypatch.setenv("SORA2_TIME_SCALE", str(scale))
    monkeypatch.setenv("SORA2_RATE_LIMIT", str(limit))


async def submit(http: httpx.AsyncClient, count: int, prefix: str) -> list[str]:
    ids: list[str] = [""] * count

    async def one(i: int) -> None:
        response = await http.post("/videos", json={"prompt": f"{prefix} {i}"})
        assert response.status_code == 202, response.text
        ids[i] = response.json()["id"]

    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(one, i)
    return ids


async def poll_until_done(http: httpx.AsyncClient, video_id: str) -> dict[str, Any]:
    while True:
        response = await http.get(f"/videos/{video_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        if view["state"] not in ("queued", "processing"):
            return view
        await anyio.sleep(0.02)


async def test_fifty_clients_on_twenty_videos_share_the_pollers(
    example: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale = 600.0  # a sora2 video takes 0.1-0.3 s; the budget's hour, 6 s
    sim = Simulator(seed=11, time_scale=scale)
    final: list[dict[str, Any]] = []
    with serve_in_thread(sim) as api_url:
        # 40 an hour: the budget binds, and the scheduler aims at two requests a video.
        configure(monkeypatch, api_url, scale, limit=40)
        with serve_app(example.app) as served:
            async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
                ids = await submit(http, VIDEOS, "shared")

                async def watch(i: int) -> None:
                    video_id = ids[i % VIDEOS]
                    if i % 2:
                        final.append(await poll_until_done(http, video_id))
                    else:
                        views = await sse_views(http, f"/videos/{video_id}/events")
                        assert views[0]["id"] == video_id
                        final.append(views[-1])

                with anyio.fail_after(15):
                    async with anyio.create_task_group() as tg:
                        for i in range(WATCHERS):
                            tg.start_soon(watch, i)
                app_gets = len(final)
        stats = sim.stats()
    assert len(final) == app_gets == WATCHERS
    assert {view["state"] for view in final} == {"completed"}
    assert all(view["video_url"] for view in final)
    assert stats.tasks_created == VIDEOS
    assert stats.responses_429 == 0
    # Every request the simulator saw, however many HTTP clients watched.
    per_video = api_requests(stats) / VIDEOS
    print(f"\n{api_requests(stats)} API requests for {VIDEOS} videos: {per_video:.2f} per video")
    assert per_video <= 2.2


async def test_shutdown_mid_flight_cancels_the_pollers_cleanly(
    example: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    scale = 60.0  # a sora2 video takes 1-3 s: all are still running at shutdown
    sim = Simulator(seed=12, time_scale=scale)
    ended: list[list[dict[str, Any]]] = []
    with serve_in_thread(sim) as api_url:
        configure(monkeypatch, api_url, scale, limit=100)
        with serve_app(example.app) as served:
            service = example.app.state.sora2
            async with (
                httpx.AsyncClient(base_url=served.url, timeout=10) as http,
                anyio.create_task_group() as tg,
            ):
                ids = await submit(http, 10, "interrupted")

                async def watch(task_id: str) -> None:
                    ended.append(await sse_views(http, f"/videos/{task_id}/events"))

                for task_id in ids:
                    tg.start_soon(watch, task_id)
                # Mid-flight: the first polls went out; few videos, if any, are done.
                await until(lambda: sim.stats().requests_by_endpoint["check_status"] >= 3, within=5)
                assert service.running > 0  # background waits in flight
                started = time.monotonic()
                # What Ctrl-C or SIGTERM does; in a thread, so that this loop goes on.
                await anyio.to_thread.run_sync(served.stop)
                stopped_in = time.monotonic() - started
        seen = sim.stats()
        await anyio.sleep(0.5)  # 30 s of the API's time: many polls would have been due
        after = sim.stats()
    assert len(ended) == 10  # every event stream was ended by the server, not broken
    last = [views[-1]["state"] for views in ended]
    cut_short = [state for state in last if state in ("queued", "processing")]
    assert len(cut_short) >= 5, last  # most were cut short, the rest had ended
    print(f"\nstopped {stopped_in:.2f}s after the signal, with {len(ended)} event streams open")
    assert stopped_in < 2, "open event streams held the shutdown up"
    assert service.running == 0
    assert service.client.budget().reserved == 0  # every promised poll was given back
    assert api_requests(after) == api_requests(seen), "a request was sent after shutdown"
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
    assert "Traceback" not in caplog.text
    assert "Application shutdown complete" in caplog.text


async def test_batch_endpoint_and_video_views(
    example: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale = 600.0
    sim = Simulator(seed=13, time_scale=scale, failure_rate=0.0)
    with serve_in_thread(sim) as api_url:
        configure(monkeypatch, api_url, scale, limit=100)
        with serve_app(example.app) as served:
            async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
                body = {"videos": [{"prompt": f"batch {i}"} for i in range(6)]}
                response = await http.post("/batches", json=body)
                assert response.status_code == 202, response.text
                batch_id = response.json()["batch_id"]
                views: list[dict[str, Any]] = []

                async def batch_done() -> bool:
                    views.append((await http.get(f"/batches/{batch_id}")).json())
                    return bool(views[-1]["done"])

                with anyio.fail_after(10):
                    while not await batch_done():  # noqa: ASYNC110 (polling is the point)
                        await anyio.sleep(0.02)
                view = views[-1]
                assert view["total"] == 6
                assert view["rejected"] == []
                assert [v["state"] for v in view["videos"]] == ["completed"] * 6
                one = view["videos"][0]["id"]
                assert (await http.get(f"/videos/{one}")).json()["state"] == "completed"
                done = await sse_views(http, f"/videos/{one}/events")
                assert [v["state"] for v in done] == ["completed"]

                assert (await http.get("/videos/no-such-task")).status_code == 404
                assert (await http.get("/videos/no-such-task/events")).status_code == 404
                assert (await http.get("/batches/nope")).status_code == 404
                private = {"prompt": "x", "image_urls": ["http://127.0.0.1/cat.png"]}
                response = await http.post("/videos", json=private)
                assert response.status_code == 422
                assert "private" in response.json()["detail"]
                assert (await http.post("/videos", json={"prompt": ""})).status_code == 422
                requests_before = api_requests(sim.stats())
                for _ in range(5):  # answers from what the SDK knows: no request
                    assert (await http.get(f"/videos/{one}")).status_code == 200
                assert api_requests(sim.stats()) == requests_before
    assert sim.stats().tasks_created == 6


async def test_the_uvicorn_command_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """The way users run it: ``uvicorn fastapi_app:app``, in a process of its own, then SIGINT."""
    scale = 60.0
    sim = Simulator(seed=14, time_scale=scale)
    with serve_in_thread(sim) as api_url:
        port = free_port()
        env = {
            **os.environ,
            "NANOPHOTO_API_KEY": "fastapi-test-key",
            "NANOPHOTO_BASE_URL": api_url,
            "SORA2_TIME_SCALE": str(scale),
        }
        log = (tmp_path / "server.log").open("w+b")
        command = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(port)]
        command += ["--app-dir", str(EXAMPLE.parent), "--host", "127.0.0.1"]
        process = await anyio.open_process(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
                anyio.create_task_group() as tg,
            ):

                async def up() -> bool:
                    assert process.returncode is None, "the server died while starting"
                    with contextlib.suppress(httpx.TransportError):
                        return (await http.get("/openapi.json")).status_code == 200
                    return False

                with anyio.fail_after(20):
                    while not await up():  # noqa: ASYNC110 (another process)
                        await anyio.sleep(0.05)
                ids = await submit(http, 5, "ctrl-c")
                ended: list[list[dict[str, Any]]] = []

                async def watch(task_id: str) -> None:
                    ended.append(await sse_views(http, f"/videos/{task_id}/events"))

                for task_id in ids:
                    tg.start_soon(watch, task_id)
                await until(lambda: sim.stats().requests_by_endpoint["check_status"] >= 1, within=5)
                process.send_signal(signal.SIGINT)
                with anyio.fail_after(10):
                    code = await process.wait()
        finally:
            if process.returncode is None:  # only when the test failed
                process.kill()
                await process.wait()
        seen = sim.stats()
        await anyio.sleep(0.3)  # 18 s of the API's time
        after = sim.stats()
    log.seek(0)
    output = log.read().decode()
    log.close()
    assert code == 0, output
    assert len(ended) == 5, output
    assert "Application shutdown complete" in output
    assert "ERROR" not in output, output
    assert "Traceback" not in output, output
    assert api_requests(after) == api_requests(seen)
