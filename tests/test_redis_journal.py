"""``RedisJournal``: its keys, its follower leases, and batches that adopt a dead follower's tasks.

On a real ``redis-server``, on asyncio and trio, in virtual time: the journals read the
test's clock and hold it while Redis answers (``tests/journal_helpers.py``), so a lease
lapses exactly ``follower_ttl`` virtual seconds after it was last renewed. A dead follower
is a journal that recorded tasks and then said nothing more (the real SIGKILL is in
``test_redis_journal_processes.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from sora2_async import (
    BatchResult,
    BudgetStoreError,
    JournalState,
    Sora2Client,
    TaskState,
    TaskStatus,
    VideoRequest,
)
from sora2_async._fingerprint import key_fingerprint
from sora2_async._journal import JournalError, request_key
from sora2_async.redis import RedisJournal
from sora2_async.testing import Simulator
from tests.journal_helpers import Journals, journals_of

pytestmark = pytest.mark.anyio

KEY = "redis-journal-key-1"
TTL = 30.0


@pytest.fixture
async def journals(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journals]:
    async with journals_of("redis", request, tmp_path) as made:
        yield made


class Counting(httpx.AsyncBaseTransport):
    """The simulator's transport, counting what one client sends."""

    def __init__(self, sim: Simulator) -> None:
        self._inner = sim.transport()
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return await self._inner.handle_async_request(request)


def client_for(sim: Simulator, transport: httpx.AsyncBaseTransport | None = None) -> Sora2Client:
    return Sora2Client(KEY, transport=transport or sim.transport(), max_retries=0)


async def submitted_by_a_dead_follower(
    sim: Simulator, journal: Any, items: list[VideoRequest]
) -> None:
    """What a follower killed right after its generates leaves: tasks recorded, leases taken."""
    async with client_for(sim) as client:
        for request in items:
            task = await client.generate(request)
            await journal.record_task(request_key(request), request, task.task_id)


# -- keys and arguments -------------------------------------------------------------------------


async def test_keys_are_hash_tagged_by_fingerprint_and_name_never_the_key(
    redis_server: Any,
) -> None:
    secret = "sk-very-SECRET-key"
    async with RedisJournal.from_url(
        redis_server.url, name="out-folder", api_key=secret, base_url="https://nanophoto.ai"
    ) as journal:
        await journal.record_task("k", VideoRequest("keys"), "t-keys")
        keys = {k.decode() for k in await journal._redis.keys("*out-folder*")}
    tag = f"{{sora2:{key_fingerprint(secret, 'https://nanophoto.ai')}:journal:out-folder}}"
    assert keys
    assert all(k.startswith(tag + ":") for k in keys)
    assert not any(secret in k for k in keys)
    assert secret not in repr(journal)


def test_bad_arguments_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NANOPHOTO_API_KEY", raising=False)
    with pytest.raises(BudgetStoreError, match="api_key"):
        RedisJournal.from_url("redis://127.0.0.1:1/0", name="x")
    for name in ("", "a{b}", "}"):
        with pytest.raises(ValueError, match="name"):
            RedisJournal.from_url("redis://127.0.0.1:1/0", name=name, namespace="n")
    for ttl in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="follower_ttl"):
            RedisJournal.from_url(
                "redis://127.0.0.1:1/0", name="x", namespace="n", follower_ttl=ttl
            )


# -- leases -------------------------------------------------------------------------------------


async def test_a_lease_is_held_while_renewed_and_adopted_once_it_lapses(
    journals: Journals,
) -> None:
    a = journals.make(follower_ttl=TTL)
    b = journals.other(a)
    request = VideoRequest("leased")
    await a.record_task("k", request, "t-1")  # a takes the lease as it records the task
    assert await b.claim("k") is False
    assert await b.adoptable() == []
    assert await b.held_elsewhere() == 1
    assert await a.held_elsewhere() == 0  # its own
    await anyio.sleep(TTL - 1)
    assert await a.renew("k") is True
    await anyio.sleep(TTL - 1)  # 2 * TTL - 2 after it was taken: renewed, still live
    assert await b.adoptable() == []
    await anyio.sleep(1.5)  # TTL + 0.5 after the renewal: lapsed
    (entry,) = await b.adoptable()
    assert (entry.key, entry.state, entry.task_id, entry.request) == (
        "k",
        JournalState.SUBMITTED,
        "t-1",
        request,
    )
    assert await b.adoptable() == []  # b holds it now
    assert await a.renew("k") is False  # a woke up too late: b follows it
    assert await a.claim("k") is False
    assert await a.held_elsewhere() == 1
    assert await b.task_key("t-1") == "k"
    assert await b.task_key("t-none") is None


async def test_a_released_lease_is_adoptable_at_once_and_an_ended_task_never(
    journals: Journals,
) -> None:
    a = journals.make(follower_ttl=TTL)
    b = journals.other(a)
    for key in ("x", "y", "z"):
        await a.record_task(key, VideoRequest(key), f"t-{key}")
    await b.release("x")  # not b's: nothing happens
    assert await b.adoptable() == []
    await a.release("x")
    assert [e.key for e in await b.adoptable()] == ["x"]
    await a.record_status("y", TaskStatus("t-y", TaskState.COMPLETED, video_url="u"))
    await a.record_rejected("z", VideoRequest("z"), "gone")
    await anyio.sleep(TTL + 1)
    assert await b.claim("y") is False  # ended: nothing to follow
    assert await b.claim("nothing") is False
    assert [e.key for e in await b.adoptable()] == ["x"]  # its own lapsed lease, taken again
    assert await a.held_elsewhere() == 1


async def test_two_adopters_never_take_the_same_task(journals: Journals) -> None:
    dead = journals.make(follower_ttl=TTL)
    for i in range(30):
        await dead.record_task(f"k{i:02}", VideoRequest(f"adopted {i}"), f"t-{i}")
    await anyio.sleep(TTL + 1)
    adopters = [journals.other(dead) for _ in range(5)]
    taken: dict[int, list[str]] = {i: [] for i in range(len(adopters))}

    async def adopt(i: int) -> None:
        while entries := await adopters[i].adoptable(limit=2):
            taken[i] += [e.key for e in entries]
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for i in range(len(adopters)):
            tg.start_soon(adopt, i)
    everything = [key for keys in taken.values() for key in keys]
    assert sorted(everything) == [f"k{i:02}" for i in range(30)]  # each exactly once
    assert all(keys == sorted(keys) for keys in taken.values())  # oldest first
    assert sum(1 for keys in taken.values() if keys) >= 2


# -- batches ------------------------------------------------------------------------------------


async def test_as_completed_adopts_a_dead_followers_tasks_once_their_leases_lapse(
    journals: Journals,
) -> None:
    sim = Simulator(seed=11)
    items = [VideoRequest(f"orphan {i}") for i in range(6)]
    dead = journals.make(follower_ttl=TTL)
    await submitted_by_a_dead_follower(sim, dead, items)
    t0 = anyio.current_time()
    adopter = journals.other(dead)
    async with client_for(sim) as client, client.as_completed(adopter.adopt()) as results:
        got: list[tuple[float, BatchResult]] = []
        async for result in results:
            got.append((anyio.current_time() - t0, result))
    assert sorted(r.request.prompt for _, r in got if r.request) == sorted(i.prompt for i in items)
    assert all(r.ok for _, r in got)
    assert min(t for t, _ in got) >= TTL  # not before the dead follower's leases lapsed
    assert sim.stats().tasks_created == 6
    assert sim.stats().duplicate_prompts == 0
    entries = await dead.entries()
    assert {e.state for e in entries} == {JournalState.COMPLETED}
    assert await adopter.adoptable() == []
    assert await dead.held_elsewhere() == 0  # every lease dropped as its task ended


async def test_a_batch_run_again_elsewhere_waits_for_the_live_follower(
    journals: Journals,
) -> None:
    """Two processes run one batch: the second follows nothing the first one follows, and
    hands back what the first recorded."""
    sim = Simulator(seed=12)
    items = [VideoRequest(f"shared {i}") for i in range(5)]
    first_journal = journals.make(follower_ttl=TTL)
    second_journal = journals.other(first_journal)
    second_wire = Counting(sim)
    outcomes: dict[str, list[BatchResult]] = {}

    async def run(name: str, journal: Any, transport: httpx.AsyncBaseTransport) -> None:
        client = client_for(sim, transport)
        async with client, client.batch(items, journal=journal) as results:
            outcomes[name] = [r async for r in results]

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "first", first_journal, sim.transport())
        await anyio.sleep(1)  # every generate of the first one has been answered
        assert sim.stats().tasks_created == 5
        tg.start_soon(run, "second", second_journal, second_wire)
    assert second_wire.sent == 0  # no generate, no poll: the first one followed them all
    assert sim.stats().tasks_created == 5

    def seen(results: list[BatchResult]) -> set[tuple[str | None, str | None]]:
        return {
            (r.task.task_id if r.task else None, r.video.url if r.video else None) for r in results
        }

    assert seen(outcomes["first"]) == seen(outcomes["second"])
    assert all(r.ok for r in outcomes["second"])


async def test_a_follower_renews_its_leases_for_as_long_as_its_videos_take(
    journals: Journals,
) -> None:
    sim = Simulator(seed=13)
    items = [VideoRequest(f"long {i}", model_tier="sora2-pro-high", duration=15) for i in range(3)]
    journal = journals.make(follower_ttl=10.0)
    watcher = journals.other(journal)
    stolen: list[str] = []
    done = anyio.Event()

    async def watch() -> None:
        while not done.is_set():
            stolen.extend(e.key for e in await watcher.adoptable())
            await anyio.sleep(3)

    t0 = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        client = client_for(sim)
        async with client, client.batch(items, journal=journal) as results:
            got = [r async for r in results]
        done.set()
    assert anyio.current_time() - t0 > 60  # minutes of following, many lease lifetimes
    assert stolen == []
    assert all(r.ok for r in got)
    assert {e.state for e in await journal.entries()} == {JournalState.COMPLETED}


async def test_a_batch_left_early_releases_its_leases_for_others_to_adopt(
    journals: Journals,
) -> None:
    sim = Simulator(seed=14)
    items = [VideoRequest(f"left {i}") for i in range(4)]
    journal = journals.make(follower_ttl=TTL)
    async with client_for(sim) as client, client.batch(items, journal=journal) as results:
        async for _ in results:
            break  # the rest are running: their leases go as the block is left
    running = [e for e in await journal.entries() if e.state is JournalState.SUBMITTED]
    assert running
    probe = journals.other(journal)
    # Released, not waiting for a lapse: adoptable at once (and given back for the test).
    assert [e.key for e in await probe.adoptable()] == [e.key for e in running]
    for entry in running:
        await probe.release(entry.key)
    other = journals.other(journal)
    async with client_for(sim) as client, client.as_completed(other.adopt()) as results:
        adopted = [r async for r in results]
    assert sorted(r.task.task_id for r in adopted if r.task) == sorted(
        e.task_id for e in running if e.task_id
    )
    assert all(r.ok for r in adopted)
    assert sim.stats().duplicate_prompts == 0
    ended = {e.state for e in await journal.entries() if e.task_id is not None}
    assert ended == {JournalState.COMPLETED}


async def test_as_completed_with_the_journal_follows_known_tasks_under_their_leases(
    journals: Journals,
) -> None:
    """Task ids from elsewhere: those the journal knows wait for their lease (here, a dead
    follower's, lapsing) and are recorded; one it does not know is just followed."""
    sim = Simulator(seed=15)
    items = [VideoRequest(f"by id {i}") for i in range(3)]
    dead = journals.make(follower_ttl=TTL)
    await submitted_by_a_dead_follower(sim, dead, items)
    ids = [e.task_id for e in await dead.entries() if e.task_id]
    t0 = anyio.current_time()
    async with client_for(sim) as client:
        stranger = (await client.generate(VideoRequest("not journaled"))).task_id
        follower = journals.other(dead)
        async with client.as_completed([*ids, stranger], journal=follower) as results:
            got = {
                r.task.task_id: anyio.current_time() - t0 async for r in results if r.ok and r.task
            }
    assert set(got) == {*ids, stranger}
    assert all(got[i] >= TTL for i in ids)
    assert {e.state for e in await dead.entries()} == {JournalState.COMPLETED}
    assert sim.stats().tasks_created == 4


async def test_a_row_it_cannot_read_and_an_unreachable_server_are_journal_errors(
    journals: Journals,
) -> None:
    journal = journals.make()
    await journal.record_intent("k", VideoRequest("fine"))
    await journals.redis.hset(journal._keys[0], {"bad": b"{not json"})
    with pytest.raises(JournalError, match="cannot read"):
        await journal.entries()
    with pytest.raises(JournalError, match="cannot read"):
        await journal.lookup("bad")
    from tests.helpers import free_port

    gone = RedisJournal.from_url(
        f"redis://127.0.0.1:{free_port()}/0", name="x", namespace="n", unreachable_timeout=1.0
    )
    async with gone:
        with pytest.raises(JournalError, match="unreachable"):
            await gone.record_intent("k", VideoRequest("nowhere"))
