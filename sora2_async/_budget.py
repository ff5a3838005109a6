"""The in-memory budget of one API key: a sliding log with priorities and leases.

Every API request of every client that shares a :class:`SlidingWindowLimiter` passes
through :meth:`~SlidingWindowLimiter.permit`. No rolling window of ``rate_limit.per``
seconds (plus ``margin``) holds more than the limit *as the server sees it*: a request
counts from its admission until a window after its answer arrives, which is no earlier than
the moment the server stamped it, so network delay cannot make two windows overlap. A window
that holds at most N requests in every rolling position also holds at most N in any
clock-hour bucket, so a fixed-window server is covered too.

The rule is ``_admission``'s, the waiting is ``_queue``'s; this module is the store: the log,
the requests in flight (entries by permit id), the leases, and the limit in force after
429s (``_ceiling``). It lives and dies with its process, so by default its leases never
lapse. It is the Python API's default: a library writes no file unless asked to.
"""

from __future__ import annotations

import bisect
import logging
import math

import anyio

from ._admission import Contender, decide, extra_fits
from ._ceiling import Ceiling
from ._limits import BudgetState, Lease, Limiter, Permit, RateLimit, RequestKind
from ._queue import QueuedLimiter
from ._window import SlidingLog

# The vocabulary lives in ``_limits``; it is re-exported here for the modules that speak of
# budgets as a whole.
__all__ = [
    "BudgetState",
    "Lease",
    "Limiter",
    "Permit",
    "RateLimit",
    "RequestKind",
    "SlidingWindowLimiter",
    "capped_retry_after",
]

logger = logging.getLogger("sora2_async")


def capped_retry_after(retry_after: float | None, window: float) -> float | None:
    """A server's ``Retry-After``, trusted up to one window (a longer wait is never needed:
    by then everything counted has left). Negative or absurd values count as absent."""
    if retry_after is None:
        return None
    if not math.isfinite(retry_after) or retry_after < 0:
        logger.warning("ignoring a Retry-After of %r seconds", retry_after)
        return None
    if retry_after > window:
        logger.warning(
            "Retry-After of %.0f s is longer than the window; waiting %.0f s", retry_after, window
        )
        return window
    return retry_after


class _View:
    """The memory store as an ``_admission.Window`` at one instant."""

    __slots__ = (
        "_store",
        "blocked_until",
        "limit",
        "now",
        "reserved",
        "rises_at",
        "used",
    )

    def __init__(self, store: SlidingWindowLimiter, now: float) -> None:
        self._store = store
        self.now = now
        self.limit = store._ceiling.at(now)
        self.used = len(store._in_flight) + len(store._log)
        self.reserved = store._live_leases(now)
        self.blocked_until = store._blocked_until
        self.rises_at = store._ceiling.next_rise(now)

    @property
    def lease_dues(self) -> list[float]:
        """When the live leases fall due, ascending (the store keeps them so: a view costs
        nothing per lease, and ``fits`` reads only the ones due before its horizon)."""
        return self._store._dues if self.reserved else []

    def later(self, when: float) -> int:
        return len(self._store._in_flight) + self._store._log.count_after(when)

    def expiry(self, k: int) -> float | None:
        log = self._store._log
        return log.expiry(k) if k <= len(log) else None

    def first_expiry_after(self, when: float) -> float | None:
        return self._store._log.first_expiry_after(when)


class SlidingWindowLimiter(QueuedLimiter):
    """The in-memory budget: one per API key, shared by every client and poller that use it.

    ``margin`` seconds are added to the window (clock drift between us and the server);
    ``starve_after`` bounds how long a submission can be held back by polls; leases lapse
    ``lease_ttl`` seconds after the last :meth:`renew` (never, by default: the store dies
    with its owner).
    """

    def __init__(
        self,
        rate_limit: RateLimit | None = None,
        *,
        margin: float = 2.0,
        starve_after: float | None = None,
        lease_ttl: float = math.inf,
    ) -> None:
        super().__init__(rate_limit, margin=margin, starve_after=starve_after)
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be positive, not {lease_ttl!r}")
        self._lease_ttl = lease_ttl
        self._alive_until = math.inf
        self._ceiling = Ceiling(self._rate_limit.requests, self._window)
        self._log = SlidingLog(self._window)  # answered requests, stamped at their answer
        self._refused = SlidingLog(self._window)  # the 429s among them (see _stamp)
        self._in_flight: dict[str, float] = {}  # permit id -> admitted at
        self._leases: dict[str, Lease] = {}
        self._dues: list[float] = []  # the leases' due times, ascending (kept with _leases)
        self._blocked_until = -math.inf
        self._rate_limited = 0

    @property
    def last_state(self) -> BudgetState:
        """A snapshot of the budget now (in memory, always fresh)."""
        return self._snapshot(_View(self, self._prune()), rate_limited=self._rate_limited)

    async def snapshot(self) -> BudgetState:
        """A snapshot of the budget now."""
        return self.last_state

    # -- leases --------------------------------------------------------------------------------

    def _live_leases(self, now: float) -> int:
        return len(self._leases) if now < self._alive_until else 0

    def _lease(self, now: float, due_in: float) -> Lease:
        lease = Lease(f"{self._owner}-l{next(self._ids)}", now + due_in)
        self._leases[lease.id] = lease
        bisect.insort(self._dues, lease.due)
        return lease

    async def promise(self, due_in: float) -> Lease:
        """Promise a final poll due in ``due_in`` seconds; never waits."""
        return self._lease(self._touch(), max(0.0, due_in))

    async def release(self, lease: Lease) -> None:
        """Give back a promised poll (twice is harmless)."""
        held = self._leases.pop(lease.id, None)
        if held is not None:
            del self._dues[bisect.bisect_left(self._dues, held.due)]
            self._wake_fronts()

    async def renew(self) -> None:
        """Keep the leases alive for another ``lease_ttl``."""
        self._touch()

    async def aclose(self) -> None:
        """Give back every lease (the store lives on while others hold it)."""
        self._leases.clear()
        self._dues.clear()
        self._wake_fronts()

    def _touch(self) -> float:
        # Lapsed leases come back with their owner: its videos still need their polls.
        now = anyio.current_time()
        self._alive_until = now + self._lease_ttl
        return now

    # -- admission -----------------------------------------------------------------------------

    def _prune(self) -> float:
        now = anyio.current_time()
        self._log.prune(now)
        return now

    async def _attempt(self, me: Contender, rivals: list[Contender]) -> Permit | float:
        now = self._prune()
        later = decide(_View(self, now), me, rivals, starve_after=self._starve_after)
        if later is not None:
            return later
        return self._admit(me.kind, now, me.promise)

    async def _try_extra(self, kind: RequestKind) -> Permit | None:
        now = self._prune()
        if not extra_fits(_View(self, now), ()):
            return None
        return self._admit(kind, now, None)

    def _admit(self, kind: RequestKind, now: float, promise: float | None) -> Permit:
        self._touch()
        permit = Permit(self._permit_id(), kind)
        self._in_flight[permit.id] = now
        if promise is not None:
            permit.lease = self._lease(now, promise)
        return permit

    async def _stamp(self, permit: Permit) -> None:
        now = anyio.current_time()
        if self._in_flight.pop(permit.id, None) is None:
            return  # stamped already
        self._log.add(now)
        if permit.was_rate_limited:
            self._rate_limited += 1
            oldest = self._log.next_expiry()
            seen_for = now - (oldest - self._window) if oldest is not None else 0.0
            # What the server counts of ours: our earlier 429s out (see Ceiling.lower).
            self._refused.add(now)
            self._refused.prune(now)
            used = len(self._in_flight) + len(self._log) - len(self._refused) + 1
            retry_after = capped_retry_after(permit.retry_after, self._window)
            self._ceiling.lower(now, ours=used, seen_for=seen_for, retry_after=retry_after)
            if retry_after is not None:
                self._blocked_until = max(self._blocked_until, now + retry_after)
