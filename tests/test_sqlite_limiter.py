"""The SQLite store: the file, several owners sharing it, and what outlives an owner.

The rule every store shares is tested in ``test_limiter_contract``. Here, in virtual time
unless said otherwise: files that are not a budget store, two limiters on one file (two
owners, as two processes would be), owners that stop, clocks that step back, restarts, and
the worker-thread path in real time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from sora2_async import BudgetStoreError
from sora2_async._budget import RateLimit
from sora2_async._sqlite_limiter import SQLiteLimiter
from tests.conftest import REAL_TIME_BACKENDS
from tests.limiter_helpers import (
    EPS,
    GENERATE,
    POLL,
    Run,
    max_occupancy,
    near,
    real_time_limit,
    refused_after,
)

RECHECK = 0.25  # how soon one owner sees another's changes (virtual seconds)


class Owners:
    """Limiters on one file (each an owner, as a process would be); all closed at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[SQLiteLimiter] = []

    def __call__(
        self,
        limit: int = 3,
        per: float = 100.0,
        *,
        path: Path | None = None,
        clock: Callable[[], float] = anyio.current_time,
        **kwargs: Any,
    ) -> SQLiteLimiter:
        kwargs.setdefault("recheck", RECHECK)
        lim = SQLiteLimiter(
            path or self.path,
            rate_limit=RateLimit(limit, per=per),
            margin=kwargs.pop("margin", 0.0),
            clock=clock,
            in_thread=False,
            **kwargs,
        )
        self.opened.append(lim)
        return lim


@pytest.fixture
async def owners(tmp_path: Path) -> AsyncIterator[Owners]:
    made = Owners(tmp_path / "budget.sqlite")
    try:
        yield made
    finally:
        with anyio.CancelScope(shield=True):
            for lim in made.opened:
                await lim.aclose()


# -- the file ------------------------------------------------------------------------------


def another_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('keep me')")
    db.commit()
    db.close()


def garbage(path: Path) -> None:
    path.write_bytes(b"not a database at all\x00\xff" * 100)


def lookalike(path: Path) -> None:
    """A SQLite file with the tables of a budget store but not its marks."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE entries (id TEXT PRIMARY KEY)")
    db.commit()
    db.close()


@pytest.mark.parametrize("make", [garbage, another_database, lookalike])
def test_a_file_that_is_not_a_budget_store_is_refused_and_left_unchanged(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "something.db"
    make(path)
    before = path.read_bytes()
    files_before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BudgetStoreError, match="not a"):
        SQLiteLimiter(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before  # no WAL left either


def test_a_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "budgets"
    folder.mkdir()
    with pytest.raises(BudgetStoreError, match="folder"):
        SQLiteLimiter(folder)
    assert list(folder.iterdir()) == []


@pytest.mark.anyio
async def test_an_empty_file_is_made_a_budget_store(tmp_path: Path, owners: Owners) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    lim = owners(path=path)
    assert lim.path == path
    state = await lim.snapshot()
    assert (state.used, state.reserved, state.limit) == (0, 0, 3)
    assert "empty.sqlite" in repr(lim)
    await Run(lim).request("poll")
    assert (await owners(path=path).snapshot()).used == 1  # ... and opens again as one


@pytest.mark.anyio
async def test_a_missing_file_is_made_with_its_folders(tmp_path: Path, owners: Owners) -> None:
    path = tmp_path / "a" / "b" / "budget.sqlite"
    await Run(owners(path=path)).request("poll")
    assert path.is_file()


def test_arguments_that_cannot_work_are_refused(tmp_path: Path) -> None:
    for kwargs in ({"lease_ttl": 0.0}, {"lease_ttl": float("inf")}, {"flight_ttl": -1.0}):
        with pytest.raises(ValueError, match="must be positive and finite"):
            SQLiteLimiter(tmp_path / "budget.sqlite", **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_closed_limiter_says_so(owners: Owners) -> None:
    lim = owners()
    await lim.aclose()
    with pytest.raises(BudgetStoreError, match="closed"):
        await lim.snapshot()


@pytest.mark.anyio
async def test_reopening_the_file_starts_from_what_it_holds(owners: Owners) -> None:
    first = owners(limit=10, per=100.0)
    run = Run(first)
    for i in range(3):
        await run.request(i, at=float(i))
    await run.request("refused", at=3.0, refused=True, retry_after=20.0)
    await run.promises(2)
    await first.aclose()  # a restart within the window ...
    await run.until(10.0)
    again = owners(limit=10, per=100.0)
    state = await again.snapshot()
    # ... finds the requests, the 429 and its wait; the closed owner's promises are gone.
    assert (state.used, state.reserved, state.limit, state.rate_limited) == (4, 0, 9, 1)
    assert state.blocked_for == near(13.0)
    assert again.last_state == state
    run.lim = again
    assert await run.request("poll") == near(23.0)


def execute(path: Path, statement: str, *args: object) -> None:
    db = sqlite3.connect(path)
    db.execute(statement, args)
    db.commit()
    db.close()


@pytest.mark.anyio
async def test_a_file_from_before_the_ceiling_kept_what_it_learnt_opens_and_learns(
    owners: Owners,
) -> None:
    """Files made by 0.1's first releases have no ``ceiling_learnt`` table: opening one adds
    it (the schema's ``IF NOT EXISTS``), what was in the file stays, and a 429 it holds
    climbs back as that version's did (nothing was learnt of it); the next is learnt."""
    first = owners(limit=10, per=100.0)
    run = Run(first)
    await refused_after(run, 0.0, answered=4)  # at 4: down to 2
    await first.aclose()
    execute(owners.path, "DROP TABLE ceiling_learnt")  # as such a file is
    run.lim = again = owners(limit=10, per=100.0)
    assert (await again.snapshot()).used == 5
    for at, limit in [(105.0, 4), (205.0, 8)]:  # no cap below where it came
        await run.until(at)
        assert (await again.snapshot()).limit == limit, at
    await refused_after(run, 205.0, answered=4)  # at 209, with 5 of ours: learnt this time
    for at, limit in [(310.0, 4), (410.0, 5)]:  # stops below 5, probes there a window on
        await run.until(at)
        assert (await again.snapshot()).limit == limit, at


@pytest.mark.anyio
async def test_a_429_written_by_a_version_that_keeps_no_learning_is_learnt_afresh(
    owners: Owners,
) -> None:
    """An older process on the same file lowers the limit but leaves ``ceiling_learnt`` as
    it was: what is there belongs to an earlier 429 and is not paired with this one."""
    lim = owners(limit=10, per=100.0)
    run = Run(lim)
    await refused_after(run, 0.0, answered=4)  # learnt: the climb would stop at 4
    await run.until(50.0)
    # The older version's own 429 at 50: only the lowered limit and when.
    execute(
        owners.path,
        "UPDATE ceiling SET lowered_to = 2, lowered_at = ?",
        anyio.current_time(),
    )
    for at, limit in [(151.0, 4), (251.0, 8)]:  # climbing as that version does, past 5
        await run.until(at)
        assert (await lim.snapshot()).limit == limit, at


# -- two owners of one file ----------------------------------------------------------------


@pytest.mark.anyio
async def test_two_owners_share_one_window(owners: Owners) -> None:
    a, b = owners(limit=5, per=20.0), owners(limit=5, per=20.0)
    window = 20.0
    spans: list[tuple[float, float]] = []

    async def one(lim: SQLiteLimiter, i: int) -> None:
        await anyio.sleep((i * 7919) % 100 / 10)  # arrivals over 10 s
        async with lim.permit(POLL if i % 3 else GENERATE):
            start = anyio.current_time()
            await anyio.sleep((i * 31) % 20 / 4)  # answers take 0 to 4.75 s
        spans.append((start, anyio.current_time()))

    with real_time_limit(30), anyio.fail_after(40 * window):
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, a if i % 2 else b, i)
    assert len(spans) == 40
    assert max_occupancy(spans, window) == 5  # across both owners, and used in full
    assert (await a.snapshot()).used == (await b.snapshot()).used


@pytest.mark.anyio
async def test_one_owners_polls_go_before_the_others_submissions(owners: Owners) -> None:
    # Both with the same patience: each owner judges starvation by its own knob.
    a = owners(limit=1, per=100.0, starve_after=1e9)
    b = owners(limit=1, per=100.0, starve_after=1e9)
    ra, rb = Run(a), Run(b)
    await ra.request("fill")
    async with anyio.create_task_group() as tg:
        rb.start(tg, "generate", GENERATE, at=1.0)
        ra.start(tg, "poll", at=2.0)
        await ra.until(5.0)
        state = await b.snapshot()  # its own waiter, and the other's waiting front
        assert (state.waiting_polls, state.waiting_generates) == (1, 1)
    assert ra.admitted["poll"] == near(100.0)
    assert 200.0 - EPS <= rb.admitted["generate"] <= 200.0 + RECHECK + EPS


@pytest.mark.anyio
async def test_a_429_seen_by_one_owner_stops_the_other(owners: Owners) -> None:
    a, b = owners(limit=10, per=100.0), owners(limit=10, per=100.0)
    ra, rb = Run(a), Run(b)
    await ra.request("refused", refused=True, retry_after=50.0)
    state = await b.snapshot()
    assert (state.rate_limited, state.limit, state.blocked_for) == (1, 9, near(50.0))
    assert await b.try_permit() is None
    assert await rb.request("poll", at=1.0) == near(50.0)


@pytest.mark.anyio
async def test_an_owner_that_stops_renewing_loses_its_leases_the_other_keeps_its_own(
    owners: Owners,
) -> None:
    stops = owners(limit=10, per=100.0, lease_ttl=30.0)
    lives = owners(limit=10, per=100.0, lease_ttl=30.0)
    assert stops.renew_every == near(10.0)
    await Run(stops).promises(2, due_in=500.0)  # its last sign of life, at 0
    run = Run(lives)
    await run.promises(1, due_in=500.0)
    for t in range(5, 30, 5):
        await run.until(float(t))
        await lives.renew()
        assert (await lives.snapshot()).reserved == 3, t
    await run.until(30.0)  # lease_ttl after the other's last transaction
    state = await lives.snapshot()
    assert (state.reserved, state.available) == (1, 9)
    # A submission of the living owner no longer waits for the lapsed promises.
    with anyio.fail_after(1.0):
        await run.request("generate", GENERATE, promise=1.0)
    await lives.release(run.leases["generate"])
    # Within a window of lapsing, an owner that comes back gets its leases back ...
    await run.until(60.0)
    await stops.renew()
    assert (await lives.snapshot()).reserved == 3
    # ... once it has been silent for lease_ttl and a window more, they are gone for good.
    for t in range(70, 240, 10):  # the living one renews every renew_every
        await run.until(float(t))
        await lives.renew()
    await stops.renew()  # at 230: over lease_ttl + a window after its leases lapsed
    assert (await lives.snapshot()).reserved == 1  # the living one's own


@pytest.mark.anyio
async def test_a_dead_owners_request_in_flight_counts_until_flight_ttl_and_a_window(
    owners: Owners,
) -> None:
    dead = owners(limit=1, per=100.0, flight_ttl=50.0)
    alive = owners(limit=1, per=100.0, flight_ttl=50.0)
    taken = await dead.try_permit()  # admitted at 0; its answer never comes
    assert taken is not None
    run = Run(alive)
    await run.until(149.0)
    state = await alive.snapshot()
    assert (state.used, state.available, state.next_free_in) == (1, 0, near(1.0))
    assert await run.request("poll") == near(150.0)


@pytest.mark.anyio
async def test_next_free_in_while_every_slot_is_in_flight_is_when_the_entry_would_lapse(
    owners: Owners,
) -> None:
    lim = owners(limit=1, per=100.0, flight_ttl=50.0)
    async with lim.permit(POLL):
        assert (await lim.snapshot()).next_free_in == near(150.0)


@pytest.mark.anyio
async def test_a_clock_that_stepped_back_pins_the_budget_for_flight_ttl_and_a_window_at_most(
    owners: Owners,
) -> None:
    offset = [1e6]

    def clock() -> float:
        return anyio.current_time() + offset[0]

    lim = owners(limit=1, per=100.0, flight_ttl=50.0, clock=clock)
    run = Run(lim)
    await run.request("in the future", refused=True, retry_after=100.0)  # leaves at 1e6 + 100
    offset[0] = 0.0  # the clock steps back by a million seconds
    await run.until(1.0)
    state = await lim.snapshot()
    assert state.used == 1
    assert state.next_free_in <= 150.0
    assert state.blocked_for <= 100.0
    with real_time_limit(10), anyio.fail_after(1000.0):
        admitted = await run.request("poll")
    assert admitted <= 1.0 + 150.0 + EPS


@pytest.mark.anyio
async def test_closing_one_owner_leaves_the_others_requests_and_promises(owners: Owners) -> None:
    a, b = owners(limit=5, per=100.0), owners(limit=5, per=100.0)
    await Run(a).request("a", GENERATE, promise=10.0)
    await Run(b).request("b", GENERATE, promise=10.0)
    await a.aclose()
    state = await b.snapshot()
    assert (state.used, state.reserved) == (2, 1)


# -- real time, in a worker thread ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", REAL_TIME_BACKENDS, indirect=True)
async def test_in_a_worker_thread_in_real_time(tmp_path: Path) -> None:
    per = 0.3
    lim = SQLiteLimiter(tmp_path / "budget.sqlite", rate_limit=RateLimit(3, per=per), margin=0.0)
    try:
        started = anyio.current_time()
        admitted: list[float] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def poll() -> None:
                    async with lim.permit(POLL):
                        admitted.append(anyio.current_time() - started)

                for _ in range(5):
                    tg.start_soon(poll)
        admitted.sort()
        assert admitted[2] < per  # three at once ...
        assert admitted[3] >= per - 0.05  # ... the next a window after the first answers
        lease = await lim.promise(5.0)
        assert (await lim.snapshot()).reserved == 1
        await lim.release(lease)
        await lim.renew()
        state = await lim.snapshot()
        assert state.reserved == 0
        assert lim.last_state == state
    finally:
        await lim.aclose()
