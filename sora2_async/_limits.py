"""The budget's vocabulary: the allowance, the kinds of request, and what a limiter offers.

:class:`Limiter` is the interface every budget implements: the in-memory
:class:`~sora2_async.SlidingWindowLimiter`, or one shared between processes.
"""

from __future__ import annotations

import enum
import math
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = ["BudgetState", "Limiter", "Permit", "RateLimit", "RequestKind"]


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
    #: seconds until a slot frees: 0.0 when one is free now, ``inf`` while only answers
    #: still in flight can free one
    next_free_in: float
    rate_limited: int  #: 429s seen in all
    blocked_for: float  #: seconds left of a server's Retry-After

    @property
    def available(self) -> int:
        """Slots free now that nobody has a claim on."""
        return max(0, self.limit - self.used - self.reserved)


class Permit:
    """One admitted request. Report a 429 with :meth:`rate_limited` before the permit ends."""

    __slots__ = ("kind", "retry_after", "was_rate_limited")

    def __init__(self, kind: RequestKind) -> None:
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
        """A permit if one is free right now without displacing anybody, else ``None``.

        The slot is taken when this returns: enter the result at once.
        """

    def reserve(self, count: int) -> None:
        """Promise ``count`` more polls (a task taken over from elsewhere)."""

    def release(self, count: int) -> None:
        """Give back ``count`` promised polls that will not be needed."""

    def state(self) -> BudgetState:
        """A snapshot for displays and planning."""
