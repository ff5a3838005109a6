"""``Sora2Service.accept``: videos taken at once into a store, submitted and followed under leases.

Several services on one store play the workers of one app (in one process, on one budget),
against the in-process simulator, in virtual time on asyncio and trio. A worker "dies" by
being cancelled with its store muted (:class:`Muted`): it releases nothing and writes nothing
more, as after a SIGKILL, so its videos wait out their leases and are taken over.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import httpx
import pytest

from sora2_async import RateLimit, RequestKind, SlidingWindowLimiter, Sora2Client, VideoRequest
from sora2_async.fastapi import (
    UNCERTAIN,
    IdempotencyConflictError,
    MemoryVideoStore,
    ShuttingDownError,
    Sora2Service,
    VideoRecord,
    VideoStoreError,
)
from sora2_async.testing import Faults, RuleTransport, Simulator

pytestmark = pytest.mark.anyio

CORGI = VideoRequest("a corgi surfing")


class Muted:
    """A store as one worker sees it; :meth:`die` makes that worker's hand go still."""

    def __init__(self, store: MemoryVideoStore) -> None:
        self._store = store
        self.dead = False
        self.away = False  # the store unreachable for this worker's loops (a partition)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def die(self) -> None:
        self.dead = True

    async def release(self, owner: str, video_ids: Sequence[str]) -> None:
        if not self.dead:
            await self._store.release(owner, video_ids)

    async def renew(self, owner: str, video_ids: Sequence[str]) -> set[str]:
        if self.away:
            raise VideoStoreError("the store is away (for this worker)")
        return await self._store.renew(owner, video_ids)

    async def claim(self, owner: str, limit: int) -> list[VideoRecord]:
        # Away for claims too: a worker that could still claim would take its own lapsed
        # video back whenever trio's order ran its claim first at the other's look.
        if self.away:
            raise VideoStoreError("the store is away (for this worker)")
        return await self._store.claim(owner, limit)


class Workers:
    """Services ("workers") on one store, one simulator and one budget."""

    def __init__(self, sim: Simulator, store: MemoryVideoStore, limit: int) -> None:
        self.sim, self.store = sim, store
        self.limiter = SlidingWindowLimiter(RateLimit(limit))

    @contextlib.asynccontextmanager
    async def worker(self, name: str, view: Any = None) -> AsyncIterator[Sora2Service]:
        async with (
            Sora2Client(
                "accept-key", transport=self.sim.transport(), rate_limit=self.limiter
            ) as client,
            Sora2Service(client, store=view or self.store, owner=name) as service,
        ):
            yield service

    async def until_done(self, service: Sora2Service, ids: Sequence[str]) -> list[Any]:
        with anyio.fail_after(6 * 3600):
            while True:
                views = [await service.video(video_id) for video_id in ids]
                if all(view is not None and view.done for view in views):
                    return views
                await anyio.sleep(5)


@pytest.fixture
def workers(request: pytest.FixtureRequest) -> Workers:
    limit = getattr(request, "param", 100)
    sim = Simulator(seed=21, rate_limit=RateLimit(limit))
    return Workers(sim, MemoryVideoStore(), limit)


async def block_budget(limiter: SlidingWindowLimiter, seconds: float) -> None:
    """Stop all sending for ``seconds``, as a 429 with that Retry-After does."""
    async with limiter.permit(RequestKind.POLL) as permit:
        permit.rate_limited(seconds)


async def dies_after(seconds: float, view: Muted, workers: Workers, **kwargs: Any) -> list[str]:
    """A worker that accepts ``kwargs["requests"]``, then dies ``seconds`` later."""
    ids: list[str] = []
    with anyio.CancelScope() as scope:
        async with workers.worker("doomed", view) as service:
            for request in kwargs["requests"]:
                ids.append((await service.accept(request)).id)
            await anyio.sleep(seconds)
            view.die()
            scope.cancel()
    return ids


async def test_a_video_is_accepted_before_anything_is_sent_then_made(workers: Workers) -> None:
    async with workers.worker("w1") as service:
        view = await service.accept(CORGI)
        assert (view.state, view.task_id) == ("queued", None)
        assert view.id is not None
        assert workers.sim.stats().requests_by_endpoint["generate"] == 0  # answered first
        (done,) = await workers.until_done(service, [view.id])
    assert done.state == "completed"
    assert done.video_url
    assert done.task_id in workers.sim.tasks
    assert workers.sim.stats().tasks_created == 1


async def test_an_idempotency_key_submits_once_and_refuses_another_body(workers: Workers) -> None:
    async with workers.worker("w1") as one, workers.worker("w2") as two:
        first = await one.accept(CORGI, idempotency_key="abc")
        again = await two.accept(CORGI, idempotency_key="abc")  # another worker, same key
        assert again.id == first.id
        with pytest.raises(IdempotencyConflictError):
            await two.accept(VideoRequest("a cat"), idempotency_key="abc")
        other = await one.accept(CORGI)  # no key: a video of its own
        assert other.id != first.id
        await workers.until_done(one, [first.id, other.id])
    assert workers.sim.stats().tasks_created == 2


async def test_any_worker_streams_a_video_another_makes(workers: Workers) -> None:
    async with workers.worker("maker") as maker, workers.worker("watcher") as watcher:
        view = await maker.accept(CORGI)
        assert view.id is not None
        chunks = [chunk async for chunk in watcher.video_sse(view.id, heartbeat=30)]
    states = [c.split("\n")[0].removeprefix("event: ") for c in chunks if c.startswith("event:")]
    assert states[0] in ("queued", "processing")
    assert states[-1] == "completed"
    assert any(c.startswith(": keep-alive") for c in chunks)  # minutes pass between changes


async def test_a_refused_generate_ends_in_error_and_is_not_retried() -> None:
    sim = Simulator(seed=3, credits=0)
    workers = Workers(sim, MemoryVideoStore(), 100)
    async with workers.worker("w1") as service:
        view = await service.accept(CORGI)
        assert view.id is not None
        (done,) = await workers.until_done(service, [view.id])
    assert done.state == "error"
    assert done.error_code == "INSUFFICIENT_CREDITS"
    assert sim.stats().requests_by_endpoint["generate"] == 1


async def test_a_lost_answer_to_a_generate_is_uncertain_and_never_sent_twice() -> None:
    sim = Simulator(seed=3, faults=Faults(drop_connection=1.0))
    workers = Workers(sim, MemoryVideoStore(), 100)
    async with workers.worker("w1") as service:
        view = await service.accept(CORGI)
        assert view.id is not None
        (done,) = await workers.until_done(service, [view.id])
    assert (done.state, done.error_code) == ("error", UNCERTAIN)
    assert sim.stats().requests_by_endpoint["generate"] == 1  # the task exists; not re-sent


@pytest.mark.parametrize("workers", [2], indirect=True)
async def test_a_dead_workers_queued_and_running_videos_are_taken_over(workers: Workers) -> None:
    # 2 requests an hour: one video at a time; the rest wait, queued, for the budget.
    requests = [VideoRequest(f"video {i}") for i in range(3)]
    view = Muted(workers.store)
    ids = await dies_after(60, view, workers, requests=requests)
    assert workers.sim.stats().tasks_created == 1  # the first runs, the others wait
    records = [await workers.store.video(video_id) for video_id in ids]
    assert sorted(r.state for r in records if r) == ["processing", "queued", "queued"]
    async with workers.worker("heir") as heir:
        done = await workers.until_done(heir, ids)
    assert [v.state for v in done] == ["completed"] * 3
    stats = workers.sim.stats()
    assert stats.tasks_created == 3
    assert stats.duplicate_prompts == 0
    assert stats.responses_429 == 0


async def test_a_stalled_workers_video_goes_to_another_and_is_sent_once(workers: Workers) -> None:
    stalled = Muted(workers.store)
    async with workers.worker("fresh") as fresh, workers.worker("stalled", stalled) as slow:
        stalled.away = True  # its leases will lapse while it waits
        await block_budget(workers.limiter, 120)  # no budget for 2 minutes
        view = await slow.accept(CORGI)
        assert view.id is not None
        await anyio.sleep(100)  # its lease lapsed; the other worker claimed it
        record = await workers.store.video(view.id)
        assert record is not None
        assert record.owner == "fresh"
        (done,) = await workers.until_done(fresh, [view.id])
    assert done.state == "completed"
    assert workers.sim.stats().requests_by_endpoint["generate"] == 1


async def test_a_generate_that_went_out_unanswered_when_its_worker_died_is_uncertain(
    workers: Workers,
) -> None:
    await workers.store.create([VideoRecord("v1", CORGI, owner="ghost")])
    await workers.store.update("v1", "ghost", {"state": "submitting"})
    async with workers.worker("heir") as heir:
        (done,) = await workers.until_done(heir, ["v1"])
    assert (done.state, done.error_code) == ("error", UNCERTAIN)
    assert workers.sim.stats().requests_by_endpoint["generate"] == 0


async def test_a_worker_that_stops_hands_its_videos_over_at_once(workers: Workers) -> None:
    async with workers.worker("leaving") as leaving:
        await block_budget(workers.limiter, 600)  # nothing can go out for 10 minutes
        ids = [(await leaving.accept(VideoRequest(f"v{i}"))).id for i in range(3)]
    assert workers.sim.stats().requests_by_endpoint["generate"] == 0
    async with workers.worker("next") as following:
        await anyio.sleep(1)  # well within a lease's 30 s
        records = [await workers.store.video(i) for i in ids if i]
        assert {r.owner for r in records if r} == {"next"}  # no lease had to lapse
        await workers.until_done(following, [i for i in ids if i])
    assert workers.sim.stats().tasks_created == 3


async def test_a_batch_is_taken_at_once_and_reported_from_any_worker(workers: Workers) -> None:
    async with workers.worker("w1") as one, workers.worker("w2") as two:
        batch = await one.accept_batch([VideoRequest(f"b{i}") for i in range(4)])
        assert batch.total == 4
        assert {v.state for v in batch.videos} == {"queued"}
        again = await two.accept_batch(
            [VideoRequest(f"b{i}") for i in range(4)], idempotency_key=None
        )
        assert again.batch_id != batch.batch_id
        await workers.until_done(two, [v.id for v in batch.videos + again.videos if v.id])
        seen = await two.batch(batch.batch_id)
        for worker in (one, two):  # nothing is kept of the videos once they ended
            assert worker.running == 0
            assert worker._worker._tasks == {}
            assert worker._worker._progress_written == {}
        assert await one.batch("nope") is None
        with pytest.raises(ValueError, match="at least one"):
            await one.accept_batch([])
    assert seen is not None
    assert seen.done
    assert [v.state for v in seen.videos] == ["completed"] * 4


async def test_no_video_is_taken_once_shutdown_begins(workers: Workers) -> None:
    async with workers.worker("w1") as service:
        service.drain()
        with pytest.raises(ShuttingDownError):
            await service.accept(CORGI)
    assert await workers.store.claim("x", 10) == []


async def test_a_memory_store_warns_when_the_app_runs_in_several_workers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, workers: Workers
) -> None:
    from sora2_async.fastapi import _service

    monkeypatch.setattr(_service, "_several_workers", lambda: True)
    with caplog.at_level(logging.WARNING, logger="sora2_async"):
        async with workers.worker("w1"):
            pass
    assert "several workers" in caplog.text
    assert "shared store" in caplog.text


def test_the_example_declares_its_answers_in_openapi() -> None:
    from tests.fastapi_helpers import load_example

    schema = load_example().app.openapi()
    events = schema["paths"]["/videos/{video_id}/events"]["get"]["responses"]
    assert "text/event-stream" in events["200"]["content"]
    assert "application/json" not in events["200"]["content"]
    assert "404" in events
    post = schema["paths"]["/videos"]["post"]
    assert {"202", "409", "422", "503"} <= set(post["responses"])
    assert post["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    headers = [p["name"] for p in post["parameters"] if p["in"] == "header"]
    assert headers == ["Idempotency-Key"]
    assert {"404", "503"} <= set(schema["paths"]["/videos/{video_id}"]["get"]["responses"])
    assert {"202", "409"} <= set(schema["paths"]["/batches"]["post"]["responses"])


class FailsOnce(Muted):
    """A store that fails the first write of ``state`` (the store away for a moment)."""

    def __init__(self, store: MemoryVideoStore, state: str) -> None:
        super().__init__(store)
        self.state, self.failed = state, 0

    async def update(self, video_id: str, owner: str, changes: Any) -> Any:
        if changes.get("state") == self.state and not self.failed:
            self.failed += 1
            raise VideoStoreError("the store is away for a moment")
        return await self._store.update(video_id, owner, changes)


async def test_a_store_failure_before_the_send_leaves_the_video_to_be_sent_later(
    workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FailsOnce(workers.store, "submitting")
    async with workers.worker("w1", flaky) as service:
        view = await service.accept(CORGI)
        assert view.id is not None
        (done,) = await workers.until_done(service, [view.id])
    assert flaky.failed == 1
    assert done.state == "completed"  # sent once the store answered again, not "uncertain"
    assert workers.sim.stats().requests_by_endpoint["generate"] == 1
    assert "may be paid" not in caplog.text
    assert "may exist" not in caplog.text


async def test_a_long_api_outage_pauses_a_video_and_it_completes_afterwards() -> None:
    sim = Simulator(seed=4)
    back_at: list[float] = []

    def outage(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/check-status") and anyio.current_time() < back_at[0]:
            return httpx.Response(503, text="<html>upstream down</html>")
        return None

    workers = Workers(sim, MemoryVideoStore(), 100)
    async with (
        Sora2Client("accept-key", transport=RuleTransport(sim, outage)) as client,
        Sora2Service(client, store=workers.store, owner="w1") as service,
    ):
        back_at.append(anyio.current_time() + 2 * 3600)  # two hours of 503s
        view = await service.accept(CORGI)
        assert view.id is not None
        await anyio.sleep(3600)
        paused = await service.video(view.id)
        assert paused is not None
        assert paused.state == "processing"  # not given up: the task goes on on the server
        assert paused.task_id is not None
        (done,) = await workers.until_done(service, [view.id])
    assert done.state == "completed"
    assert sim.stats().tasks_created == 1


async def test_an_answer_that_comes_after_a_takeover_still_counts(workers: Workers) -> None:
    """A sender stalls past its lease with its generate out; another worker takes the video
    over and, a lease later, gives it up as uncertain; then the sender's answer comes: the
    task id wins, and the video is followed to its end."""
    async with Sora2Client("accept-key", transport=workers.sim.transport()) as sender:
        task = await sender.generate(CORGI)  # the generate the stalled sender had sent
    await workers.store.create([VideoRecord("v1", CORGI, owner="stalled")])
    await workers.store.update("v1", "stalled", {"state": "submitting"})
    async with workers.worker("heir") as heir:
        await anyio.sleep(90)  # the lease lapsed, the heir claimed it and waited one more
        given_up = await heir.video("v1")
        assert given_up is not None
        assert (given_up.state, given_up.error_code) == ("error", UNCERTAIN)
        changes = {"state": "processing", "task_id": task.task_id}
        assert await workers.store.update("v1", "stalled", changes) is not None
        (done,) = await workers.until_done(heir, ["v1"])  # the stalled one died: taken over
    assert done.state == "completed"
    assert done.task_id == task.task_id
    assert workers.sim.stats().tasks_created == 1


async def test_an_idempotency_key_is_forgotten_with_its_video() -> None:
    sim = Simulator(seed=6)
    workers = Workers(sim, MemoryVideoStore(remember=2), 100)
    async with workers.worker("w1") as service:
        first = await service.accept(CORGI, idempotency_key="old")
        assert first.id is not None
        await workers.until_done(service, [first.id])  # it ended first: the oldest
        for i in range(3):  # more than it remembers: the oldest ended one is forgotten
            await service.accept(VideoRequest(f"v{i}"))
        assert await service.video(first.id) is None
        again = await service.accept(CORGI, idempotency_key="old")
    assert again.id != first.id  # a new video, not a crash


async def test_the_lifespan_makes_a_store_from_a_class(workers: Workers) -> None:
    from fastapi import FastAPI

    from sora2_async.fastapi import sora2_lifespan

    def make_client() -> Sora2Client:
        return Sora2Client("accept-key", transport=workers.sim.transport())

    app = FastAPI(lifespan=sora2_lifespan(make_client, store=MemoryVideoStore))
    async with app.router.lifespan_context(app) as state:
        service = state["sora2"]
        assert isinstance(service.store, MemoryVideoStore)
        assert (await service.accept(CORGI)).state == "queued"
