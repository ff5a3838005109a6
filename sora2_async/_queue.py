"""The waiting half of every limiter: this process's queues in front of a store.

Requests that cannot go at once wait here, polls and submissions in a queue each. Only the
front of each queue watches the clock and asks the store again; the rest sleep until they
reach the front, so thousands of waiters cost one wake-up per slot, not thousands. The
store (memory, SQLite, Redis: a subclass) applies the rule of ``_admission`` to everything
it holds, other processes' waiting fronts included, and says when to look again. Changes
made by other processes are not announced: a shared store sets ``_recheck``, the longest a
front sleeps before it looks again anyway.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.lowlevel
import attrs

from ._admission import Contender, Window, next_free_at
from ._errors import BudgetStoreError
from ._limits import BudgetState, Permit, RateLimit, RequestKind

__all__ = ["QueuedLimiter"]

T = TypeVar("T")

logger = logging.getLogger("sora2_async")


@attrs.define(eq=False)
class _Waiter:
    contender: Contender
    event: anyio.Event = attrs.Factory(anyio.Event)
    gone: bool = False


class QueuedLimiter:
    """The local queues and the permit protocol; a subclass is the store behind them.

    Subclasses implement ``_now``, ``_attempt``, ``_try_extra``, ``_stamp`` and the
    lease and snapshot methods of :class:`~sora2_async.Limiter`.
    """

    _recheck: float = math.inf  # the longest a front sleeps between looks at the store
    # A store whose answers take a round trip (a thread, a socket) asks one question at a
    # time, so that this process's requests are decided in the order they came.
    _serial: anyio.Lock | None = None
    _lease_ttl: float = math.inf  # a store's leases lapse this long after the last renewal
    _last: BudgetState  # a shared store's latest snapshot

    def __init__(
        self, rate_limit: RateLimit | None, *, margin: float, starve_after: float | None
    ) -> None:
        self._rate_limit = rate_limit or RateLimit()
        if not margin >= 0:
            raise ValueError(f"margin must not be negative, not {margin!r}")
        self._window = self._rate_limit.per + margin
        self._starve_after = self._rate_limit.per / 4 if starve_after is None else starve_after
        self._owner = uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)
        self._polls: deque[_Waiter] = deque()
        self._submissions: deque[_Waiter] = deque()
        self._waiting = {RequestKind.POLL: 0, RequestKind.GENERATE: 0}

    @property
    def rate_limit(self) -> RateLimit:
        """The configured allowance."""
        return self._rate_limit

    @property
    def owner(self) -> str:
        """This limiter's id in its store: its permits and leases carry it."""
        return self._owner

    def __repr__(self) -> str:
        s = self.last_state
        return (
            f"<{type(self).__name__} {s.used}/{s.limit} used per {s.window:g}s, "
            f"reserved={s.reserved} waiting={s.waiting_polls}+{s.waiting_generates} "
            f"next_free_in={s.next_free_in:.1f}s 429s={s.rate_limited}>"
        )

    @property
    def last_state(self) -> BudgetState:
        """The snapshot the latest call to the store returned (no round trip)."""
        return self._last

    @property
    def renew_every(self) -> float:
        """Seconds within which :meth:`renew` keeps this owner's leases alive (``inf``:
        they never lapse)."""
        return self._lease_ttl / 3

    # -- the permit protocol -------------------------------------------------------------------

    @asynccontextmanager
    async def permit(
        self, kind: RequestKind, *, promise: float | None = None
    ) -> AsyncIterator[Permit]:
        """Wait for a slot of ``kind``; send the request inside; leaving stamps the slot.

        Cancellation while waiting takes nothing from the budget.

        Raises:
            ValueError: for ``EXTRA_POLL`` (use :meth:`try_permit`), or a ``promise`` on
                anything but a ``GENERATE``, or a negative one.
        """
        if kind is RequestKind.EXTRA_POLL:
            raise ValueError("extra polls never wait for budget: use try_permit()")
        if promise is not None and (kind is not RequestKind.GENERATE or not promise >= 0):
            raise ValueError(f"only a GENERATE promises a poll, due in >= 0 s (got {promise!r})")
        permit = await self._acquire(Contender(kind, self._now(), promise, self._owner))
        try:
            yield permit
        finally:
            await self._finish(permit)

    async def try_permit(self, kind: RequestKind = RequestKind.EXTRA_POLL) -> _Immediate | None:
        """A permit if a slot is free now, nobody waits, and no promise is touched.

        The slot is taken when this returns: enter the result at once.
        """
        if self._polls or self._submissions:
            self._drop_gone()
            if self._polls or self._submissions:
                return None
        permit = await self._serially(functools.partial(self._try_extra, kind))
        return None if permit is None else _Immediate(self, permit)

    def _snapshot(
        self,
        view: Window,
        *,
        rate_limited: int,
        polls_elsewhere: int = 0,
        generates_elsewhere: int = 0,
    ) -> BudgetState:
        """The :class:`BudgetState` of a store's ``view``, with this process's waiters and
        the fronts other owners have registered."""
        return BudgetState(
            limit=view.limit,
            configured_limit=self._rate_limit.requests,
            window=self._window,
            used=view.used,
            reserved=view.reserved,
            waiting_polls=self._waiting[RequestKind.POLL] + polls_elsewhere,
            waiting_generates=self._waiting[RequestKind.GENERATE] + generates_elsewhere,
            next_free_in=max(0.0, next_free_at(view) - view.now),
            rate_limited=rate_limited,
            blocked_for=max(0.0, view.blocked_until - view.now),
        )

    # -- what a store implements ---------------------------------------------------------------

    def _now(self) -> float:
        """The store's clock (every owner of a shared store reads the same one)."""
        return anyio.current_time()

    async def _attempt(self, me: Contender, rivals: list[Contender]) -> Permit | float:
        """Admit ``me`` if the rule lets it go now, else say when (store clock) to look again.

        ``rivals``: this process's other waiting front (the store adds other owners').
        """
        raise NotImplementedError

    async def _leave(self, me: Contender) -> None:
        """``me`` stops waiting without a permit (a shared store forgets its front)."""

    async def _try_extra(self, kind: RequestKind) -> Permit | None:
        """Admit an extra poll if nobody waits anywhere and no promise is touched."""
        raise NotImplementedError

    async def _stamp(self, permit: Permit) -> None:
        """The request's answer arrived (or it failed): it counts a window from now."""
        raise NotImplementedError

    async def _serially(self, question: Callable[[], Awaitable[T]]) -> T:
        # The question is asked (its coroutine made) only once the lock is held: one made
        # before and cancelled while it waits would never be awaited.
        if self._serial is None:
            return await question()
        async with self._serial:
            return await question()

    def _permit_id(self) -> str:
        return f"{self._owner}-{next(self._ids)}"

    # -- waiting -------------------------------------------------------------------------------

    async def _finish(self, permit: Permit) -> None:
        # Shielded: a stamp lost to cancellation would count the slot for longer than needed.
        # A store that fails here must not take the answer with it (a paid task's id): its
        # entry then counts for as long as a request can take, which is safe.
        with anyio.CancelScope(shield=True):
            try:
                await self._stamp(permit)
            except BudgetStoreError as exc:
                logger.warning("could not stamp %r in the budget store: %s", permit, exc)
        self._wake_fronts()

    def _drop_gone(self) -> None:
        for queue in (self._polls, self._submissions):
            while queue and queue[0].gone:
                queue.popleft()

    def _fronts(self) -> list[_Waiter]:
        self._drop_gone()
        return [q[0] for q in (self._polls, self._submissions) if q]

    def _wake_fronts(self) -> None:
        for waiter in self._fronts():
            waiter.event.set()

    async def _acquire(self, me: Contender) -> Permit:
        # Even a free slot is no reason to go on for a task already cancelled.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not self._fronts():
            got = await self._serially(functools.partial(self._attempt, me, []))
            if isinstance(got, Permit):
                return got
        waiter = _Waiter(me)
        queue = self._polls if me.kind is RequestKind.POLL else self._submissions
        queue.append(waiter)
        self._waiting[me.kind] += 1
        admitted = False
        try:
            while True:
                fronts = self._fronts()
                if waiter in fronts:
                    rivals = [w.contender for w in fronts if w is not waiter]
                    # A fresh event before asking: a change while a store answers (a stamp,
                    # a release) must wake this waiter, not be lost with the old event.
                    waiter.event = anyio.Event()
                    got = await self._serially(functools.partial(self._attempt, me, rivals))
                    if isinstance(got, Permit):
                        admitted = waiter.gone = True
                        return got
                    # Only the fronts watch the clock; the rest sleep until they are fronts.
                    delay = min(max(0.0, got - self._now()), self._recheck)
                    with anyio.move_on_after(delay):
                        await waiter.event.wait()
                else:
                    waiter.event = anyio.Event()
                    await waiter.event.wait()
        finally:
            waiter.gone = True
            self._waiting[me.kind] -= 1
            if not admitted:
                with anyio.CancelScope(shield=True):
                    await self._leave(me)
            self._wake_fronts()  # admitted or cancelled: the next in line looks again


class _Immediate:
    """The context manager of :meth:`QueuedLimiter.try_permit` (already admitted)."""

    __slots__ = ("_limiter", "_permit")

    def __init__(self, limiter: QueuedLimiter, permit: Permit) -> None:
        self._limiter = limiter
        self._permit = permit

    async def __aenter__(self) -> Permit:
        return self._permit

    async def __aexit__(self, *exc: object) -> None:
        await self._limiter._finish(self._permit)
