"""The shared request budget of one API key: a sliding log with priorities and reservations.

Every API request of every client that shares a :class:`SlidingWindowLimiter` passes through
:meth:`~SlidingWindowLimiter.permit`. The limiter guarantees that no rolling window of
``rate_limit.per`` seconds (plus ``margin``) holds more than the limit, *as the server sees it*:
a request's entry is stamped when its answer arrives, which is no earlier than the moment the
server stamped it, so network delay cannot make two windows overlap. A window that holds at
most N requests in every rolling position also holds at most N in any clock-hour bucket, so a
fixed-window server is covered too.

Kinds, in order of priority (see :class:`RequestKind`): ``POLL`` (can finish a video),
``GENERATE`` (starts one; waits until the budget can carry its final poll, which it reserves),
``EXTRA_POLL`` (spends idle budget on latency; never waits, never displaces the others).
A ``GENERATE`` that has waited longer than ``starve_after`` seconds goes before polls.

A 429 counts as spent and stops all sending: until ``Retry-After`` when the server sends one
(and the limit gives up one slot), else until our own window frees enough under a limit
tightened to what this key's other consumers seem to leave us. One slot comes back per
quiet window (see ``_ceiling``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import attrs

from ._ceiling import Ceiling
from ._limits import BudgetState, Limiter, Permit, RateLimit, RequestKind
from ._window import SlidingLog

# The vocabulary lives in ``_limits``; it is re-exported here for the modules that speak of
# budgets as a whole.
__all__ = ["BudgetState", "Limiter", "Permit", "RateLimit", "RequestKind", "SlidingWindowLimiter"]


@attrs.define(eq=False)
class _Waiter:
    kind: RequestKind
    reserve: int
    horizon: float
    since: float
    event: anyio.Event = attrs.Factory(anyio.Event)
    gone: bool = False


class SlidingWindowLimiter:
    """The in-memory budget: one per API key, shared by every client and poller that use it.

    ``margin`` seconds are added to the window (clock drift between us and the server);
    ``starve_after`` bounds how long a submission can be held back by polls.
    """

    def __init__(
        self,
        rate_limit: RateLimit | None = None,
        *,
        margin: float = 2.0,
        starve_after: float | None = None,
    ) -> None:
        self._rate_limit = rate_limit or RateLimit()
        self._window = self._rate_limit.per + margin
        self._starve_after = self._rate_limit.per / 4 if starve_after is None else starve_after
        self._ceiling = Ceiling(self._rate_limit.requests, self._window)
        self._log = SlidingLog(self._window)  # answered requests, stamped at their answer
        self._in_flight = 0
        self._reserved = 0
        # Admission times of GENERATEs and EXTRA_POLLs in the window: the planner's view of
        # recent demand and of what latency has cost.
        self._recent: dict[RequestKind, deque[float]] = {
            RequestKind.GENERATE: deque(),
            RequestKind.EXTRA_POLL: deque(),
        }
        self._polls: deque[_Waiter] = deque()
        self._submissions: deque[_Waiter] = deque()
        self._waiting = {RequestKind.POLL: 0, RequestKind.GENERATE: 0}
        self._blocked_until = -math.inf
        self._rate_limited = 0

    @property
    def rate_limit(self) -> RateLimit:
        """The configured allowance."""
        return self._rate_limit

    def __repr__(self) -> str:
        s = self.state()
        return (
            f"<SlidingWindowLimiter {s.used}/{s.limit} used per {s.window:g}s, "
            f"reserved={s.reserved} waiting={s.waiting_polls}+{s.waiting_generates} "
            f"next_free_in={s.next_free_in:.1f}s 429s={s.rate_limited}>"
        )

    # -- the public interface ------------------------------------------------------------------

    @asynccontextmanager
    async def permit(
        self, kind: RequestKind, *, reserve: int = 0, horizon: float = 0.0
    ) -> AsyncIterator[Permit]:
        """Wait for a slot of ``kind``; send the request inside; leaving stamps the slot.

        Cancellation while waiting takes nothing from the budget.

        Raises:
            ValueError: for ``EXTRA_POLL``, which never waits: use :meth:`try_permit`.
        """
        if kind is RequestKind.EXTRA_POLL:
            raise ValueError("extra polls never wait for budget: use try_permit()")
        await self._acquire(_Waiter(kind, reserve, horizon, anyio.current_time()))
        permit = Permit(kind)
        try:
            yield permit
        finally:
            self._stamp(permit)

    def try_permit(self, kind: RequestKind = RequestKind.EXTRA_POLL) -> _Immediate | None:
        """A permit if a slot is free now, nobody waits, and no reservation is touched.

        The slot is taken when this returns: enter the result at once.
        """
        self._prune()
        if self._waiters_left() or not self._free_for(RequestKind.EXTRA_POLL):
            return None
        self._admit(kind, 0)
        return _Immediate(self, Permit(kind))

    def reserve(self, count: int) -> None:
        """Promise ``count`` more polls; submissions then wait until the budget carries them."""
        self._reserved += count

    def release(self, count: int) -> None:
        """Give back ``count`` promised polls that will not be needed."""
        self._reserved = max(0, self._reserved - count)
        self._wake_head()

    def state(self) -> BudgetState:
        """A snapshot of the budget now."""
        now = self._prune()
        return BudgetState(
            limit=self._ceiling.at(now),
            configured_limit=self._rate_limit.requests,
            window=self._window,
            used=self._used(),
            reserved=self._reserved,
            waiting_polls=self._waiting[RequestKind.POLL],
            waiting_generates=self._waiting[RequestKind.GENERATE],
            generates_in_window=len(self._recent[RequestKind.GENERATE]),
            extra_polls_in_window=len(self._recent[RequestKind.EXTRA_POLL]),
            next_free_in=max(0.0, self._next_free_at(now) - now),
            rate_limited=self._rate_limited,
            blocked_for=max(0.0, self._blocked_until - now),
        )

    # -- admission -----------------------------------------------------------------------------

    def _used(self) -> int:
        return self._in_flight + len(self._log)

    def _prune(self) -> float:
        now = anyio.current_time()
        self._log.prune(now)
        for recent in self._recent.values():
            while recent and recent[0] + self._window <= now:
                recent.popleft()
        return now

    def _free_for(self, kind: RequestKind, reserve: int = 0, horizon: float = 0.0) -> bool:
        now = anyio.current_time()
        if now < self._blocked_until:
            return False
        used = self._used()
        limit = self._ceiling.at(now)
        if used + 1 > limit:
            return False
        if kind is RequestKind.POLL:  # polls are what the promised slots are kept for
            return True
        # Promised polls must fit by the time they fall due (``horizon`` from now, at most):
        # count only what will still be in the window then.
        later = self._in_flight + self._log.count_after(now + horizon)
        return later + self._reserved + 1 + reserve <= limit

    def _next_free_at(self, now: float) -> float:
        """When a poll could next go out, as far as the window alone can tell."""
        excess = self._used() + 1 - self._ceiling.at(now)
        if excess <= 0:
            free_at = now
        elif excess <= len(self._log):  # that many answered entries must leave first
            free_at = min(self._log.expiry(excess), self._ceiling.next_rise(now))
        else:  # only answers still in flight (or a rising limit) can free a slot
            free_at = self._ceiling.next_rise(now)
        return max(self._blocked_until, free_at)

    def _admit(self, kind: RequestKind, reserve: int) -> None:
        self._in_flight += 1
        self._reserved += reserve
        if kind in self._recent:
            self._recent[kind].append(anyio.current_time())

    def _stamp(self, permit: Permit) -> None:
        now = anyio.current_time()
        self._in_flight -= 1
        self._log.add(now)
        if permit.was_rate_limited:
            self._rate_limited += 1
            oldest = self._log.next_expiry()
            seen_for = now - (oldest - self._window) if oldest is not None else 0.0
            self._ceiling.lower(
                now, ours=self._used(), seen_for=seen_for, retry_after=permit.retry_after
            )
            if permit.retry_after is not None:
                self._blocked_until = max(self._blocked_until, now + permit.retry_after)
        self._wake_head()

    def _waiters_left(self) -> bool:
        return self._head() is not None

    def _head(self) -> _Waiter | None:
        """Who is served next: polls first, unless a submission has starved for too long.

        A starved submission goes first only once it can go: until then the polls ahead of
        it are what end videos and give back the promised slots it is waiting for, so
        holding them back would deadlock.
        """
        for queue in (self._polls, self._submissions):
            while queue and queue[0].gone:
                queue.popleft()
        if not self._submissions:
            return self._polls[0] if self._polls else None
        first = self._submissions[0]
        if not self._polls or (
            anyio.current_time() - first.since >= self._starve_after
            and self._free_for(first.kind, first.reserve, first.horizon)
        ):
            return first
        return self._polls[0]

    def _wake_head(self) -> None:
        head = self._head()
        if head is not None:
            head.event.set()

    async def _acquire(self, waiter: _Waiter) -> None:
        # Even a free slot is no reason to go on for a task already cancelled.
        await anyio.lowlevel.checkpoint_if_cancelled()
        kind, reserve, horizon = waiter.kind, waiter.reserve, waiter.horizon
        now = self._prune()
        if not self._waiters_left() and self._free_for(kind, reserve, horizon):
            self._admit(kind, reserve)
            return
        (self._polls if kind is RequestKind.POLL else self._submissions).append(waiter)
        self._waiting[kind] += 1
        try:
            while True:
                now = self._prune()
                if self._head() is waiter:
                    if self._free_for(kind, reserve, horizon):
                        waiter.gone = True
                        self._admit(kind, reserve)
                        return
                    # Only the head watches the clock; the rest sleep until they are head.
                    waiter.event = anyio.Event()
                    with anyio.move_on_after(max(0.0, self._next_wake(now, waiter) - now)):
                        await waiter.event.wait()
                else:
                    # The head can change with time alone (a submission starts to starve):
                    # make sure whoever is head now is awake before going to sleep.
                    self._wake_head()
                    waiter.event = anyio.Event()
                    await waiter.event.wait()
        finally:
            waiter.gone = True
            self._waiting[kind] -= 1
            self._wake_head()  # admitted or cancelled: the next in line looks again

    def _next_wake(self, now: float, waiter: _Waiter) -> float:
        """When the head's answer may change without anyone telling it."""
        expiry = self._log.next_expiry()
        times = [
            self._blocked_until,
            math.inf if expiry is None else expiry,
            self._ceiling.next_rise(now),
        ]
        if waiter.horizon > 0:  # its promised polls fit once now + horizon passes an expiry
            later = self._log.first_expiry_after(now + waiter.horizon)
            if later is not None:
                times.append(later - waiter.horizon)
        if self._submissions and self._polls:
            times.append(self._submissions[0].since + self._starve_after)
        return min((t for t in times if t > now), default=math.inf)


class _Immediate:
    """The context manager of :meth:`SlidingWindowLimiter.try_permit` (already admitted)."""

    __slots__ = ("_limiter", "_permit")

    def __init__(self, limiter: SlidingWindowLimiter, permit: Permit) -> None:
        self._limiter = limiter
        self._permit = permit

    async def __aenter__(self) -> Permit:
        return self._permit

    async def __aexit__(self, *exc: object) -> None:
        self._limiter._stamp(self._permit)
