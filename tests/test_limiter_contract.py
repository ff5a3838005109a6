"""The limiter contract: every store (memory, SQLite, Redis) admits by one rule, on both backends.

Each test runs against each store (the ``store`` fixture) on each backend, in virtual time.
The tests send "requests" through a limiter and look only at what a caller can see: when
each was admitted and answered (``anyio.current_time()``), its permit and lease, and
``await lim.snapshot()``. Nothing inside a store is patched or read.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sora2_async._admission import PROMISE_SLIP
from sora2_async._budget import BudgetState, Lease, Limiter, Permit, RateLimit
from tests.helpers import store_makers
from tests.limiter_helpers import (
    EPS,
    EXTRA,
    GENERATE,
    HYPOTHESIS,
    POLL,
    STORE_KINDS,
    Run,
    Stores,
    extra,
    max_in_any_window,
    max_occupancy,
    near,
    real_time_limit,
    refused_after,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[*STORE_KINDS, "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def store(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path
) -> AsyncIterator[Stores]:
    """Makes limiters of one kind; every one is closed when the test ends. Redis ones use a
    real ``redis-server`` (one namespace per limiter) and the test's virtual clock."""

    def make(redis: Any) -> Stores:
        return Stores(store_kind, tmp_path, redis=redis)

    async with store_makers(store_kind, request, make) as made:
        yield made


# -- the window ----------------------------------------------------------------------------


async def test_no_rolling_window_ever_holds_more_than_the_limit(store: Stores) -> None:
    lim = store.make(limit=20, per=100.0, margin=2.0)
    window = 102.0
    spans: list[tuple[float, float]] = []
    skipped = 0

    async def one(i: int) -> None:
        nonlocal skipped
        await anyio.sleep((i * 7919) % 300 / 10)  # arrivals spread over 30 s
        took = (i * 31) % 50 / 2  # answers take 0 to 24.5 s
        if i % 5 == 4:  # an extra poll: only if a slot is free right now, else give up
            admitted = await lim.try_permit()
            if admitted is None:
                skipped += 1
                return
            async with admitted:
                start = anyio.current_time()
                await anyio.sleep(took)
        else:
            async with lim.permit(POLL if i % 2 else GENERATE):
                start = anyio.current_time()
                await anyio.sleep(took)
        spans.append((start, anyio.current_time()))

    with real_time_limit(30), anyio.fail_after(100 * window):
        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(one, i)

    assert len(spans) + skipped == 500
    assert len(spans) > 400
    assert max_occupancy(spans, window) == 20  # never more, and the budget was used in full
    assert max_in_any_window([answered for _, answered in spans], window) == 20
    assert max_in_any_window([admitted for admitted, _ in spans], window) <= 20


@HYPOTHESIS
@given(
    limit=st.integers(1, 5),
    per=st.floats(1.0, 100.0),
    margin=st.floats(0.0, 3.0),
    requests=st.lists(
        st.tuples(
            st.floats(0.0, 60.0),  # arrives
            st.floats(0.0, 30.0),  # its answer takes
            st.sampled_from(["poll", "generate", "promise", "extra", "429", "429 retry-after"]),
        ),
        min_size=1,
        max_size=25,
    ),
)
async def test_the_window_holds_for_any_mix_of_requests(
    store: Stores,
    limit: int,
    per: float,
    margin: float,
    requests: list[tuple[float, float, str]],
) -> None:
    window = per + margin
    spans: list[tuple[float, float]] = []
    must_finish = 0

    async def one(lim: Any, arrives: float, took: float, what: str) -> None:
        nonlocal must_finish
        await anyio.sleep(arrives)
        if what == "extra":
            admitted = await lim.try_permit()
            if admitted is None:
                return
            context: Any = admitted
        elif what == "promise" and limit > 1:  # its final poll falls due at its answer
            # (A limit of 1 can never hold a submission and its promised poll: it would wait
            # for ever, by the rule.)
            must_finish += 1
            context = lim.permit(GENERATE, promise=took)
        else:
            must_finish += 1
            context = lim.permit(GENERATE if what in ("generate", "promise") else POLL)
        async with context as permit:
            start = anyio.current_time()
            await anyio.sleep(took)
            if what.startswith("429"):
                permit.rate_limited(took + 1.0 if what.endswith("after") else None)
        if permit.lease is not None:
            await lim.release(permit.lease)
        spans.append((start, anyio.current_time()))

    # Even at one request a window, with every 429's wait on top, all of it ends in time:
    # and after repeated 429s the ceiling probes a slot every 32 windows at the slowest.
    bound = 60.0 + sum(took + window + took + 1.0 for _, took, _ in requests) + 1.0
    bound += 32 * window * limit * sum(what.startswith("429") for _, _, what in requests)
    async with store.open(limit, per, margin=margin) as lim:
        with real_time_limit(30), anyio.fail_after(bound):
            async with anyio.create_task_group() as tg:
                for arrives, took, what in requests:
                    tg.start_soon(one, lim, arrives, took, what)

    assert len(spans) >= must_finish
    assert max_occupancy(spans, window) <= limit


@HYPOTHESIS
@given(
    limit=st.integers(1, 4),
    per=st.floats(0.5, 50.0),
    margin=st.floats(0.0, 2.5),
    gaps=st.lists(st.floats(0.01, 20.0), min_size=1, max_size=25),
    tooks=st.lists(st.floats(0.0, 15.0), min_size=25, max_size=25),
)
async def test_polls_are_admitted_exactly_when_a_slot_frees(
    store: Stores, limit: int, per: float, margin: float, gaps: list[float], tooks: list[float]
) -> None:
    """First come, first served, at the earliest moment the window allows, not a tick later.

    For polls alone the right answer is known: poll i goes at the latest of its arrival, the
    admission of poll i-1, and the moment the ``limit``-th latest of the earlier slots frees
    (a slot frees a window after its answer).
    """
    window = per + margin
    arrivals: list[float] = []
    t = 0.0
    for gap in gaps:
        t += gap
        arrivals.append(t)

    async with store.open(limit, per, margin=margin) as lim:
        run = Run(lim)
        with real_time_limit(30), anyio.fail_after(sum(gaps) + len(gaps) * (window + 15.0) + 1):
            async with anyio.create_task_group() as tg:
                for i, arrives in enumerate(arrivals):
                    run.start(tg, i, at=arrives, took=tooks[i])

    assert run.order == list(range(len(arrivals)))
    frees: list[float] = []
    previous = 0.0
    for i, arrives in enumerate(arrivals):
        earliest = max(arrives, previous)
        if len(frees) >= limit:
            earliest = max(earliest, sorted(frees)[-limit])
        assert run.admitted[i] == near(earliest), f"poll {i}"
        previous = run.admitted[i]
        frees.append(run.answered[i] + window)


async def test_a_slot_is_held_until_a_window_after_the_answer(store: Stores) -> None:
    """Stamped at the answer: a request that takes 30 s holds its slot for 30 s + window."""
    lim = store.make(limit=1, per=100.0)
    run = Run(lim)
    async with anyio.create_task_group() as tg:
        run.start(tg, "slow", took=30.0)
        run.start(tg, "next", at=1.0)
        await run.until(31.0)
        state = await lim.snapshot()
        assert state.used == 1
        assert state.next_free_in == near(99.0)
    assert run.admitted["next"] == near(130.0)


async def test_an_entry_frees_at_exactly_its_stamp_plus_the_window(store: Stores) -> None:
    lim = store.make(limit=1, per=3600.0, margin=2.0)
    run = Run(lim)
    await run.request("first", at=0.1)
    await run.until(3601.1)
    assert (await lim.snapshot()).next_free_in == near(1.0)
    assert await lim.try_permit() is None
    assert await run.request("second") == near(3602.1)  # not a tick later
    # ... and its own slot frees a window after that, for whoever asks at that moment.
    await run.until(3602.1 + 3602.0)
    assert await extra(lim)


async def test_virtual_time_loops_at_awkward_windows_move_on(store: Stores) -> None:
    """A window no float can hold: each wake-up sees its entries gone; nothing spins."""
    per, margin = 1 / 3, 1e-4
    window = per + margin
    lim = store.make(limit=2, per=per, margin=margin)
    run = Run(lim)
    with real_time_limit(30), anyio.fail_after(200 * window):
        for i in range(300):
            await run.request(i)
    for i in range(2, 300):  # each the moment the one two before it leaves
        assert run.admitted[i] == near(run.answered[i - 2] + window)
    assert run.now() == pytest.approx(149 * window, rel=1e-5)  # looptime rounds each wake


# -- priorities and starvation ---------------------------------------------------------------


async def test_polls_go_before_submissions(store: Stores) -> None:
    lim = store.make(limit=1, per=100.0, starve_after=1e9)
    run = Run(lim)
    await run.request("fill")
    async with anyio.create_task_group() as tg:
        run.start(tg, "g1", GENERATE, at=1.0)
        run.start(tg, "g2", GENERATE, at=2.0)
        run.start(tg, "p1", POLL, at=3.0)
        run.start(tg, "p2", POLL, at=4.0)
        await run.until(5.0)
        state = await lim.snapshot()
        assert (state.waiting_polls, state.waiting_generates) == (2, 2)
    assert run.order == ["fill", "p1", "p2", "g1", "g2"]
    assert [run.admitted[n] for n in run.order[1:]] == [near(t) for t in (100, 200, 300, 400)]


async def test_a_starved_submission_goes_before_newer_polls(store: Stores) -> None:
    """Polls keep coming, one a second; the submission gets the first slot after it has
    waited ``starve_after``, ahead of the polls that are still waiting."""
    lim = store.make(limit=1, per=10.0, starve_after=25.0)
    run = Run(lim)
    await run.request("fill")  # frees at 10
    with real_time_limit(30), anyio.fail_after(1000):
        async with anyio.create_task_group() as tg:
            run.start(tg, "generate", GENERATE, at=0.5)
            for i in range(1, 36):
                run.start(tg, i, POLL, at=float(i))
    # Slots free at 10, 20, 30, ...; it has starved from 25.5 on: the slot at 30 is its.
    assert run.order[:4] == ["fill", 1, 2, "generate"]
    assert run.admitted["generate"] == near(30.0)
    assert run.order[4:] == list(range(3, 36))  # the polls keep their order after it


async def test_without_starvation_a_submission_waits_for_every_poll(store: Stores) -> None:
    """The same run with patience beyond it: the guard above is what let it through."""
    lim = store.make(limit=1, per=10.0, starve_after=1e6)
    run = Run(lim)
    await run.request("fill")
    with real_time_limit(30), anyio.fail_after(1000):
        async with anyio.create_task_group() as tg:
            run.start(tg, "generate", GENERATE, at=0.5)
            for i in range(1, 36):
                run.start(tg, i, POLL, at=float(i))
    assert run.order[-1] == "generate"


async def test_a_starved_submission_cannot_block_the_polls_that_would_free_it(
    store: Stores,
) -> None:
    lim = store.make(limit=10, per=100.0, starve_after=10.0)
    run = Run(lim)
    leases = await run.promises(9)  # nine videos in flight (say, taken over by as_completed)
    with anyio.fail_after(1000):
        async with anyio.create_task_group() as tg:
            # Its own promised poll does not fit (0 + 9 + 1 + 1 > 10) until a video ends.
            run.start(tg, "generate", GENERATE, promise=0.0)
            run.start(tg, "early poll", at=5.0)
            run.start(tg, "late poll", at=20.0)  # the generate has starved by now
            await run.until(30.0)
            await run.release(leases, 3)  # polls found three videos done: 2 + 6 + 1 + 1 <= 10
    assert run.admitted["early poll"] == near(5.0)
    assert run.admitted["late poll"] == near(20.0)  # 2 of 10 used: it must not wait
    assert run.admitted["generate"] == near(30.0)


async def test_a_starved_submission_that_cannot_go_does_not_hold_back_polls(
    store: Stores,
) -> None:
    lim = store.make(limit=4, per=3600.0, starve_after=10.0)
    run = Run(lim)
    leases = await run.promises(3)  # three running videos, each promised its final poll
    await run.request("fill")  # one slot used: 1 used + 3 promised = the whole limit
    polled_at: list[float] = []

    names = iter(range(3))

    async def poll() -> None:
        polled_at.append(await run.request(("poll", next(names))))
        await run.release(leases, 1)  # that poll found its video done: its promise comes back

    with real_time_limit(30), anyio.fail_after(2 * 3600):  # a deadlock fails here
        async with anyio.create_task_group() as tg:
            run.start(tg, "generate", GENERATE, promise=0.0)
            await run.until(60.0)  # the submission has starved for a while now
            for _ in range(3):
                tg.start_soon(poll)
    # The polls went at once (they end videos); the submission waited for the window.
    assert run.order[1:] == [("poll", 0), ("poll", 1), ("poll", 2), "generate"]
    assert polled_at == [near(60.0)] * 3
    # ... until it and its own poll fit: 3 used + 0 promised + 1 + 1 > 4 until the polls leave.
    assert run.admitted["generate"] == near(3660.0)


async def test_a_starved_submission_that_can_go_goes_before_new_polls(store: Stores) -> None:
    lim = store.make(limit=3, per=100.0, starve_after=10.0)
    run = Run(lim)
    for i in range(3):
        await run.request(("fill", i))  # the window is full until t = 100
    async with anyio.create_task_group() as tg:
        run.start(tg, "generate", GENERATE)
        await run.until(20.0)
        run.start(tg, "poll")
    assert run.order[3:] == ["generate", "poll"]
    assert run.admitted["generate"] == near(100.0)


# -- promises and horizons -------------------------------------------------------------------


async def test_a_submission_waits_until_its_promised_poll_fits(store: Stores) -> None:
    lim = store.make(limit=5, per=100.0)
    run = Run(lim)
    leases = await run.promises(2)
    assert (await lim.snapshot()).reserved == 2
    # 0 used + 2 promised + 1 + its own 1 <= 5
    assert await run.request("g1", GENERATE, promise=0.0) == near(0.0)
    assert (await lim.snapshot()).reserved == 3
    async with anyio.create_task_group() as tg:
        run.start(tg, "g2", GENERATE, promise=0.0, at=1.0)  # 1 + 3 + 1 + 1 > 5: waits
        await run.until(5.0)
        assert (await lim.snapshot()).waiting_generates == 1
        # A poll ignores the promises (they are kept for polls) and passes the waiting one.
        assert await run.request("poll") == near(5.0)
        await run.until(10.0)
        await run.release(leases, 1)  # 2 + 2 + 1 + 1 > 5: still waits
        await run.until(20.0)
        assert "g2" not in run.admitted
        await run.release(leases, 1)  # 2 + 1 + 1 + 1 <= 5: goes now
    assert run.admitted["g2"] == near(20.0)
    state = await lim.snapshot()
    assert (state.reserved, state.used, state.waiting_generates) == (2, 3, 0)
    for lease in (run.leases["g1"], run.leases["g2"], run.leases["g1"]):
        await lim.release(lease)  # twice is harmless
    assert (await lim.snapshot()).reserved == 0  # never below nothing


async def test_promises_hold_back_submissions_but_not_polls(store: Stores) -> None:
    lim = store.make(limit=3, per=100.0)
    run = Run(lim)
    await run.promises(2)
    with anyio.move_on_after(50):
        await run.request("generate", GENERATE)  # 0 used + 2 promised + 1 <= 3
    await run.promises(1)
    with anyio.move_on_after(50):
        await run.request("second generate", GENERATE)  # 1 + 3 + 1 > 3: waits
    assert "generate" in run.admitted
    assert "second generate" not in run.admitted
    assert await run.request("poll") == near(50.0)
    assert await run.request("poll 2") == near(50.0)
    assert (await lim.snapshot()).used == 3


async def test_a_promise_counts_only_what_is_still_in_the_window_when_its_poll_falls_due(
    store: Stores,
) -> None:
    lim = store.make(limit=3, per=100.0)
    run = Run(lim)
    await run.request("a")
    await run.request("b")  # both leave at 100
    await run.until(10.0)
    # One slot is free now; the promised poll fits only once "a" and "b" have left.
    with anyio.move_on_after(1.0):
        await run.request("due at 99", GENERATE, promise=89.0)
    assert "due at 99" not in run.admitted
    assert await run.request("due at 106", GENERATE, promise=95.0) == near(11.0)
    assert (await lim.snapshot()).reserved == 1
    assert run.leases["due at 106"].due == near(run.t0 + 106.0)


async def test_a_promise_does_not_make_a_full_window_any_less_full(store: Stores) -> None:
    lim = store.make(limit=2, per=100.0)
    run = Run(lim)
    await run.request("a")
    await run.request("b")
    # Everything is free long before the poll falls due, but no slot is free for the submission.
    assert await run.request("generate", GENERATE, promise=1000.0) == near(100.0)


async def test_a_promising_submission_goes_as_soon_as_its_poll_would_fit(store: Stores) -> None:
    lim = store.make(limit=3, per=100.0)
    run = Run(lim)
    await run.request("a")
    await run.request("b")  # both leave at 100
    # At 10, 10 + 50 < 100: the promised poll would not fit. From 50 on, it would.
    admitted = await run.request("generate", GENERATE, promise=50.0, at=10.0)
    assert admitted == near(50.0)


async def test_a_submission_leaves_every_earlier_promised_poll_its_slot(store: Stores) -> None:
    lim = store.make(limit=4, per=100.0, lease_ttl=1000.0)  # the other owner lives throughout
    run = Run(lim)
    await run.request("a")
    await run.request("b")  # both leave at 100
    # Two videos of another owner sharing the store have their final polls due at 10 and 20.
    await Run(store.other_owner(lim)).promises(1, due_in=10.0)
    await Run(store.other_owner(lim)).promises(1, due_in=20.0)
    # At its own poll's time (200) the submission would fit: 0 + 2 promised + 1 + 1 <= 4.
    # But the poll due at 20 (given PROMISE_SLIP, to 50, for its slot) would then find a, b,
    # the poll due before it and this submission: 2 + 2 + 1 > 4. So it waits.
    with anyio.move_on_after(50.0):
        await run.request("late", GENERATE, promise=200.0)
    assert "late" not in run.admitted
    # From 70 on, an overdue poll asked at now + PROMISE_SLIP finds a and b gone.
    assert await run.request("later", GENERATE, promise=200.0, at=75.0) == near(75.0)


async def test_an_earlier_promised_poll_may_wait_promise_slip_for_its_slot(store: Stores) -> None:
    lim = store.make(limit=3, per=100.0)
    run = Run(lim)
    await run.request("a")
    await run.request("b")  # both leave at 100
    # Due before 100 - PROMISE_SLIP, the poll would find a, b and the submission: 2 + 1 + 1 > 3.
    lease = (await run.promises(1, due_in=100.0 - PROMISE_SLIP - 1.0))[0]
    with anyio.move_on_after(1.0):
        await run.request("early", GENERATE, promise=200.0)
    assert "early" not in run.admitted
    await lim.release(lease)
    # Due later, it may wait for the slot that a and b free at 100.
    await run.promises(1, due_in=100.0 - PROMISE_SLIP + 1.0)
    assert await run.request("late", GENERATE, promise=200.0) == near(1.0)


async def test_only_a_generate_may_promise_and_extra_polls_never_wait(store: Stores) -> None:
    lim = store.make(limit=1, per=100.0)
    run = Run(lim)
    await run.request("fill")
    for kind, promise in [(POLL, 1.0), (EXTRA, None), (EXTRA, 1.0), (GENERATE, -1.0)]:
        with pytest.raises(ValueError, match=r"extra polls never wait|only a GENERATE"):
            async with lim.permit(kind, promise=promise):
                pass  # pragma: no cover
    state = await lim.snapshot()
    assert (state.used, state.reserved, state.waiting_polls, state.waiting_generates) == (
        1,
        0,
        0,
        0,
    )
    with anyio.move_on_after(1000.0):
        await run.request("poll")
    assert run.admitted.get("poll") == near(100.0)  # the limiter is none the worse


# -- extra polls ---------------------------------------------------------------------------


async def test_an_extra_poll_takes_a_free_slot_and_holds_it_until_a_window_after_it_ends(
    store: Stores,
) -> None:
    lim = store.make(limit=1, per=100.0)
    run = Run(lim)
    admitted = await lim.try_permit()
    assert admitted is not None
    async with admitted as permit:
        assert isinstance(permit, Permit)
        assert permit.kind is EXTRA
        assert permit.lease is None
        assert (await lim.snapshot()).used == 1
        assert await lim.try_permit() is None
        await anyio.sleep(30.0)
    assert (await lim.snapshot()).used == 1
    await run.until(129.9)
    assert await lim.try_permit() is None
    await run.until(130.0)
    assert await extra(lim)


async def test_an_extra_poll_never_touches_the_promised_polls(store: Stores) -> None:
    lim = store.make(limit=3, per=100.0)
    run = Run(lim)
    await run.promises(2)
    assert await extra(lim)  # 0 used + 2 promised + 1 <= 3
    assert await lim.try_permit() is None  # 1 + 2 + 1 > 3: the free slot is promised...
    assert await run.request("poll") == near(0.0)  # ... to a poll, which may use it


async def test_an_extra_poll_gives_way_to_anyone_waiting(store: Stores) -> None:
    lim = store.make(limit=3, per=100.0)
    run = Run(lim)
    leases = await run.promises(2)
    async with anyio.create_task_group() as tg:
        run.start(tg, "generate", GENERATE, promise=0.0)  # 0 + 2 + 1 + 1 > 3: waits
        await run.until(1.0)
        state = await lim.snapshot()
        assert state.waiting_generates == 1
        assert state.available == 1  # a slot the extra poll could use, if nobody waited
        assert await lim.try_permit() is None
        await run.release(leases, 1)
    assert run.admitted["generate"] == near(1.0)


async def test_an_extra_poll_never_takes_the_slot_a_waiter_is_woken_for(store: Stores) -> None:
    lim = store.make(limit=1, per=100.0)
    run = Run(lim)
    await run.request("fill")
    extras: list[object] = []
    async with anyio.create_task_group() as tg:
        run.start(tg, "poll", at=1.0)
        await run.until(100.0)  # the moment the slot frees, whoever runs first
        extras.append(await lim.try_permit())
    assert extras == [None]
    assert run.admitted["poll"] == near(100.0)


# -- cancellation --------------------------------------------------------------------------


async def test_a_cancelled_waiter_takes_nothing(store: Stores) -> None:
    lim = store.make(limit=1, per=100.0)
    run = Run(lim)
    await run.request("fill")
    before = await lim.snapshot()
    with anyio.move_on_after(5.0) as scope:
        await run.request("poll")
    assert scope.cancelled_caught
    with anyio.move_on_after(5.0) as scope:
        await run.request("generate", GENERATE, promise=10.0)
    assert scope.cancelled_caught
    after = await lim.snapshot()
    assert (after.used, after.reserved, after.waiting_polls, after.waiting_generates) == (
        before.used,
        before.reserved,
        0,
        0,
    )
    assert await run.request("later") == near(100.0)


async def test_a_task_cancelled_before_it_asks_takes_nothing_even_from_a_free_budget(
    store: Stores,
) -> None:
    lim = store.make(limit=1, per=100.0)
    run = Run(lim)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await run.request("cancelled")
    assert "cancelled" not in run.admitted
    assert (await lim.snapshot()).used == 0
    assert await run.request("poll") == near(0.0)


async def test_cancelling_the_head_of_the_queue_lets_the_next_one_in_at_once(
    store: Stores,
) -> None:
    lim = store.make(limit=3, per=100.0)
    run = Run(lim)
    await run.promises(2)
    async with anyio.create_task_group() as tg:
        big = run.start_cancellable(tg, "big", GENERATE, promise=0.0)  # 0 + 2 + 1 + 1 > 3
        run.start(tg, "small", GENERATE, at=1.0)  # 0 + 2 + 1 <= 3 fits, but waits its turn
        await run.until(5.0)
        assert "small" not in run.admitted
        big.cancel()
    assert "big" not in run.admitted
    assert run.admitted["small"] == near(5.0)


async def test_a_cancelled_waiter_behind_others_changes_nobodys_turn(store: Stores) -> None:
    lim = store.make(limit=1, per=100.0)
    run = Run(lim)
    await run.request("fill")
    async with anyio.create_task_group() as tg:
        run.start(tg, "first", at=1.0)
        middle = run.start_cancellable(tg, "middle", at=2.0)
        run.start(tg, "last", at=3.0)
        await run.until(50.0)
        middle.cancel()
    assert run.order == ["fill", "first", "last"]
    assert [run.admitted["first"], run.admitted["last"]] == [near(100.0), near(200.0)]


# -- 429s ----------------------------------------------------------------------------------


async def test_a_429_counts_as_spent_and_stops_everyone_until_retry_after(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True, retry_after=80.0)
    state = await lim.snapshot()
    assert state.used == 1
    assert state.rate_limited == 1
    assert state.blocked_for == near(80.0)
    assert (state.limit, state.configured_limit) == (9, 10)  # trusted: it costs one slot
    async with anyio.create_task_group() as tg:
        run.start(tg, "generate", GENERATE, at=1.0)
        run.start(tg, "poll", at=2.0)
        await run.until(50.0)
        state = await lim.snapshot()
        assert (state.used, state.blocked_for) == (1, near(30.0))
        assert state.next_free_in == near(30.0)
        assert await lim.try_permit() is None
    assert run.admitted["poll"] == near(80.0)
    assert run.admitted["generate"] >= 80.0 - EPS
    assert (await lim.snapshot()).blocked_for == 0.0


async def test_retry_after_is_trusted_for_when_and_costs_one_slot(store: Stores) -> None:
    lim = store.make(limit=100, per=3600.0, margin=2.0)
    run = Run(lim)
    await run.request("refused", refused=True, retry_after=20.0)
    state = await lim.snapshot()
    assert (state.used, state.limit, state.rate_limited) == (1, 99, 1)
    assert await run.request("poll") == near(20.0)


@pytest.mark.parametrize(
    ("retry_after", "blocked_for"),
    [(250.0, 100.0), (1e12, 100.0), (100.0, 100.0), (99.5, 99.5)],
)
async def test_a_retry_after_longer_than_the_window_is_capped_at_the_window(
    store: Stores, retry_after: float, blocked_for: float
) -> None:
    """By a window from now everything counted has left: a longer wait is never needed."""
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True, retry_after=retry_after)
    state = await lim.snapshot()
    assert (state.blocked_for, state.next_free_in) == (near(blocked_for), near(blocked_for))
    assert state.limit == 9  # trusted (capped), so it costs one slot
    assert await run.request("poll", at=1.0) == near(blocked_for)


@pytest.mark.parametrize("retry_after", [-5.0, math.inf, -math.inf, math.nan])
async def test_a_retry_after_that_makes_no_sense_counts_as_absent(
    store: Stores, retry_after: float
) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True, retry_after=retry_after)
    state = await lim.snapshot()
    assert (state.blocked_for, state.rate_limited) == (0.0, 1)
    assert state.limit == 1  # as without Retry-After: the first request refused, others hold all
    assert await run.request("poll", at=1.0) == near(100.0)


async def test_without_retry_after_a_429_holds_everyone_until_the_window_has_room(
    store: Stores,
) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True)
    assert (await lim.snapshot()).blocked_for == 0.0
    assert await run.request("poll", at=1.0) == near(100.0)  # the tightened limit's slot


async def two_refused_in_a_row(run: Run) -> None:
    """Limit 10 per 100 s. Eight answered at 0..7 s; two sent together at 95 come back 429."""
    for i in range(8):
        await run.request(i, at=float(i))
    async with anyio.create_task_group() as tg:
        run.start(tg, "refused 1", at=95.0, took=1.0, refused=True)
        run.start(tg, "refused 2", at=95.0, took=2.0, refused=True)


async def test_a_429_tightens_to_what_the_other_consumers_leave_at_least_one_slot_each(
    store: Stores,
) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    async with anyio.create_task_group() as tg:
        tg.start_soon(two_refused_in_a_row, run)
        await run.until(96.5)
        # The first 429 (at 96): the server's window was full while ours held 9 answered and
        # 1 in flight, so others held at least 1 in the 96 s our log covers: 1.04 a window
        # at that pace. 10 - 1.04, rounded down, less one: 7.
        assert (await lim.snapshot()).limit == 7
    # The second (at 97): the same estimate (7), but each 429 takes at least a slot: 6.
    state = await lim.snapshot()
    assert (state.limit, state.configured_limit, state.rate_limited) == (6, 10, 2)
    assert state.used == 10  # both refused ones count as spent


async def test_the_tightened_limit_holds_back_until_the_window_has_room(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await two_refused_in_a_row(run)
    at_97 = await lim.snapshot()
    assert (at_97.used, at_97.limit) == (10, 6)
    # Five have to leave (at 100..104) before a sixth fits under 6.
    assert await run.request("poll") == near(104.0)


async def test_the_limit_comes_back_one_slot_per_quiet_window(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await two_refused_in_a_row(run)  # the last 429 at 97: limit 6
    # Above half the configured limit, a slot comes back each full window after the 429.
    for at, limit in [(196.0, 6), (198.0, 7), (296.0, 7), (298.0, 8), (396.0, 8), (398.0, 9)]:
        await run.until(at)
        assert (await lim.snapshot()).limit == limit, at
    for _ in range(4):
        await run.until(run.now() + 100.5)
        await lim.snapshot()
    assert (await lim.snapshot()).limit == 10  # all the way back, and no further


async def test_a_slot_comes_back_a_window_after_a_retry_after(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True, retry_after=1.0)
    assert (await lim.snapshot()).limit == 9
    await run.until(100.0)
    assert (await lim.snapshot()).limit == 10


@pytest.mark.parametrize(("per", "refused_at"), [(100.0, 0.0), (0.1, 0.4), (0.1, 4.1)])
async def test_a_waiter_held_back_by_a_tightened_limit_goes_when_it_rises(
    store: Stores, per: float, refused_at: float
) -> None:
    """The first request refused: the limit is 1 for a window. A submission with a promised
    poll needs 2, so only the limit rising (a window after the 429) can let it go."""
    lim = store.make(limit=2, per=per)
    await anyio.sleep_until(refused_at)
    run = Run(lim)
    await run.request("refused", refused=True)
    assert (await lim.snapshot()).limit == 1
    with real_time_limit(10), anyio.fail_after(10 * per):
        assert await run.request("generate", GENERATE, promise=0.0) == near(per)


async def test_the_limit_comes_back_even_when_nobody_looks(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True)
    assert (await lim.snapshot()).limit == 1  # the very first request refused: others hold it all
    await run.until(350.0)  # three quiet windows, nobody asking
    # Below half the configured limit it doubles each window (1, 2, 4, 8), so a key that
    # was busy for a while is not starved for days; then one slot a window.
    assert (await lim.snapshot()).limit == 8
    await run.until(450.0)
    assert (await lim.snapshot()).limit == 9


async def test_the_climb_back_stops_below_where_the_429_came_and_probes_there_a_window_on(
    store: Stores,
) -> None:
    """Every store keeps what the ceiling learnt, not only the lowered limit: refused with 5
    of ours in the window, the limit climbs to 4, probes 5 a window later, and a window of
    that holding ends the learning. (A shared store that kept only the lowered limit went
    on to 8, where the neighbour refuses again.)"""
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await refused_after(run, 0.0, answered=4)  # at 4: lowered to half of our 5
    for at, limit in [(50.0, 2), (103.0, 2), (105.0, 4), (203.0, 4), (205.0, 5), (303.0, 5)]:
        await run.until(at)
        assert (await lim.snapshot()).limit == limit, at
    await run.until(305.0)  # the probe held a whole window: the neighbour shrank or left
    assert (await lim.snapshot()).limit == 10


async def test_a_429_at_the_probe_makes_the_next_probe_wait_eight_windows(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await refused_after(run, 0.0, answered=4)
    await run.until(205.0)
    assert (await lim.snapshot()).limit == 5  # the probe ...
    await refused_after(run, 205.0, answered=4)  # ... refused at 209, where the first 429 came
    # The others were on the key at the first 429, 209 s ago: they hold at least 6 of a
    # window, reckoned over a whole one (not over the 4 s our log covers, which made it 72
    # and cut the limit to half of our 5), so 10 - 6 - 1 = 3 is left to us.
    for at, limit in [(250.0, 3), (308.0, 3), (310.0, 4), (1108.0, 4), (1110.0, 5)]:
        await run.until(at)
        assert (await lim.snapshot()).limit == limit, at
    # A restarted process (another owner of the store, made now) goes on from what it learnt.
    other = store.other_owner(lim)
    assert (await other.snapshot()).limit == 5


async def test_a_429_extrapolates_the_others_over_the_span_our_log_covers(store: Stores) -> None:
    lim = store.make(limit=100, per=3600.0)
    run = Run(lim)
    for i in range(72):
        await run.request(i, at=40.0 * i)  # the last at 2840
    await run.request("refused", at=2900.0, refused=True)
    # Others took at least 100 - 72 = 28 in the 2900 s our log covers: 34.76 a window at that
    # pace. 100 - 34.76, rounded down, less one: 64 (more than half of our 73).
    assert (await lim.snapshot()).limit == 64


async def test_without_retry_after_the_limit_shrinks_to_what_others_leave(store: Stores) -> None:
    lim = store.make(limit=100, per=3600.0)
    run = Run(lim)
    for i in range(95):
        await run.request(i, at=36.0 * i)  # our 95 requests span most of the hour
    await run.request("refused", at=36.0 * 95, refused=True)  # others hold the other 5
    # 5 of theirs in our 3420 s is about 5.3 an hour: we keep 100 - 5.3, less one.
    assert (await lim.snapshot()).limit == 93


async def test_a_429_never_leaves_less_than_half_of_what_we_had(store: Stores) -> None:
    lim = store.make(limit=100, per=3600.0)
    run = Run(lim)
    for i in range(60):
        await run.request(i, at=float(i))
    await run.request("refused", at=60.0, refused=True)
    # Others took 40 in a minute (counted as 5 minutes, a twelfth of the window): at that pace
    # nothing would be left for us. Half of our 61, though, is kept.
    assert (await lim.snapshot()).limit == 30


async def test_without_retry_after_the_limit_shrinks_at_most_by_half(store: Stores) -> None:
    lim = store.make(limit=100, per=3600.0)
    run = Run(lim)
    for i in range(59):
        await run.request(i, at=30.0 * i)  # our 59 requests span half an hour
    # ... and the server's window is full: others hold 41.
    await run.request("refused", at=30.0 * 59, refused=True)
    state = await lim.snapshot()
    # Others' 41 in our half hour would be 83 an hour, leaving us 15; but one 429 never
    # takes more than half of what we had in the window.
    assert state.limit == 60 // 2
    assert state.used == 60
    # Nothing goes until our own window has room under the new limit.
    assert await run.request("poll") >= 3600.0 - EPS


async def test_a_429_counts_what_the_server_counts_of_ours_not_our_earlier_429s(
    store: Stores,
) -> None:
    """Our earlier 429s still in the window are left out of what the server holds of ours:
    a server that did not count them would, were they counted, let one more request into
    its full window each time one leaves ours (a 429 every few ms at the turn of a window);
    one that did is read a little conservatively."""
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    for i in range(5):
        await run.request(i, at=float(i))  # the server counts these five
    for i in range(2):  # refused with Retry-After: a slot each (10 -> 8); the server counted none
        await run.request(f"refused {i}", at=10.0 + 2 * i, refused=True, retry_after=1.0)
    assert (await lim.snapshot()).limit == 8
    await run.request("refused", at=99.0, refused=True)
    # The server's window is full while it holds 5 of ours and this one: others hold 5 of it,
    # 5.05 a window at the pace our 99 s log saw. 10 - 5.05, rounded down, less one: 3 (half
    # of our 6 at least). Counting our two earlier 429s as the server's would say 5.
    state = await lim.snapshot()
    assert (state.limit, state.used, state.rate_limited) == (3, 8, 3)


async def test_each_429_with_retry_after_costs_one_slot_and_the_latest_wait_holds(
    store: Stores,
) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    async with anyio.create_task_group() as tg:  # three sent together, all refused
        run.start(tg, 1, took=1.0, refused=True, retry_after=5.0)  # blocked until 6
        run.start(tg, 2, took=2.0, refused=True, retry_after=60.0)  # ... until 62
        run.start(tg, 3, took=3.0, refused=True, retry_after=40.0)  # (until 43: no sooner)
        run.start(tg, "poll", at=4.0)
    assert (await lim.snapshot()).limit == 7
    assert run.admitted["poll"] == near(62.0)


# -- snapshots, sharing --------------------------------------------------------------------


async def test_a_snapshot_shows_the_live_budget(store: Stores) -> None:
    lim = store.make(limit=5, per=100.0, margin=2.0)
    assert isinstance(lim, Limiter)
    assert lim.rate_limit == RateLimit(5, per=100.0)
    fresh = await lim.snapshot()
    assert fresh == BudgetState(
        limit=5,
        configured_limit=5,
        window=102.0,
        used=0,
        reserved=0,
        waiting_polls=0,
        waiting_generates=0,
        next_free_in=0.0,
        rate_limited=0,
        blocked_for=0.0,
    )
    assert fresh.available == 5
    assert lim.last_state == fresh

    run = Run(lim)
    async with anyio.create_task_group() as tg:
        run.start(tg, "video", GENERATE, promise=50.0, took=10.0)  # in flight until 10
        await run.until(1.0)
        state = await lim.snapshot()
        assert (state.used, state.reserved) == (1, 1)
        assert await extra(lim)
        for i in range(3):
            await run.request(i, at=2.0 + i)  # 2, 3, 4: the window is full
        run.start(tg, "waiting generate", GENERATE, promise=1.0, at=5.0)
        run.start(tg, "waiting poll", at=6.0)
        await run.until(7.0)
        state = await lim.snapshot()
        assert state == BudgetState(
            limit=5,
            configured_limit=5,
            window=102.0,
            used=5,
            reserved=1,
            waiting_polls=1,
            waiting_generates=1,
            next_free_in=near(102.0 + 1.0 - 7.0),  # the extra poll, answered at 1
            rate_limited=0,
            blocked_for=0.0,
        )
        assert state.available == 0
        assert lim.last_state == state  # no time has passed: the cached one is as fresh
    # At 103 the extra poll's slot goes to the waiting poll; the submission waits on.
    assert run.admitted["waiting poll"] == near(103.0)
    assert run.admitted["waiting generate"] > 103.0


async def test_a_snapshot_counts_what_was_spent_in_the_window_only(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await run.request("generate", GENERATE)
    assert await extra(lim)
    await run.request("poll", at=50.0)
    assert (await lim.snapshot()).used == 3
    await run.until(100.0)
    assert (await lim.snapshot()).used == 1


async def test_a_429_shows_in_the_snapshot(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True, retry_after=30.0)
    state = await lim.snapshot()
    assert (state.rate_limited, state.blocked_for, state.next_free_in) == (1, 30.0, 30.0)
    assert (state.used, state.limit) == (1, 9)
    await anyio.sleep(30.0)
    state = await lim.snapshot()
    assert (state.rate_limited, state.blocked_for, state.next_free_in) == (1, 0.0, 0.0)


async def test_holders_of_one_limiter_share_its_budget(store: Stores) -> None:
    """Two clients (each with its own pollers) given the same limiter spend one budget."""
    shared = store.make(limit=4, per=100.0)
    first, second = Run(shared), Run(shared)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            first.start(tg, i, at=1.0 + i)
            second.start(tg, i, at=1.5 + i)
    admitted = sorted([*first.admitted.values(), *second.admitted.values()])
    assert admitted[:4] == [near(t) for t in (1.0, 1.5, 2.0, 2.5)]
    assert admitted[4:] == [near(101.0), near(101.5)]


async def test_next_free_in_says_when_the_next_request_can_go_after_a_429(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    await two_refused_in_a_row(run)
    # At 97 the window holds 10 under a limit of 6: five must leave (at 100..104) first.
    said = (await lim.snapshot()).next_free_in
    assert said == near(7.0)
    assert await run.request("poll") - 97.0 == near(said)  # it goes at 104


async def test_next_free_in_is_not_zero_while_every_slot_is_in_flight(store: Stores) -> None:
    lim = store.make(limit=1, per=100.0)
    async with lim.permit(POLL):
        state = await lim.snapshot()
        assert state.available == 0
        assert state.next_free_in > 0.0


# -- permits, leases, closing --------------------------------------------------------------


async def test_permits_and_leases_have_distinct_ids(store: Stores) -> None:
    lim = store.make(limit=10, per=100.0)
    run = Run(lim)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            run.start(tg, ("poll", i))
            run.start(tg, ("generate", i), GENERATE, promise=10.0 * i)
    admitted = await lim.try_permit()
    assert admitted is not None
    async with admitted as extra_permit:
        pass
    leases = [*run.leases.values(), *await run.promises(2, due_in=5.0)]
    permit_ids = [p.id for p in run.permits.values()] + [extra_permit.id]
    assert all(isinstance(i, str) and i for i in permit_ids)
    assert len(set(permit_ids)) == 7
    assert len({lease.id for lease in leases}) == 5
    assert all(isinstance(lease, Lease) for lease in leases)
    # A lease falls due when it was promised to, on the store's clock (virtual time here).
    assert sorted(run.leases[("generate", i)].due for i in range(3)) == [
        near(run.t0 + t) for t in (0.0, 10.0, 20.0)
    ]
    assert [lease.due for lease in leases[3:]] == [near(anyio.current_time() + 5.0)] * 2
    assert (await lim.promise(-3.0)).due == near(anyio.current_time())  # never in the past
    assert (await lim.snapshot()).reserved == 6


async def test_renewed_leases_keep_counting(store: Stores) -> None:
    lim = store.make(limit=3, per=100.0, lease_ttl=30.0)
    assert lim.renew_every == near(10.0)
    run = Run(lim)
    leases = await run.promises(2, due_in=500.0)
    for t in range(10, 310, 10):  # renewed every renew_every, for ten lease_ttls
        await run.until(float(t))
        await lim.renew()
        assert (await lim.snapshot()).reserved == 2, t
    with anyio.move_on_after(5.0):
        await run.request("generate", GENERATE, promise=1.0)  # 0 + 2 + 1 + 1 > 3
    assert "generate" not in run.admitted
    await run.release(leases)
    assert (await lim.snapshot()).reserved == 0


async def test_closing_gives_back_the_owners_leases(store: Stores) -> None:
    lim = store.make(limit=5, per=100.0)
    run = Run(lim)
    await run.request("video", GENERATE, promise=100.0)
    await run.promises(2, due_in=100.0)
    watcher = store.other_owner(lim)  # someone else sharing the store
    state = await watcher.snapshot()
    assert (state.used, state.reserved) == (1, 3)
    await lim.aclose()
    await lim.aclose()  # twice is harmless
    await lim.release(run.leases["video"])  # so is a release after closing
    state = await watcher.snapshot()
    assert (state.used, state.reserved) == (1, 0)  # the request still counts; promises do not
    later = Run(watcher)
    # 1 used + 0 promised + 1 + 1 <= 5: a submission goes at once.
    assert await later.request("generate", GENERATE, promise=1.0) == near(0.0)
