"""The shared budget (SlidingWindowLimiter), on asyncio and trio, in virtual time.

The tests send "requests" through the limiter and look only at what a caller can see: when each
one was admitted and answered (``anyio.current_time()``), how many there were, and
``state()``. Nothing inside the limiter is patched or read.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import math
import signal
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sora2_async._budget import (
    BudgetState,
    Limiter,
    Permit,
    RateLimit,
    RequestKind,
    SlidingWindowLimiter,
)

POLL, GENERATE, EXTRA = RequestKind.POLL, RequestKind.GENERATE, RequestKind.EXTRA_POLL

# An entry may leave its window up to 1 µs early (the log's allowance for clocks that round),
# and looptime keeps microseconds: times are compared to this precision.
EPS = 1e-5

HYPOTHESIS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def limiter(
    limit: int = 3, per: float = 100.0, *, margin: float = 0.0, starve_after: float | None = None
) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(RateLimit(limit, per=per), margin=margin, starve_after=starve_after)


def near(value: float) -> Any:
    return pytest.approx(value, abs=EPS)


@contextlib.contextmanager
def real_time_limit(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging) if virtual time stops moving and a loop spins for real."""

    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} real seconds")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Run:
    """A scripted run against one limiter: who was admitted when, in virtual seconds from t0."""

    def __init__(self, lim: SlidingWindowLimiter) -> None:
        self.lim = lim
        self.t0 = anyio.current_time()
        self.admitted: dict[object, float] = {}
        self.answered: dict[object, float] = {}
        self.order: list[object] = []

    def now(self) -> float:
        return anyio.current_time() - self.t0

    async def until(self, t: float) -> None:
        await anyio.sleep(max(0.0, t - self.now()))

    async def request(
        self,
        name: object,
        kind: RequestKind = POLL,
        *,
        at: float | None = None,
        took: float = 0.0,
        reserve: int = 0,
        horizon: float = 0.0,
        refused: bool = False,
        retry_after: float | None = None,
    ) -> float:
        """One request through the limiter; returns when it was admitted."""
        if at is not None:
            await self.until(at)
        async with self.lim.permit(kind, reserve=reserve, horizon=horizon) as permit:
            assert isinstance(permit, Permit)
            assert permit.kind is kind
            self.admitted[name] = self.now()
            self.order.append(name)
            if took:
                await anyio.sleep(took)
            if refused:
                permit.rate_limited(retry_after)
        self.answered[name] = self.now()
        return self.admitted[name]

    def start(self, tg: TaskGroup, name: object, *args: Any, **kwargs: Any) -> None:
        tg.start_soon(functools.partial(self.request, name, *args, **kwargs))

    def start_cancellable(
        self, tg: TaskGroup, name: object, *args: Any, **kwargs: Any
    ) -> anyio.CancelScope:
        """Like :meth:`start`, in a cancel scope of its own (returned)."""
        scope = anyio.CancelScope()

        async def request() -> None:
            with scope:
                await self.request(name, *args, **kwargs)

        tg.start_soon(request)
        return scope


def max_occupancy(spans: list[tuple[float, float]], window: float) -> int:
    """Most requests holding a slot at once: each holds one from admission until a window
    after its answer (less the boundary allowance). A sweep over those intervals."""
    events = sorted(
        [(admitted, 1) for admitted, _ in spans]
        + [(answered + window - EPS, -1) for _, answered in spans]
    )  # at one instant, leaving (-1) sorts before arriving (+1)
    most = held = 0
    for _, change in events:
        held += change
        most = max(most, held)
    return most


def max_in_any_window(stamps: list[float], window: float) -> int:
    """Most answers in any rolling window: the server's view of the same requests."""
    stamps = sorted(stamps)
    return max(bisect.bisect_left(stamps, s + window - EPS) - i for i, s in enumerate(stamps))


# -- the window ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_rolling_window_ever_holds_more_than_the_limit() -> None:
    lim = limiter(limit=20, per=100.0, margin=2.0)
    window = 102.0
    spans: list[tuple[float, float]] = []
    skipped = 0

    async def one(i: int) -> None:
        nonlocal skipped
        await anyio.sleep((i * 7919) % 300 / 10)  # arrivals spread over 30 s
        took = (i * 31) % 50 / 2  # answers take 0 to 24.5 s
        if i % 5 == 4:  # an extra poll: only if a slot is free right now, else give up
            admitted = lim.try_permit()
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

    with anyio.fail_after(100 * window):
        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(one, i)

    assert len(spans) + skipped == 500
    assert len(spans) > 400
    assert max_occupancy(spans, window) == 20  # never more, and the budget was used in full
    assert max_in_any_window([answered for _, answered in spans], window) == 20
    assert max_in_any_window([admitted for admitted, _ in spans], window) <= 20


@pytest.mark.anyio
@HYPOTHESIS
@given(
    limit=st.integers(1, 5),
    per=st.floats(1.0, 100.0),
    margin=st.floats(0.0, 3.0),
    requests=st.lists(
        st.tuples(
            st.floats(0.0, 60.0),  # arrives
            st.floats(0.0, 30.0),  # its answer takes
            st.sampled_from(["poll", "generate", "extra", "429", "429 retry-after"]),
        ),
        min_size=1,
        max_size=25,
    ),
)
async def test_the_window_holds_for_any_mix_of_requests(
    limit: int, per: float, margin: float, requests: list[tuple[float, float, str]]
) -> None:
    lim = limiter(limit, per, margin=margin)
    window = per + margin
    spans: list[tuple[float, float]] = []
    must_finish = 0

    async def one(arrives: float, took: float, what: str) -> None:
        nonlocal must_finish
        await anyio.sleep(arrives)
        if what == "extra":
            admitted = lim.try_permit()
            if admitted is None:
                return
            context: Any = admitted
        else:
            must_finish += 1
            context = lim.permit(GENERATE if what == "generate" else POLL)
        async with context as permit:
            start = anyio.current_time()
            await anyio.sleep(took)
            if what.startswith("429"):
                permit.rate_limited(took + 1.0 if what.endswith("after") else None)
        spans.append((start, anyio.current_time()))

    # Even at one request a window, with every 429's wait on top, all of it ends in time.
    bound = 60.0 + sum(took + window + took + 1.0 for _, took, _ in requests) + 1.0
    with anyio.fail_after(bound):
        async with anyio.create_task_group() as tg:
            for arrives, took, what in requests:
                tg.start_soon(one, arrives, took, what)

    assert len(spans) >= must_finish
    assert max_occupancy(spans, window) <= limit


@pytest.mark.anyio
@HYPOTHESIS
@given(
    limit=st.integers(1, 4),
    per=st.floats(0.5, 50.0),
    margin=st.floats(0.0, 2.5),
    gaps=st.lists(st.floats(0.01, 20.0), min_size=1, max_size=25),
    tooks=st.lists(st.floats(0.0, 15.0), min_size=25, max_size=25),
)
async def test_polls_are_admitted_exactly_when_a_slot_frees(
    limit: int, per: float, margin: float, gaps: list[float], tooks: list[float]
) -> None:
    """First come, first served, at the earliest moment the window allows, not a tick later.

    For polls alone the right answer is known: poll i goes at the latest of its arrival, the
    admission of poll i-1, and the moment the ``limit``-th latest of the earlier slots frees
    (a slot frees a window after its answer).
    """
    lim = limiter(limit, per, margin=margin)
    window = per + margin
    run = Run(lim)
    arrivals: list[float] = []
    t = 0.0
    for gap in gaps:
        t += gap
        arrivals.append(t)

    with real_time_limit(10), anyio.fail_after(sum(gaps) + len(gaps) * (window + 15.0) + 1):
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


@pytest.mark.anyio
async def test_a_slot_is_held_until_a_window_after_the_answer() -> None:
    """Stamped at the answer: a request that takes 30 s holds its slot for 30 s + window."""
    lim = limiter(limit=1, per=100.0)
    run = Run(lim)
    async with anyio.create_task_group() as tg:
        run.start(tg, "slow", took=30.0)
        run.start(tg, "next", at=1.0)
        await run.until(31.0)
        state = lim.state()
        assert state.used == 1
        assert state.next_free_in == near(99.0)
    assert run.admitted["next"] == near(130.0)


@pytest.mark.anyio
async def test_an_entry_frees_at_exactly_its_stamp_plus_the_window() -> None:
    lim = limiter(limit=1, per=3600.0, margin=2.0)
    run = Run(lim)
    await run.request("first", at=0.1)
    await run.until(3601.1)
    assert lim.state().next_free_in == near(1.0)
    assert lim.try_permit() is None
    assert await run.request("second") == near(3602.1)  # not a tick later
    # ... and its own slot frees a window after that, for whoever asks at that moment.
    await run.until(3602.1 + 3602.0)
    admitted = lim.try_permit()
    assert admitted is not None
    async with admitted:
        pass


@pytest.mark.anyio
async def test_virtual_time_loops_at_awkward_windows_move_on() -> None:
    """A window no float can hold: each wake-up sees its entries gone; nothing spins."""
    per, margin = 1 / 3, 1e-4
    window = per + margin
    lim = limiter(limit=2, per=per, margin=margin)
    run = Run(lim)
    with real_time_limit(10), anyio.fail_after(200 * window):
        for i in range(300):
            await run.request(i)
    for i in range(2, 300):  # each the moment the one two before it leaves
        assert run.admitted[i] == near(run.answered[i - 2] + window)
    assert run.now() == pytest.approx(149 * window, rel=1e-5)  # looptime rounds each wake


# -- priorities and starvation ---------------------------------------------------------------


@pytest.mark.anyio
async def test_polls_go_before_submissions() -> None:
    lim = limiter(limit=1, per=100.0, starve_after=1e9)
    run = Run(lim)
    await run.request("fill")
    async with anyio.create_task_group() as tg:
        run.start(tg, "g1", GENERATE, at=1.0)
        run.start(tg, "g2", GENERATE, at=2.0)
        run.start(tg, "p1", POLL, at=3.0)
        run.start(tg, "p2", POLL, at=4.0)
        await run.until(5.0)
        state = lim.state()
        assert (state.waiting_polls, state.waiting_generates) == (2, 2)
    assert run.order == ["fill", "p1", "p2", "g1", "g2"]
    assert [run.admitted[n] for n in run.order[1:]] == [near(t) for t in (100, 200, 300, 400)]


@pytest.mark.anyio
async def test_a_starved_submission_goes_before_newer_polls() -> None:
    """Polls keep coming, one a second; the submission gets the first slot after it has
    waited ``starve_after``, ahead of the polls that are still waiting."""
    lim = limiter(limit=1, per=10.0, starve_after=25.0)
    run = Run(lim)
    await run.request("fill")  # frees at 10
    with anyio.fail_after(1000):
        async with anyio.create_task_group() as tg:
            run.start(tg, "generate", GENERATE, at=0.5)
            for i in range(1, 36):
                run.start(tg, i, POLL, at=float(i))
    # Slots free at 10, 20, 30, ...; it has starved from 25.5 on: the slot at 30 is its.
    assert run.order[:4] == ["fill", 1, 2, "generate"]
    assert run.admitted["generate"] == near(30.0)
    assert run.order[4:] == list(range(3, 36))  # the polls keep their order after it


@pytest.mark.anyio
async def test_without_starvation_a_submission_waits_for_every_poll() -> None:
    """The same run with patience beyond it: the guard above is what let it through."""
    lim = limiter(limit=1, per=10.0, starve_after=1e6)
    run = Run(lim)
    await run.request("fill")
    with anyio.fail_after(1000):
        async with anyio.create_task_group() as tg:
            run.start(tg, "generate", GENERATE, at=0.5)
            for i in range(1, 36):
                run.start(tg, i, POLL, at=float(i))
    assert run.order[-1] == "generate"


@pytest.mark.anyio
async def test_a_starved_submission_cannot_block_the_polls_that_would_free_it() -> None:
    lim = limiter(limit=10, per=100.0, starve_after=10.0)
    lim.reserve(9)  # nine videos in flight (say, taken over by as_completed)
    run = Run(lim)
    with anyio.fail_after(1000):
        async with anyio.create_task_group() as tg:
            # Its own promised poll does not fit (0 + 9 + 1 + 1 > 10) until a video ends.
            run.start(tg, "generate", GENERATE, reserve=1)
            run.start(tg, "early poll", at=5.0)
            run.start(tg, "late poll", at=20.0)  # the generate has starved by now
            await run.until(30.0)
            lim.release(3)  # polls found three videos done: 2 + 6 + 1 + 1 <= 10
    assert run.admitted["early poll"] == near(5.0)
    assert run.admitted["late poll"] == near(20.0)  # 2 of 10 used: it must not wait
    assert run.admitted["generate"] == near(30.0)


# -- reservations and horizons ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_submission_waits_until_its_promised_polls_fit() -> None:
    lim = limiter(limit=5, per=100.0)
    run = Run(lim)
    lim.reserve(2)
    assert lim.state().reserved == 2
    assert await run.request("g1", GENERATE, reserve=1) == near(0.0)  # 0 + 2 + 1 + 1 <= 5
    assert lim.state().reserved == 3
    async with anyio.create_task_group() as tg:
        run.start(tg, "g2", GENERATE, reserve=1, at=1.0)  # 1 + 3 + 1 + 1 > 5: waits
        await run.until(5.0)
        assert lim.state().waiting_generates == 1
        # A poll ignores the promises (they are kept for polls) and passes the waiting one.
        assert await run.request("poll") == near(5.0)
        await run.until(10.0)
        lim.release(1)  # 2 + 2 + 1 + 1 > 5: still waits
        await run.until(20.0)
        assert "g2" not in run.admitted
        lim.release(1)  # 2 + 1 + 1 + 1 <= 5: goes now
    assert run.admitted["g2"] == near(20.0)
    state = lim.state()
    assert (state.reserved, state.used, state.waiting_generates) == (2, 3, 0)
    lim.release(10)
    assert lim.state().reserved == 0  # never below nothing


@pytest.mark.anyio
async def test_reserve_holds_back_submissions_but_not_polls() -> None:
    lim = limiter(limit=3, per=100.0)
    run = Run(lim)
    lim.reserve(2)
    with anyio.move_on_after(50):
        await run.request("generate", GENERATE)  # 0 used + 2 promised + 1 <= 3
    lim.reserve(1)
    with anyio.move_on_after(50):
        await run.request("second generate", GENERATE)  # 1 + 3 + 1 > 3: waits
    assert "generate" in run.admitted
    assert "second generate" not in run.admitted
    assert await run.request("poll") == near(50.0)
    assert await run.request("poll 2") == near(50.0)
    assert lim.state().used == 3


@pytest.mark.anyio
async def test_a_horizon_counts_only_what_is_still_in_the_window_when_the_polls_fall_due() -> None:
    lim = limiter(limit=3, per=100.0)
    run = Run(lim)
    await run.request("a")
    await run.request("b")  # both leave at 100
    await run.until(10.0)
    # One slot is free now; the promised poll fits only once "a" and "b" have left.
    with anyio.move_on_after(1.0):
        await run.request("due at 99", GENERATE, reserve=1, horizon=89.0)
    assert "due at 99" not in run.admitted
    assert await run.request("due at 106", GENERATE, reserve=1, horizon=95.0) == near(11.0)
    assert lim.state().reserved == 1


@pytest.mark.anyio
async def test_a_horizon_does_not_make_a_full_window_any_less_full() -> None:
    lim = limiter(limit=2, per=100.0)
    run = Run(lim)
    await run.request("a")
    await run.request("b")
    # Everything is free long before the polls fall due, but no slot is free for the submission.
    assert await run.request("generate", GENERATE, reserve=1, horizon=1000.0) == near(100.0)


@pytest.mark.anyio
async def test_a_horizon_submission_goes_as_soon_as_its_polls_would_fit() -> None:
    lim = limiter(limit=3, per=100.0)
    run = Run(lim)
    await run.request("a")
    await run.request("b")  # both leave at 100
    # At 10, 10 + 50 < 100: the promised poll would not fit. From 50 on, it would.
    admitted = await run.request("generate", GENERATE, reserve=1, horizon=50.0, at=10.0)
    assert admitted == near(50.0)  # it goes at 100, when "a" and "b" leave


# -- extra polls ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_extra_poll_takes_a_free_slot_and_holds_it_until_a_window_after_it_ends() -> None:
    lim = limiter(limit=1, per=100.0)
    run = Run(lim)
    admitted = lim.try_permit()
    assert admitted is not None
    async with admitted as permit:
        assert isinstance(permit, Permit)
        assert permit.kind is EXTRA
        assert lim.state().used == 1
        assert lim.try_permit() is None
        await anyio.sleep(30.0)
    state = lim.state()
    assert (state.used, state.extra_polls_in_window) == (1, 1)
    await run.until(129.9)
    assert lim.try_permit() is None
    await run.until(130.0)
    again = lim.try_permit()
    assert again is not None
    async with again:
        pass


@pytest.mark.anyio
async def test_an_extra_poll_never_touches_the_promised_polls() -> None:
    lim = limiter(limit=3, per=100.0)
    lim.reserve(2)
    first = lim.try_permit()  # 0 used + 2 promised + 1 <= 3
    assert first is not None
    async with first:
        pass
    assert lim.try_permit() is None  # 1 + 2 + 1 > 3: the free slot is promised...
    run = Run(lim)
    assert await run.request("poll") == near(0.0)  # ... to a poll, which may use it


@pytest.mark.anyio
async def test_an_extra_poll_gives_way_to_anyone_waiting() -> None:
    lim = limiter(limit=3, per=100.0)
    lim.reserve(2)
    run = Run(lim)
    async with anyio.create_task_group() as tg:
        run.start(tg, "generate", GENERATE, reserve=1)  # 0 + 2 + 1 + 1 > 3: waits
        await run.until(1.0)
        state = lim.state()
        assert state.waiting_generates == 1
        assert state.available == 1  # a slot the extra poll could use, if nobody waited
        assert lim.try_permit() is None
        lim.release(1)
    assert run.admitted["generate"] == near(1.0)


@pytest.mark.anyio
async def test_an_extra_poll_never_takes_the_slot_a_waiter_is_woken_for() -> None:
    lim = limiter(limit=1, per=100.0)
    run = Run(lim)
    await run.request("fill")
    extras: list[object] = []
    async with anyio.create_task_group() as tg:
        run.start(tg, "poll", at=1.0)
        await run.until(100.0)  # the moment the slot frees, whoever runs first
        extras.append(lim.try_permit())
    assert extras == [None]
    assert run.admitted["poll"] == near(100.0)


# -- cancellation --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_cancelled_waiter_takes_nothing() -> None:
    lim = limiter(limit=1, per=100.0)
    run = Run(lim)
    await run.request("fill")
    before = lim.state()
    with anyio.move_on_after(5.0) as scope:
        await run.request("poll")
    assert scope.cancelled_caught
    with anyio.move_on_after(5.0) as scope:
        await run.request("generate", GENERATE, reserve=3)
    assert scope.cancelled_caught
    after = lim.state()
    assert (after.used, after.reserved, after.waiting_polls, after.waiting_generates) == (
        before.used,
        before.reserved,
        0,
        0,
    )
    assert after.generates_in_window == 0
    assert await run.request("later") == near(100.0)


@pytest.mark.anyio
async def test_cancelling_the_head_of_the_queue_lets_the_next_one_in_at_once() -> None:
    lim = limiter(limit=3, per=100.0)
    lim.reserve(1)
    run = Run(lim)
    async with anyio.create_task_group() as tg:
        big = run.start_cancellable(tg, "big", GENERATE, reserve=2)  # 0 + 1 + 1 + 2 > 3
        run.start(tg, "small", GENERATE, at=1.0)  # it would fit, but waits its turn
        await run.until(5.0)
        assert "small" not in run.admitted
        big.cancel()
    assert "big" not in run.admitted
    assert run.admitted["small"] == near(5.0)


@pytest.mark.anyio
async def test_a_cancelled_waiter_behind_others_changes_nobodys_turn() -> None:
    lim = limiter(limit=1, per=100.0)
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


@pytest.mark.anyio
async def test_a_429_counts_as_spent_and_stops_everyone_until_retry_after() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True, retry_after=250.0)
    state = lim.state()
    assert state.used == 1
    assert state.rate_limited == 1
    assert state.blocked_for == near(250.0)
    assert (state.limit, state.configured_limit) == (9, 10)  # trusted: it costs one slot
    async with anyio.create_task_group() as tg:
        run.start(tg, "generate", GENERATE, at=1.0)
        run.start(tg, "poll", at=2.0)
        await run.until(150.0)  # the refused request has left the window; the block has not
        state = lim.state()
        assert (state.used, state.blocked_for) == (0, near(100.0))
        assert state.next_free_in == near(100.0)
        assert lim.try_permit() is None
    assert run.admitted["poll"] == near(250.0)
    assert run.admitted["generate"] >= 250.0 - EPS
    assert lim.state().blocked_for == 0.0


@pytest.mark.anyio
async def test_without_retry_after_a_429_holds_everyone_until_the_window_has_room() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True)
    assert lim.state().blocked_for == 0.0
    assert await run.request("poll", at=1.0) == near(100.0)  # the tightened limit's slot


async def two_refused_in_a_row(run: Run) -> None:
    """Limit 10 per 100 s. Eight answered at 0..7 s; two sent together at 95 come back 429."""
    for i in range(8):
        await run.request(i, at=float(i))
    async with anyio.create_task_group() as tg:
        run.start(tg, "refused 1", at=95.0, took=1.0, refused=True)
        run.start(tg, "refused 2", at=95.0, took=2.0, refused=True)


@pytest.mark.anyio
async def test_a_429_tightens_to_what_the_other_consumers_leave_at_least_one_slot_each() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    async with anyio.create_task_group() as tg:
        tg.start_soon(two_refused_in_a_row, run)
        await run.until(96.5)
        # The first 429 (at 96): the server's window was full while ours held 9 answered and
        # 1 in flight, so others held at least 1 in the 96 s our log covers: 1.04 a window
        # at that pace. 10 - 1.04, rounded down, less one: 7.
        assert lim.state().limit == 7
    # The second (at 97): the same estimate (7), but each 429 takes at least a slot: 6.
    state = lim.state()
    assert (state.limit, state.configured_limit, state.rate_limited) == (6, 10, 2)
    assert state.used == 10  # both refused ones count as spent


@pytest.mark.anyio
async def test_the_tightened_limit_holds_back_until_the_window_has_room() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    await two_refused_in_a_row(run)
    at_97 = lim.state()
    assert (at_97.used, at_97.limit) == (10, 6)
    # Five have to leave (at 100..104) before a sixth fits under 6.
    assert await run.request("poll") == near(104.0)


@pytest.mark.anyio
async def test_the_limit_comes_back_one_slot_per_quiet_window() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    await two_refused_in_a_row(run)  # the last 429 at 97: limit 6
    # Above half the configured limit, a slot comes back each full window after the 429.
    for at, limit in [(196.0, 6), (198.0, 7), (296.0, 7), (298.0, 8), (396.0, 8), (398.0, 9)]:
        await run.until(at)
        assert lim.state().limit == limit, at
    for _ in range(4):
        await run.until(run.now() + 100.5)
        lim.state()
    assert lim.state().limit == 10  # all the way back, and no further


@pytest.mark.anyio
async def test_the_limit_comes_back_even_when_nobody_looks() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True)
    assert lim.state().limit == 1  # the very first request refused: others hold it all
    await run.until(350.0)  # three quiet windows, nobody asking
    # Below half the configured limit it doubles each window (1, 2, 4, 8), so a key that
    # was busy for a while is not starved for days; then one slot a window.
    assert lim.state().limit == 8
    await run.until(450.0)
    assert lim.state().limit == 9


@pytest.mark.anyio
async def test_a_429_extrapolates_the_others_over_the_span_our_log_covers() -> None:
    lim = limiter(limit=100, per=3600.0)
    run = Run(lim)
    for i in range(72):
        await run.request(i, at=40.0 * i)  # the last at 2840
    await run.request("refused", at=2900.0, refused=True)
    # Others took at least 100 - 72 = 28 in the 2900 s our log covers: 34.76 a window at that
    # pace. 100 - 34.76, rounded down, less one: 64 (more than half of our 73).
    assert lim.state().limit == 64


@pytest.mark.anyio
async def test_a_429_never_leaves_less_than_half_of_what_we_had() -> None:
    lim = limiter(limit=100, per=3600.0)
    run = Run(lim)
    for i in range(60):
        await run.request(i, at=float(i))
    await run.request("refused", at=60.0, refused=True)
    # Others took 40 in a minute (counted as 5 minutes, a twelfth of the window): at that pace
    # nothing would be left for us. Half of our 61, though, is kept.
    assert lim.state().limit == 30


# -- state, repr, sharing ------------------------------------------------------------------


@pytest.mark.anyio
async def test_state_and_repr_show_the_live_budget() -> None:
    lim = limiter(limit=5, per=100.0, margin=2.0)
    assert isinstance(lim, Limiter)
    assert lim.rate_limit == RateLimit(5, per=100.0)
    fresh = lim.state()
    assert fresh == BudgetState(
        limit=5,
        configured_limit=5,
        window=102.0,
        used=0,
        reserved=0,
        waiting_polls=0,
        waiting_generates=0,
        generates_in_window=0,
        extra_polls_in_window=0,
        next_free_in=0.0,
        rate_limited=0,
        blocked_for=0.0,
    )
    assert fresh.available == 5
    assert repr(lim) == (
        "<SlidingWindowLimiter 0/5 used per 102s, reserved=0 waiting=0+0 next_free_in=0.0s 429s=0>"
    )

    run = Run(lim)
    async with anyio.create_task_group() as tg:
        run.start(tg, "video", GENERATE, reserve=2, took=10.0)  # in flight until 10
        await run.until(1.0)
        state = lim.state()
        assert (state.used, state.reserved, state.generates_in_window) == (1, 2, 1)
        extra = lim.try_permit()
        assert extra is not None
        async with extra:
            pass
        for i in range(3):
            await run.request(i, at=2.0 + i)  # 2, 3, 4: the window is full
        run.start(tg, "waiting generate", GENERATE, reserve=1, at=5.0)
        run.start(tg, "waiting poll", at=6.0)
        await run.until(7.0)
        state = lim.state()
        assert state == BudgetState(
            limit=5,
            configured_limit=5,
            window=102.0,
            used=5,
            reserved=2,
            waiting_polls=1,
            waiting_generates=1,
            generates_in_window=1,
            extra_polls_in_window=1,
            next_free_in=near(102.0 + 1.0 - 7.0),  # the extra poll, answered at 1
            rate_limited=0,
            blocked_for=0.0,
        )
        assert state.available == 0
        assert repr(lim) == (
            "<SlidingWindowLimiter 5/5 used per 102s, reserved=2 waiting=1+1 "
            "next_free_in=96.0s 429s=0>"
        )
    # At 103 the extra poll's slot goes to the waiting poll; the submission waits on.
    assert run.admitted["waiting poll"] == near(103.0)
    assert run.admitted["waiting generate"] > 103.0


@pytest.mark.anyio
async def test_state_counts_what_was_spent_in_the_window_only() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    await run.request("generate", GENERATE)
    extra = lim.try_permit()
    assert extra is not None
    async with extra:
        pass
    await run.request("poll", at=50.0)
    state = lim.state()
    assert (state.used, state.generates_in_window, state.extra_polls_in_window) == (3, 1, 1)
    await run.until(100.0)
    state = lim.state()
    assert (state.used, state.generates_in_window, state.extra_polls_in_window) == (1, 0, 0)


@pytest.mark.anyio
async def test_a_429_shows_in_state_and_repr() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True, retry_after=30.0)
    state = lim.state()
    assert (state.rate_limited, state.blocked_for, state.next_free_in) == (1, 30.0, 30.0)
    assert "1/9 used" in repr(lim)
    assert "next_free_in=30.0s 429s=1>" in repr(lim)
    await anyio.sleep(30.0)
    state = lim.state()
    assert (state.rate_limited, state.blocked_for, state.next_free_in) == (1, 0.0, 0.0)


@pytest.mark.anyio
async def test_each_429_with_retry_after_costs_one_slot_and_the_latest_wait_holds() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    async with anyio.create_task_group() as tg:  # three sent together, all refused
        run.start(tg, 1, took=1.0, refused=True, retry_after=5.0)  # blocked until 6
        run.start(tg, 2, took=2.0, refused=True, retry_after=60.0)  # ... until 62
        run.start(tg, 3, took=3.0, refused=True, retry_after=40.0)  # (until 43: no sooner)
        run.start(tg, "poll", at=4.0)
    assert lim.state().limit == 7
    assert run.admitted["poll"] == near(62.0)


@pytest.mark.anyio
async def test_holders_of_one_limiter_share_its_budget() -> None:
    """Two clients (each with its own pollers) given the same limiter spend one budget."""
    shared = limiter(limit=4, per=100.0)
    first, second = Run(shared), Run(shared)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            first.start(tg, i, at=1.0 + i)
            second.start(tg, i, at=1.5 + i)
    admitted = sorted([*first.admitted.values(), *second.admitted.values()])
    assert admitted[:4] == [near(t) for t in (1.0, 1.5, 2.0, 2.5)]
    assert admitted[4:] == [near(101.0), near(101.5)]


# -- bugs in what state() says ---------------------------------------------------------------


@pytest.mark.anyio
async def test_next_free_in_says_when_the_next_request_can_go_after_a_429() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    await two_refused_in_a_row(run)
    said = lim.state().next_free_in  # 3.0: the first entry leaves at 100
    assert await run.request("poll") - 97.0 == near(said)  # it goes at 104


@pytest.mark.anyio
async def test_next_free_in_is_not_zero_while_every_slot_is_in_flight() -> None:
    lim = limiter(limit=1, per=100.0)
    async with lim.permit(POLL):
        state = lim.state()
        assert state.available == 0
        assert state.next_free_in > 0.0


# -- misuse --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_waiting_extra_poll_permit_leaves_the_limiter_usable() -> None:
    lim = limiter(limit=1, per=100.0)
    run = Run(lim)
    await run.request("fill")
    with contextlib.suppress(Exception), anyio.move_on_after(10.0):
        async with lim.permit(EXTRA):  # waits, or is refused: either is fine
            pass
    with anyio.move_on_after(1000.0):
        await run.request("poll")
    assert run.admitted.get("poll") == near(100.0)


def test_rate_limit_defaults_to_the_apis_allowance() -> None:
    assert RateLimit() == RateLimit(100, per=3600.0)
    assert SlidingWindowLimiter().rate_limit == RateLimit()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"requests": 0}, "requests"),
        ({"requests": -5}, "requests"),
        ({"per": 0.0}, "per"),
        ({"per": -1.0}, "per"),
        ({"per": math.nan}, "per"),
    ],
)
def test_rate_limit_refuses_what_admits_nothing(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be positive"):
        RateLimit(**kwargs)  # type: ignore[arg-type]


# -- load ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_thousand_waiters_finish_in_bounded_time_in_priority_order() -> None:
    per, margin = 3600.0, 2.0
    window = per + margin
    lim = limiter(limit=100, per=per, margin=margin, starve_after=1e9)
    run = Run(lim)
    for i in range(100):
        await run.request(("fill", i))  # the window is full until `window`
    started = time.perf_counter()
    with real_time_limit(10), anyio.fail_after(21 * window):
        async with anyio.create_task_group() as tg:
            for i in range(2000):
                kind = POLL if i % 2 else GENERATE
                run.start(tg, (kind, i), kind, at=1.0 + i / 1000)
    elapsed = time.perf_counter() - started

    served = run.order[100:]
    polls = [(POLL, i) for i in range(1, 2000, 2)]
    generates = [(GENERATE, i) for i in range(0, 2000, 2)]
    assert served == polls + generates  # polls first, each kind first come, first served
    for j, name in enumerate(served):  # a hundred per window, each the moment it frees
        assert run.admitted[name] == near((1 + j // 100) * window), name
    assert run.now() == near(20 * window)
    assert elapsed < 3.0, f"{elapsed:.2f} s of real time for 2,000 waiters"
