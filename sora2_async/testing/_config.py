"""The simulator's knobs: its rate limit, task durations and injected faults.

All are frozen, slotted attrs classes that validate at construction and raise ``ValueError``
(or ``TypeError`` for a value of the wrong type) on nonsense, so that a misconfigured
simulator fails where it is built, not halfway through a test.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs

from .._budget import RateLimit
from .._models import ModelTier

__all__ = ["TIME_EPSILON", "Durations", "Faults", "RateLimitPolicy", "WindowKind"]

#: How close to a boundary (a window's end, a task's completion) counts as past it, in clock
#: seconds. Event loops run a timer that is due within their clock's resolution (asyncio) or
#: tick (looptime) without moving the clock, so a client that sleeps until exactly a boundary
#: may wake a hair before it; were that "not yet", it would sleep ~0 s and ask again forever.
TIME_EPSILON = 1e-6


def _probability(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, not {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} is a probability: 0 to 1, not {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be finite and not negative, not {value!r}")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be finite and positive, not {value!r}")


class WindowKind(str, enum.Enum):
    """How the server's rate-limit window moves."""

    #: No more than ``requests`` in any ``per`` seconds (a rolling log of timestamps).
    SLIDING = "sliding"
    #: No more than ``requests`` per clock period: windows start at multiples of ``per``.
    FIXED = "fixed"


@attrs.frozen
class RateLimitPolicy:
    """How the simulated server limits each key: ``requests`` per ``per`` seconds.

    The provider documents 100 per hour and nothing else; the rest is configurable so that
    tests can cover every reading of it.

    Attributes:
        requests: the most requests a key may make in one window.
        per: the window's length in simulated seconds.
        window: :attr:`WindowKind.SLIDING` (default) or :attr:`WindowKind.FIXED` (clock
            periods: ``[k * per, (k + 1) * per)`` on the simulator's clock).
        count_rejected: whether a request answered 429 still counts against the window
            (default ``True``: a client that keeps knocking stays locked out).
        retry_after: send a ``Retry-After`` header (whole seconds, rounded up) with 429s.
    """

    requests: int = attrs.field(default=100)
    per: float = attrs.field(default=3600.0, validator=_positive)
    window: WindowKind = attrs.field(default=WindowKind.SLIDING, converter=WindowKind)
    count_rejected: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    retry_after: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @requests.validator
    def _check_requests(self, _: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"requests must be an int, not {value!r}")
        if value < 1:
            raise ValueError(f"requests must be at least 1, not {value!r}")

    @classmethod
    def from_rate_limit(cls, rate_limit: RateLimit, **options: Any) -> RateLimitPolicy:
        """The policy of the SDK's :class:`~sora2_async.RateLimit` (a sliding window)."""
        return cls(rate_limit.requests, rate_limit.per, **options)


def _range(_: object, attribute: attrs.Attribute[Any], value: tuple[float, float]) -> None:
    low, high = value
    for bound in value:
        _non_negative(None, attribute, bound)
    if low > high:
        raise ValueError(f"{attribute.name} must be (low, high) with low <= high, not {value!r}")


def _pair(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value), float(value))  # one number: a fixed duration
    try:
        low, high = value
    except (TypeError, ValueError):
        raise TypeError(f"a duration range is (low, high) seconds, not {value!r}") from None
    return (low, high)


@attrs.frozen
class Durations:
    """How long a task takes, per tier: drawn uniformly from ``(low, high)`` simulated seconds.

    The defaults follow the provider's "typical" times (sora2 1-3 min, pro tiers 3-8 min).
    A single number instead of a pair means exactly that long.
    """

    sora2: tuple[float, float] = attrs.field(
        default=(60.0, 180.0), converter=_pair, validator=_range
    )
    pro_standard: tuple[float, float] = attrs.field(
        default=(180.0, 480.0), converter=_pair, validator=_range
    )
    pro_high: tuple[float, float] = attrs.field(
        default=(180.0, 480.0), converter=_pair, validator=_range
    )

    def for_tier(self, tier: ModelTier) -> tuple[float, float]:
        """The ``(low, high)`` range of ``tier``."""
        if tier is ModelTier.SORA2:
            return self.sora2
        if tier is ModelTier.PRO_STANDARD:
            return self.pro_standard
        return self.pro_high


@attrs.frozen
class Faults:
    """Faults injected into API answers, each drawn per request from the simulator's seed.

    Every probability is independent and drawn for every API request, in a fixed order, so
    one seed gives one sequence of faults. When several fire, the first in this order wins:
    ``server_error``, ``drop_connection``, ``malformed``, ``slow_body``; ``latency`` adds to
    any of them. Faults touch the two API endpoints only, never video downloads.

    Attributes:
        latency: seconds of delay added before the server answers (clock seconds, not
            scaled by ``time_scale``: it is the network's, not the generator's).
        latency_probability: chance that a request gets the ``latency``.
        server_error: chance of HTTP 500 ``INTERNAL_ERROR`` instead of handling the request.
            It happens after authentication and the rate limit (so the request counts) and
            before anything else (no task is created, nothing is charged).
        drop_connection: chance that the server handles the request (it counts, and a task
            may be created and charged) and then closes the connection without answering.
            In-process this raises ``httpx.RemoteProtocolError``.
        malformed: chance that the server handles the request and then sends a broken body:
            an HTML gateway page with status 502, or (half the time) the JSON answer cut in
            half with status 200.
        slow_body: chance that the answer's body is sent in pieces over ``slow_body_seconds``.
        slow_body_seconds: how long a slow body takes to arrive (clock seconds).
    """

    latency: float = attrs.field(default=0.0, validator=_non_negative)
    latency_probability: float = attrs.field(default=0.0, validator=_probability)
    server_error: float = attrs.field(default=0.0, validator=_probability)
    drop_connection: float = attrs.field(default=0.0, validator=_probability)
    malformed: float = attrs.field(default=0.0, validator=_probability)
    slow_body: float = attrs.field(default=0.0, validator=_probability)
    slow_body_seconds: float = attrs.field(default=5.0, validator=_non_negative)

    @property
    def any(self) -> bool:
        """Whether any fault can happen at all."""
        return bool(
            (self.latency and self.latency_probability)
            or self.server_error
            or self.drop_connection
            or self.malformed
            or self.slow_body
        )
