"""The budget's vocabulary and the :class:`Limiter` protocol every store implements.

A limiter admits API requests under one key's allowance. Its stores (in memory,
:class:`~sora2_async.SQLiteLimiter` for the processes of one host, Redis for many hosts)
share one rule and one protocol, built so that a store a network away can serve it:

* every operation a store may serve over a network is awaitable;
* a :class:`Permit` has an id; a request in flight is an entry that expires (a process
  killed mid-request leaves an entry that counts as spent, never one that counts forever);
* the final poll promised to a running video is a :class:`Lease` held by an *owner* (one
  limiter object) and renewed while that owner lives: a crashed owner's leases lapse and
  its budget comes back;
* :attr:`Limiter.last_state` is a cached :class:`BudgetState`, so drawing a progress bar
  never waits on a store.

The limiter admits; it does not plan. Who polls when is the scheduler's and the planner's
business (``_scheduler``, ``_planner``).
"""

from __future__ import annotations

import enum
import math
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = ["BudgetState", "Lease", "Limiter", "Permit", "RateLimit", "RequestKind"]


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _whole(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be positive, a whole number, not {value!r}")


@attrs.frozen
class RateLimit:
    """A key's allowance: ``requests`` per ``per`` seconds (the API's default: 100 per hour)."""

    requests: int = attrs.field(default=100, validator=_whole)
    per: float = attrs.field(default=3600.0, validator=_positive)


class RequestKind(enum.IntEnum):
    """What a request is for; lower values are served first."""

    POLL = 0  #: a poll that can finish a video: it may use the promised slots
    GENERATE = 1  #: starts a video; waits until the budget can carry its final poll
    EXTRA_POLL = 2  #: spends idle budget on latency; never waits, never displaces anyone


@attrs.frozen
class BudgetState:
    """A snapshot of a limiter's store, for progress displays and for the poll planner."""

    limit: int  #: the limit in force now (tightened after 429s)
    configured_limit: int  #: the limit the limiter was made with
    window: float  #: seconds a request counts for, margin included
    used: int  #: requests in the window, in flight ones included (every owner's)
    reserved: int  #: final polls promised to running videos (live leases of every owner)
    waiting_polls: int  #: polls waiting for a slot (this process's, and other owners' heads)
    waiting_generates: int  #: submissions waiting for a slot (the same)
    #: seconds until a slot frees: 0.0 when one is free now; while only answers still in
    #: flight can free one, ``inf`` in memory, and in a shared store the time until those
    #: entries would lapse (their process may have died)
    next_free_in: float
    rate_limited: int  #: 429s seen in all (by every owner of the store)
    blocked_for: float  #: seconds left of a server's Retry-After

    @property
    def available(self) -> int:
        """Slots free now that nobody has a claim on."""
        return max(0, self.limit - self.used - self.reserved)


@attrs.frozen
class Lease:
    """A final poll promised to a running video, held in the store until released.

    ``due`` is when the poll falls due, on the store's clock. The lease lives while its
    owner (the limiter that made it) renews itself; a crashed owner's leases lapse.
    """

    id: str
    due: float


class Permit:
    """One admitted request. Report a 429 with :meth:`rate_limited` before the permit ends.

    ``lease`` is the final poll promised with a ``GENERATE`` admitted with ``promise``: the
    caller hands it to whoever follows the video, or releases it when there is no video.
    """

    __slots__ = ("id", "kind", "lease", "retry_after", "was_rate_limited")

    def __init__(self, id: str, kind: RequestKind, lease: Lease | None = None) -> None:
        self.id = id
        self.kind = kind
        self.lease = lease
        self.was_rate_limited = False
        self.retry_after: float | None = None

    def __repr__(self) -> str:
        return f"<Permit {self.id} {self.kind.name}{' 429' if self.was_rate_limited else ''}>"

    def rate_limited(self, retry_after: float | None = None) -> None:
        """Tell the limiter the server answered 429 (with its ``Retry-After``, if any)."""
        self.was_rate_limited = True
        self.retry_after = retry_after


@runtime_checkable
class Limiter(Protocol):
    """What a budget store offers; every call that may reach the store is awaitable.

    The rule, over everything the store holds (every owner's requests):

    * no rolling window of ``rate_limit.per`` seconds holds more than the limit in force,
      counting each request from its admission until a window after its answer;
    * polls go before submissions; a submission that has waited long enough goes first once
      it can go (no starvation);
    * a submission with a ``promise`` goes only when its final poll fits when it falls due;
    * a 429 seen by anyone stops everyone sharing the store.
    """

    @property
    def rate_limit(self) -> RateLimit:
        """The configured allowance."""

    @property
    def last_state(self) -> BudgetState:
        """The latest snapshot, without a round trip (for displays; may be a moment old)."""

    @property
    def renew_every(self) -> float:
        """Seconds within which :meth:`renew` must be called for leases to stay alive
        (``inf`` when they never lapse, as in memory)."""

    def permit(
        self, kind: RequestKind, *, promise: float | None = None
    ) -> AbstractAsyncContextManager[Permit]:
        """Wait for a slot; send the request inside; leaving stamps the slot.

        ``promise``: for a ``GENERATE``, the seconds from now when its video's final poll
        falls due. It waits until that poll fits then, and its permit carries the
        :class:`Lease`. Cancellation while waiting takes nothing.

        Raises:
            ValueError: for ``EXTRA_POLL`` (it never waits: use :meth:`try_permit`), or a
                ``promise`` on anything but a ``GENERATE``.
        """

    async def try_permit(
        self, kind: RequestKind = RequestKind.EXTRA_POLL
    ) -> AbstractAsyncContextManager[Permit] | None:
        """A permit if a slot is free now, nobody waits and no promise is touched, else
        ``None``. The slot is taken when this returns: enter the result at once."""

    async def promise(self, due_in: float) -> Lease:
        """Promise a final poll due in ``due_in`` seconds (a task taken over from elsewhere).

        It never waits: the video is running already, its poll has to happen.
        """

    async def release(self, lease: Lease) -> None:
        """Give back a promised poll that will not be needed (releasing twice is harmless)."""

    async def renew(self) -> None:
        """Keep this owner's leases alive (cheap when done recently)."""

    async def snapshot(self) -> BudgetState:
        """A fresh snapshot of the store (it also refreshes :attr:`last_state`)."""

    async def aclose(self) -> None:
        """Release what this owner holds in the store and close it."""
