"""``sora2_async.fastapi`` without a server: the service against the in-process simulator.

Virtual time on asyncio and trio (see conftest), so minutes of generation pass at once.
The lifespan and the dependencies run once through FastAPI's ``TestClient``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from sora2_async import InvalidRequestError, Sora2Client, TaskNotFoundError, VideoRequest
from sora2_async.fastapi import (
    STATE_KEY,
    ShuttingDownError,
    Sora2,
    Sora2ClientDep,
    Sora2Service,
    VideoView,
    sora2_lifespan,
)
from sora2_async.testing import Simulator
from tests.fastapi_helpers import until


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=5)


@pytest.fixture
async def service(sim: Simulator, anyio_backend: Any) -> AsyncIterator[Sora2Service]:
    async with (
        httpx.AsyncClient(transport=sim.transport()) as http,
        Sora2Client("service-key", http_client=http) as client,
        Sora2Service(client) as service,
    ):
        yield service


async def events_of(service: Sora2Service, task_id: str, **options: Any) -> list[str]:
    return [chunk async for chunk in service.sse(task_id, **options)]


def views_in(chunks: list[str]) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for chunk in chunks
        for line in chunk.splitlines()
        if line.startswith("data: ")
    ]


@pytest.mark.anyio
async def test_watchers_share_one_poller_per_video(service: Sora2Service, sim: Simulator) -> None:
    tasks = [await service.submit(VideoRequest(f"shared {i}")) for i in range(3)]
    assert service.view(tasks[0].task_id) == VideoView(task_id=tasks[0].task_id, state="processing")
    streams: list[list[str]] = []

    async def watch(task_id: str) -> None:
        streams.append(await events_of(service, task_id))

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(watch, tasks[i % 3].task_id)
    assert len(streams) == 30
    for chunks in streams:
        assert chunks[0] == "retry: 3000\n\n"
        views = views_in(chunks)
        assert views[-1]["state"] == "completed"
        assert views[-1]["video_url"]
        assert chunks[-1].startswith("event: completed\n")
    # One poller per video, whatever the number of watchers: the budget is idle, so a few
    # extra polls buy latency, but 30 watchers do not make 30 pollers.
    stats = sim.stats()
    assert stats.requests_by_endpoint["check_status"] <= 3 * 6
    assert service.running == 0
    view = service.view(tasks[0].task_id)
    assert view is not None
    assert view.done
    assert view.state == "completed"


@pytest.mark.anyio
async def test_a_failed_video_and_a_task_that_does_not_exist(
    service: Sora2Service, sim: Simulator
) -> None:
    sim.failure_rate = 1.0
    task = await service.submit(VideoRequest("doomed"))
    views = views_in(await events_of(service, task.task_id))
    assert views[-1]["state"] == "failed"
    assert views[-1]["error"]

    service.follow("task_nobody_made")
    views = views_in(await events_of(service, "task_nobody_made"))
    assert views[-1]["state"] == "error"
    assert views[-1]["error_code"] == "TASK_NOT_FOUND"
    with pytest.raises(InvalidRequestError):
        service.follow("  ")
    assert service.view("  ") is None
    assert service.view("never-seen") is None
    assert [chunk async for chunk in service.sse("never-seen")] == ["retry: 3000\n\n"]


@pytest.mark.anyio
async def test_follow_picks_up_a_task_submitted_elsewhere(
    service: Sora2Service, sim: Simulator
) -> None:
    async with (
        httpx.AsyncClient(transport=sim.transport()) as http,
        Sora2Client("service-key", http_client=http) as other,
    ):
        task = await other.generate(VideoRequest("made elsewhere"))
    followed = service.follow(task.task_id)
    assert followed.task_id == task.task_id
    assert service.follow(task.task_id).task_id == task.task_id  # once is enough
    views = views_in(await events_of(service, task.task_id))
    assert views[-1]["state"] == "completed"
    with pytest.raises(TaskNotFoundError):  # the SDK's own errors are left alone
        await service.client.check_status("task_nobody_made")


@pytest.mark.anyio
async def test_heartbeats_and_a_stream_that_ends_after_max_seconds(service: Sora2Service) -> None:
    task = await service.submit(VideoRequest("slow", model_tier="sora2-pro-high"))
    chunks = await events_of(service, task.task_id, heartbeat=10.0, max_seconds=35.0, retry=1.5)
    assert chunks[0] == "retry: 1500\n\n"
    assert chunks.count(": keep-alive\n\n") == 3
    assert views_in(chunks)[-1]["state"] == "processing"


@pytest.mark.anyio
async def test_batches_report_accepted_and_rejected_requests(anyio_backend: Any) -> None:
    sim = Simulator(seed=6, credits=12)  # three sora2 videos' worth
    async with (
        httpx.AsyncClient(transport=sim.transport()) as http,
        Sora2Client("batch-key", http_client=http) as client,
        Sora2Service(client) as service,
    ):
        job = service.start_batch([VideoRequest(f"b{i}") for i in range(5)], max_in_flight=2)
        first = service.batch_view(job.batch_id)
        assert first is not None
        assert (first.total, first.done) == (5, False)
        await until(lambda: job.done, within=3600, every=1)
        view = service.batch_view(job.batch_id)
        assert view is not None
        assert view.done
        assert [video.state for video in view.videos] == ["completed"] * 3
        assert len(view.rejected) == 2
        assert "INSUFFICIENT_CREDITS" in view.rejected[0]
        assert service.batch_view("nope") is None
        with pytest.raises(ValueError, match="max_in_flight"):
            service.start_batch([], max_in_flight=0)


@pytest.mark.anyio
async def test_drain_ends_streams_and_exit_cancels_the_pollers(anyio_backend: Any) -> None:
    sim = Simulator(seed=7)
    async with (
        httpx.AsyncClient(transport=sim.transport()) as http,
        Sora2Client("drain-key", http_client=http) as client,
    ):
        async with Sora2Service(client) as service:
            tasks = [await service.submit(VideoRequest(f"cut short {i}")) for i in range(4)]
            ended: list[list[str]] = []

            async def watch(task_id: str) -> None:
                ended.append(await events_of(service, task_id))

            async with anyio.create_task_group() as tg:
                for task in tasks:
                    tg.start_soon(watch, task.task_id)
                await anyio.sleep(70)  # some polls, no video done yet
                assert service.running == 4
                service.drain()
            assert len(ended) == 4
            assert service.draining
            with pytest.raises(ShuttingDownError):
                await service.submit(VideoRequest("too late"))
            with pytest.raises(ShuttingDownError):
                service.start_batch([VideoRequest("too late")])
            sent = sum(sim.stats().requests_by_endpoint.values())
        assert service.running == 0
        assert client.budget().reserved == 0
        await anyio.sleep(3600)
        assert sum(sim.stats().requests_by_endpoint.values()) == sent
        assert "closed" in repr(service)


@pytest.mark.anyio
async def test_a_service_runs_once_and_only_inside_its_block(service: Sora2Service) -> None:
    with pytest.raises(RuntimeError, match="only once"):
        await service.__aenter__()
    fresh = Sora2Service(service.client)
    with pytest.raises(RuntimeError, match="not running"):
        await fresh.submit(VideoRequest("x"))
    with pytest.raises(ValueError, match="remember"):
        Sora2Service(service.client, remember=0)


@pytest.mark.anyio
async def test_the_lifespan_hands_the_service_and_client_to_routes(anyio_backend: Any) -> None:
    sim = Simulator(seed=8)

    def make_client() -> Sora2Client:
        http = httpx.AsyncClient(transport=sim.transport())
        return Sora2Client("lifespan-key", http_client=http)

    app = FastAPI(lifespan=sora2_lifespan(make_client))

    @app.post("/videos")
    async def create(prompt: str, sora2: Sora2, client: Sora2ClientDep) -> dict[str, Any]:
        assert client is sora2.client
        task = await sora2.submit(VideoRequest(prompt))
        return {"task_id": task.task_id, "budget_used": client.budget().used}

    # The lifespan as a server runs it; httpx's ASGI transport then finds it in app.state.
    async with (
        app.router.lifespan_context(app) as state,
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://app") as http,
    ):
        service = state[STATE_KEY]
        assert getattr(app.state, STATE_KEY) is service
        body = (await http.post("/videos", params={"prompt": "a corgi"})).json()
        assert body["budget_used"] == 1
        assert service.view(body["task_id"]) is not None
        assert service.running == 1
    assert service.running == 0
    assert service.draining

    bare = FastAPI()

    @bare.get("/")
    async def root(sora2: Sora2) -> None: ...

    async with httpx.AsyncClient(transport=httpx.ASGITransport(bare), base_url="http://a") as http:
        with pytest.raises(RuntimeError, match="sora2_lifespan"):
            await http.get("/")


def test_the_public_names() -> None:
    import sora2_async.fastapi as module

    assert sorted(module.__all__) == sorted(
        [
            "STATE_KEY",
            "UNCERTAIN",
            "BatchJob",
            "BatchRecord",
            "BatchView",
            "Created",
            "IdempotencyConflictError",
            "MemoryVideoStore",
            "SQLiteVideoStore",
            "SharedStores",
            "ShuttingDownError",
            "Sora2",
            "Sora2ClientDep",
            "Sora2Service",
            "VideoRecord",
            "VideoState",
            "VideoStore",
            "VideoStoreError",
            "VideoView",
            "drain_on_uvicorn_shutdown",
            "get_client",
            "get_sora2",
            "open_shared_stores",
            "sora2_lifespan",
        ]
    )
    for name in module.__all__:
        assert getattr(module, name) is not None
