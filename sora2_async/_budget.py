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
quiet window.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, runtime_checkable

import anyio
import attrs

from ._window import SlidingLog

__all__ = ["BudgetState", "Limiter", "Permit", "RateLimit", "RequestKind", "SlidingWindowLimiter"]


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen
class RateLimit:
    """A key's allowance: ``requests`` per ``per`` seconds (the API's default: 100 per hour)."""

    requests: int = attrs.field(default=100, validator=_positive)
    per: float = attrs.field(default=3600.0, validator=_positive)


class RequestKind(enum.IntEnum):
    """What a request is for; lower values are served first."""

    POLL = 0
    GENERATE = 1
    EXTRA_POLL = 2


@attrs.frozen
class BudgetState:
    """A snapshot of a limiter, for progress displays and for the poll planner."""

    limit: int  #: the limit in force now (tightened after 429s)
    configured_limit: int  #: the limit the limiter was made with
    window: float  #: seconds a request counts for, margin included
    used: int  #: requests in the window, in flight ones included
    reserved: int  #: final polls promised to running videos
    waiting_polls: int
    waiting_generates: int
    generates_in_window: int  #: recent demand for new videos
    extra_polls_in_window: int  #: what was spent on latency lately
    next_free_in: float  #: seconds until a slot frees (0.0 when one is free now)
    rate_limited: int  #: 429s seen in all
    blocked_for: float  #: seconds left of a server's Retry-After

    @property
    def available(self) -> int:
        """Slots free now that nobody has a claim on."""
        return max(0, self.limit - self.used - self.reserved)


class Permit:
    """One admitted request. Report a 429 with :meth:`rate_limited` before the permit ends."""

    __slots__ = ("_limiter", "kind", "retry_after", "was_rate_limited")

    def __init__(self, limiter: SlidingWindowLimiter, kind: RequestKind) -> None:
        self._limiter = limiter
        self.kind = kind
        self.was_rate_limited = False
        self.retry_after: float | None = None

    def rate_limited(self, retry_after: float | None = None) -> None:
        """Tell the limiter the server answered 429 (with its ``Retry-After``, if any)."""
        self.was_rate_limited = True
        self.retry_after = retry_after


@runtime_checkable
class Limiter(Protocol):
    """What a budget shared by clients must offer (the in-memory one, or a distributed one)."""

    @property
    def rate_limit(self) -> RateLimit:
        """The configured allowance."""

    def permit(
        self, kind: RequestKind, *, reserve: int = 0, horizon: float = 0.0
    ) -> AbstractAsyncContextManager[Permit]:
        """Wait for a slot; the request is sent inside the context; its end stamps the slot.

        ``reserve``: polls a ``GENERATE`` promises its video, made on admission; it waits
        until the budget can carry them ``horizon`` seconds from now, when they fall due.
        The scheduler releases them when the video ends.
        """

    def try_permit(
        self, kind: RequestKind = RequestKind.EXTRA_POLL
    ) -> AbstractAsyncContextManager[Permit] | None:
        """A permit if one is free right now without displacing anybody, else ``None``."""

    def reserve(self, count: int) -> None:
        """Promise ``count`` more polls (a task taken over from elsewhere)."""

    def release(self, count: int) -> None:
        """Give back ``count`` promised polls that will not be needed."""

    def state(self) -> BudgetState:
        """A snapshot for displays and planning."""


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
        self._limit = self._rate_limit.requests
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
        self._blocked_until = float("-inf")
        self._quiet_since = float("-inf")  # when the limit was last tightened or restored
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

        Raises nothing of its own; cancellation while waiting takes nothing from the budget.
        """
        await self._acquire(_Waiter(kind, reserve, horizon, anyio.current_time()))
        permit = Permit(self, kind)
        try:
            yield permit
        finally:
            self._stamp(permit)

    def try_permit(self, kind: RequestKind = RequestKind.EXTRA_POLL) -> _Immediate | None:
        """A permit if a slot is free now, nobody waits, and no reservation is touched."""
        self._prune()
        if self._waiters_left() or not self._free_for(RequestKind.EXTRA_POLL):
            return None
        self._admit(kind, 0)
        return _Immediate(Permit(self, kind))

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
            limit=self._limit,
            configured_limit=self._rate_limit.requests,
            window=self._window,
            used=self._used(),
            reserved=self._reserved,
            waiting_polls=self._waiting[RequestKind.POLL],
            waiting_generates=self._waiting[RequestKind.GENERATE],
            generates_in_window=len(self._recent[RequestKind.GENERATE]),
            extra_polls_in_window=len(self._recent[RequestKind.EXTRA_POLL]),
            next_free_in=max(0.0, self._next_free_at() - now),
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
        if self._limit < self._rate_limit.requests and now - self._quiet_since >= self._window:
            self._limit += 1  # one slot back per window without a 429
            self._quiet_since = now
        return now

    def _free_for(self, kind: RequestKind, reserve: int = 0, horizon: float = 0.0) -> bool:
        now = anyio.current_time()
        if now < self._blocked_until:
            return False
        used = self._used()
        if used + 1 > self._limit:
            return False
        if kind is RequestKind.POLL:  # polls are what the promised slots are kept for
            return True
        # Promised polls must fit by the time they fall due (``horizon`` from now, at most):
        # count only what will still be in the window then.
        later = self._in_flight + self._log.count_after(now + horizon)
        return later + self._reserved + 1 + reserve <= self._limit

    def _next_free_at(self) -> float:
        expiry = self._log.next_expiry()
        if self._used() >= self._limit and expiry is not None:
            return max(self._blocked_until, expiry)
        return self._blocked_until

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
            self._quiet_since = now
            if permit.retry_after is None:
                self._limit = self._tightened(now)
            else:
                # The server says when it frees: trust it, and give up just one slot.
                self._limit = max(1, self._limit - 1)
                self._blocked_until = max(self._blocked_until, now + permit.retry_after)
        self._wake_head()

    def _tightened(self, now: float) -> int:
        """The limit to keep after a 429: what the key's other consumers seem to leave us.

        The server's window is full while ours holds ``ours`` (the refused one included), so
        others hold at least ``limit - ours + 1`` of it, seen over the span our own log
        covers; they are assumed to go on at that rate for a whole window. Each 429 takes at
        least one slot away, never more than half of what we had in the window.
        """
        ours = self._used()
        others = max(1, self._rate_limit.requests - (ours - 1))
        oldest = self._log.next_expiry()
        seen_for = now - (oldest - self._window) if oldest is not None else 0.0
        seen_for = min(self._window, max(self._window / 12, seen_for))
        expected = others * self._window / seen_for
        target = math.floor(self._rate_limit.requests - expected) - 1
        return max(1, ours // 2, min(self._limit - 1, target))

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
                    with anyio.move_on_after(max(0.0, self._next_wake(now) - now)):
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

    def _next_wake(self, now: float) -> float:
        """When the head's answer may change without anyone telling it."""
        expiry = self._log.next_expiry()
        times = [self._blocked_until, float("inf") if expiry is None else expiry]
        if self._submissions and self._polls:
            times.append(self._submissions[0].since + self._starve_after)
        return min((t for t in times if t > now), default=float("inf"))


class _Immediate:
    """The context manager of :meth:`SlidingWindowLimiter.try_permit` (already admitted)."""

    __slots__ = ("_permit",)

    def __init__(self, permit: Permit) -> None:
        self._permit = permit

    async def __aenter__(self) -> Permit:
        return self._permit

    async def __aexit__(self, *exc: object) -> None:
        self._permit._limiter._stamp(self._permit)
