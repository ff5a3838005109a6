"""The video store contract: memory, SQLite and Redis keep a service's videos alike.

Each test runs on each store kind (the Redis one on a real ``redis-server``) and on asyncio
and trio, with leases on a clock the test moves by hand (``tests/video_store_helpers.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from sora2_async import VideoRequest
from sora2_async._video_records import digest_of
from sora2_async.fastapi import (
    UNCERTAIN,
    BatchRecord,
    IdempotencyConflictError,
    SQLiteVideoStore,
    VideoRecord,
    VideoStore,
    VideoStoreError,
)
from tests.video_store_helpers import STORE_KINDS, Stores, stores_of

pytestmark = pytest.mark.anyio

HERON = VideoRequest(
    "a heron — über the fjord, 夜",
    model_tier="sora2-pro-standard",
    aspect_ratio="landscape",
    duration=15,
    image_urls=("https://example.com/a.png",),
)
CORGI = VideoRequest("a corgi surfing")


@pytest.fixture(params=STORE_KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with stores_of(request.param, request, tmp_path) as made:
        yield made


def queued(video_id: str, request: VideoRequest = CORGI, owner: str | None = "a") -> VideoRecord:
    return VideoRecord(video_id, request, owner=owner)


async def test_a_created_video_is_queued_under_its_owners_lease(stores: Stores) -> None:
    store = stores.make()
    assert isinstance(store, VideoStore)
    created = await store.create([queued("v1", HERON)])
    assert (created.id, created.created) == ("v1", True)
    record = await stores.other(store).video("v1")
    assert record is not None
    assert (record.state, record.owner, record.version) == ("queued", "a", 0)
    assert record.request == HERON
    assert record.lease_until == stores.clock.now + 30.0
    assert record.created_at > 0
    assert await store.video("nope") is None
    assert await store.batch("nope") is None


async def test_an_idempotency_key_names_one_video_and_refuses_another_body(
    stores: Stores,
) -> None:
    store = stores.make()
    first = await store.create([queued("v1")], idempotency_key="k", digest=digest_of([CORGI]))
    again = await stores.other(store).create(
        [queued("v2")], idempotency_key="k", digest=digest_of([CORGI])
    )
    assert first.created
    assert not again.created
    assert again.id == "v1"
    assert await store.video("v2") is None  # nothing new was written
    with pytest.raises(IdempotencyConflictError) as caught:
        await store.create([queued("v3", HERON)], idempotency_key="k", digest=digest_of([HERON]))
    assert caught.value.existing_id == "v1"
    assert isinstance(caught.value, ValueError)
    assert await store.video("v3") is None


async def test_only_the_holder_changes_a_record_and_an_end_ends_the_lease(stores: Stores) -> None:
    store = stores.make()
    await store.create([queued("v1")])
    assert await store.update("v1", "b", {"state": "submitting"}) is None
    submitting = await store.update("v1", "a", {"state": "submitting"})
    assert submitting is not None
    assert (submitting.state, submitting.version) == ("submitting", 1)
    ended = await store.update(
        "v1",
        "a",
        {
            "state": "completed",
            "task_id": "t1",
            "generation_time": 123.456789012345,
            "credits_used": 4,
            "video_url": "https://v.example/t1.mp4",
        },
    )
    assert ended is not None
    assert (ended.state, ended.owner, ended.version) == ("completed", None, 2)
    seen = await stores.other(store).video("v1")
    assert seen == ended
    assert seen.generation_time == 123.456789012345
    assert seen.credits_used == 4
    assert await store.update("v1", "a", {"progress": "late"}) is None  # ended: final
    stores.clock.advance(3600)
    assert await store.claim("b", 10) == []


async def test_a_lapsed_lease_is_claimed_once_and_its_old_holder_loses_it(stores: Stores) -> None:
    store = stores.make()
    other = stores.other(store)
    await store.create([queued("v1"), queued("v2")])
    assert await other.claim("b", 10) == []  # the leases are live
    stores.clock.advance(29)
    assert await store.renew("a", ["v1"]) == {"v1"}  # v1 renewed, v2 not
    stores.clock.advance(2)
    claimed = await other.claim("b", 10)
    assert [(r.id, r.owner) for r in claimed] == [("v2", "b")]
    assert await store.claim("c", 10) == []
    assert await store.renew("a", ["v1", "v2"]) == {"v1"}
    assert await store.update("v2", "a", {"state": "submitting"}) is None
    assert await other.update("v2", "b", {"state": "submitting"}) is not None


async def test_a_task_id_is_never_lost_to_a_takeover(stores: Stores) -> None:
    store = stores.make()
    await store.create([queued("v1")])
    await store.update("v1", "a", {"state": "submitting"})
    stores.clock.advance(31)  # the sender stalls past its lease; another worker claims it
    assert [r.id for r in await stores.other(store).claim("b", 10)] == ["v1"]
    record = await store.update("v1", "a", {"state": "processing", "task_id": "t1"})
    assert record is not None
    assert (record.state, record.task_id, record.owner) == ("processing", "t1", "a")
    # Once the task is known, only its holder changes it.
    assert await store.update("v1", "b", {"state": "error", "task_id": "t2"}) is None


async def test_a_release_frees_a_record_at_once(stores: Stores) -> None:
    store = stores.make()
    await store.create([queued("v1"), queued("v2")])
    await store.release("b", ["v1"])  # not b's: nothing happens
    assert await store.claim("b", 10) == []
    await store.release("a", ["v1", "v2"])
    claimed = await stores.other(store).claim("b", 1)
    assert len(claimed) == 1
    assert len(await store.claim("c", 10)) == 1


async def test_a_batch_keeps_its_videos_in_order(stores: Stores) -> None:
    store = stores.make()
    ids = [f"v{i}" for i in range(5)]
    records = [VideoRecord(i, CORGI, owner="a", batch_id="b1") for i in ids]
    requests = [CORGI] * 5
    created = await store.create(
        records,
        batch=BatchRecord("b1", tuple(ids)),
        idempotency_key="bk",
        digest=digest_of(requests),
    )
    assert created.id == "b1"
    found = await stores.other(store).batch("b1")
    assert found is not None
    batch, videos = found
    assert batch.video_ids == tuple(ids)
    assert [v.id for v in videos] == ids
    assert all(v.batch_id == "b1" for v in videos)
    again = await store.create(
        [VideoRecord("x", CORGI)],
        batch=BatchRecord("b2", ("x",)),
        idempotency_key="bk",
        digest=digest_of(requests),
    )
    assert (again.id, again.created) == ("b1", False)


async def test_two_workers_claiming_at_once_never_share_a_record(stores: Stores) -> None:
    store = stores.make()
    await store.create([queued(f"v{i}") for i in range(30)])
    stores.clock.advance(31)
    got: dict[str, list[str]] = {"b": [], "c": []}

    async def claim(owner: str, handle: VideoStore) -> None:
        for _ in range(6):
            got[owner] += [r.id for r in await handle.claim(owner, 3)]

    async with anyio.create_task_group() as group:
        group.start_soon(claim, "b", store)
        group.start_soon(claim, "c", stores.other(store))
    assert sorted(got["b"] + got["c"]) == sorted(f"v{i}" for i in range(30))
    assert not set(got["b"]) & set(got["c"])


# Real time: a store's reads run in threads (SQLite) or over a socket (Redis), and a virtual
# clock jumps while it waits on them.
@pytest.mark.parametrize("anyio_backend", ["asyncio-real", "trio-real"], indirect=True)
async def test_wait_change_returns_on_a_change_and_times_out_otherwise(stores: Stores) -> None:
    store = stores.make()
    await store.create([queued("v1")])
    with anyio.fail_after(5):
        await store.wait_change("v1", 0, 0.2)  # nothing changes: returns after 0.2 s
    woke: list[float] = []

    async def watch() -> None:
        await store.wait_change("v1", 0, 60)
        woke.append(anyio.current_time())

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        await anyio.sleep(0.3)
        start = anyio.current_time()
        await stores.other(store).update("v1", "a", {"progress": "rendering"})
    assert woke
    assert woke[0] - start < 1


async def test_ended_videos_are_forgotten_after_the_retention(stores: Stores) -> None:
    if stores.kind == "memory":
        pytest.skip("the memory store forgets by count (remember=), not by age")
    store = stores.make(retention=3600.0)
    await store.create([queued("v1")], idempotency_key="k", digest="d")
    await store.update("v1", "a", {"state": "failed", "task_id": "t1", "error": "no"})
    stores.clock.advance(1800)
    await store.claim("b", 10)
    assert await store.video("v1") is not None
    stores.clock.advance(1801)
    if stores.kind == "sqlite":
        pytest.skip("the SQLite store ages by the wall clock, which the test does not move")
    await store.claim("b", 10)
    assert await store.video("v1") is None


async def test_the_memory_store_forgets_the_oldest_ended_videos_beyond_remember() -> None:
    from sora2_async.fastapi import MemoryVideoStore

    store = MemoryVideoStore(remember=3)
    await store.create([queued(f"v{i}") for i in range(5)])
    for i in range(4):
        await store.update(f"v{i}", "a", {"state": "completed", "task_id": f"t{i}"})
    assert [await store.video(f"v{i}") is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,  # the two oldest ended ones; never an unfinished one
    ]


async def test_a_file_that_is_no_video_store_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE mine (x)")
    before = path.read_bytes()
    with pytest.raises(VideoStoreError, match="not a sora2-async video store"):
        async with SQLiteVideoStore(path):
            pass
    assert path.read_bytes() == before


@pytest.mark.parametrize("anyio_backend", ["asyncio-real", "trio-real"], indirect=True)
async def test_redis_wakes_event_streams_on_another_hosts_change_at_once(
    request: pytest.FixtureRequest,
) -> None:
    """An entered Redis store listens to the script's channel: with reads every minute, a
    waiter still wakes within moments of a write made through another connection."""
    from sora2_async.redis import RedisVideoStore

    url = request.getfixturevalue("redis_server").url
    namespace = uuid.uuid4().hex
    async with (
        RedisVideoStore.from_url(url, namespace=namespace, poll_interval=60) as here,
        RedisVideoStore.from_url(url, namespace=namespace, poll_interval=60) as there,
    ):
        await here.create([queued("v1")])
        with anyio.fail_after(10):
            while not here._listening:  # noqa: ASYNC110 (its subscription is being made)
                await anyio.sleep(0.01)
        woke: list[float] = []

        async def watch() -> None:
            await here.wait_change("v1", 0, 30)
            woke.append(anyio.current_time())

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await anyio.sleep(0.2)
            written = anyio.current_time()
            await there.update("v1", "a", {"progress": "rendering"})
        assert woke
        assert woke[0] - written < 1.0  # not the minute a read would have waited


async def test_a_late_task_id_revives_an_uncertain_end(stores: Stores) -> None:
    """A sender whose lease lapsed with its generate out gets its answer after another worker
    gave the video up as uncertain: the task id wins, and the video runs again."""
    store = stores.make()
    await store.create([queued("v1")])
    await store.update("v1", "a", {"state": "submitting"})
    stores.clock.advance(31)
    await stores.other(store).claim("b", 10)
    ended = await stores.other(store).update(
        "v1", "b", {"state": "error", "error": "lost", "error_code": UNCERTAIN}
    )
    assert ended is not None
    assert ended.done
    revived = await store.update("v1", "a", {"state": "processing", "task_id": "t1"})
    assert revived is not None
    assert (revived.state, revived.task_id, revived.owner) == ("processing", "t1", "a")
    assert (revived.error, revived.error_code) == (None, None)
    stores.clock.advance(31)  # and it is followed again if its sender dies now
    assert [r.id for r in await store.claim("c", 10)] == ["v1"]
    # Any other ended video stays ended, task id or not.
    await store.create([queued("v2")])
    await store.update("v2", "a", {"state": "error", "error": "refused", "error_code": "X"})
    assert await store.update("v2", "a", {"state": "processing", "task_id": "t2"}) is None


async def test_claims_take_the_oldest_first(stores: Stores) -> None:
    if stores.kind == "redis":
        pytest.skip("Redis claims the soonest lapsed first (documented)")
    store = stores.make()
    await store.create([queued(f"v{i}") for i in range(4)])
    await store.update("v0", "a", {"progress": "rendering"})  # a write moves no one's turn
    stores.clock.advance(31)
    assert [r.id for r in await store.claim("b", 2)] == ["v0", "v1"]
