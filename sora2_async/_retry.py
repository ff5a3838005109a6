"""Retry knobs in one place, and the arithmetic of backoff and ``Retry-After``.

Which errors are retried is decided in ``_api``; *how long* to wait is decided here.
Tests that do not run in virtual time can call :func:`set_testing` to make every backoff
zero without changing how many attempts are made.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import math
import random
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "ABSURD_RETRY_AFTER",
    "Backoff",
    "MAX_RETRY_AFTER",
    "RetryPolicy",
    "parse_retry_after",
    "set_testing",
]

logger = logging.getLogger("sora2_async")

_testing = False


def set_testing(enabled: bool = True) -> None:
    """Make backoff waits zero (attempt counts are unchanged). For tests in real time."""
    global _testing
    _testing = enabled


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, not {value!r}")


class Backoff:
    """The waits of one retried operation: exponential from ``initial`` to ``maximum``
    seconds, ``jitter`` of each drawn at random, at most ``limit`` retries.

    Every retry loop of the SDK (an API call, a poller's failed rounds, a download) takes
    its waits from one of these, made by :class:`RetryPolicy`.
    """

    __slots__ = ("_fast", "initial", "jitter", "limit", "maximum", "retries")

    def __init__(
        self, initial: float, maximum: float, limit: int, jitter: float, *, fast: bool = True
    ) -> None:
        self.initial, self.maximum, self.limit, self.jitter = initial, maximum, limit, jitter
        self._fast = fast  # whether set_testing() makes its waits zero
        self.retries = 0

    def __repr__(self) -> str:
        return f"<Backoff {self.retries}/{self.limit} retries>"

    def next(self, *, retry_after: float | None = None) -> float | None:
        """Seconds to wait before the next retry, or ``None`` when retries are spent."""
        if self.retries >= self.limit:
            return None
        self.retries += 1
        if _testing and self._fast:
            return 0.0
        base = min(self.maximum, self.initial * 2 ** (self.retries - 1))
        wait = base - random.uniform(0.0, base * min(1.0, self.jitter))
        return float(max(wait, retry_after or 0.0))

    def reset(self) -> None:
        """Start over: the operation succeeded."""
        self.retries = 0


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry.

    ``max_retries`` bounds the retries of one call after connection errors, timeouts and
    5xx (``check_status`` always; ``generate`` only when the request provably never left).
    ``max_rate_limit_retries`` bounds the retries after 429s, which wait for the budget.
    Backoff is exponential from ``initial`` to ``maximum`` seconds with full ``jitter``
    (a fraction of the wait drawn at random), and never shorter than a ``Retry-After``.
    A poller whose polls keep failing tries ``poll_rounds`` rounds in all, from the
    minimum poll interval up to ``poll_max_pause`` seconds apart (about ten minutes of
    outage by default); those pauses keep their length under :func:`set_testing`, for the
    provider asks for 5 s between polls.
    """

    max_retries: int = attrs.field(default=3, validator=_non_negative)
    max_rate_limit_retries: int = attrs.field(default=5, validator=_non_negative)
    initial: float = attrs.field(default=1.0, validator=_non_negative)
    maximum: float = attrs.field(default=30.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.5, validator=_non_negative)
    poll_rounds: int = attrs.field(default=8, validator=_non_negative)
    poll_max_pause: float = attrs.field(default=300.0, validator=_non_negative)

    def for_errors(self, *, retries: int | None = None) -> Backoff:
        """The waits after connection errors, timeouts and 5xx."""
        limit = self.max_retries if retries is None else retries
        return Backoff(self.initial, self.maximum, limit, self.jitter)

    def for_rate_limits(self, *, retries: int | None = None) -> Backoff:
        """The waits after 429s (short: the budget holds everyone back meanwhile)."""
        limit = self.max_rate_limit_retries if retries is None else retries
        return Backoff(self.initial, self.initial, limit, self.jitter)

    def for_polls(self, min_interval: float, *, time_scale: float = 1.0) -> Backoff:
        """The pauses between a poller's failed rounds: 5 s, 10 s, 20 s ... (scaled)."""
        return Backoff(
            min_interval,
            self.poll_max_pause / time_scale,
            max(0, self.poll_rounds - 1),
            0.0,
            fast=False,
        )


#: The longest ``Retry-After`` obeyed, in seconds: the provider's window (one hour). A longer
#: one is capped to it; callers that know a shorter window (a bought limit, a time scale)
#: pass their own ``maximum``.
MAX_RETRY_AFTER = 3600.0
#: Beyond this a ``Retry-After`` is taken for nonsense (a misplaced timestamp, an overflow)
#: and ignored: the limiter then waits for its window to free, as after a bare 429.
ABSURD_RETRY_AFTER = 86400.0


def parse_retry_after(
    headers: Mapping[str, str], *, now: float | None = None, maximum: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date, at most ``maximum``.

    A date is read against the response's own ``Date`` header when it has one (so our clock's
    error does not matter), else against ``now`` (seconds since the epoch). A value above
    ``maximum`` is capped to it; negative seconds, a non-finite, unreadable or absurd value
    (more than a day) count as absent; a date in the past means now. Each of those says so
    in a log line: one 429 must not freeze every client of a key for days.
    """
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds: float | None = float(value)
    except ValueError:
        seconds = _seconds_until_date(value, headers, now)
    return _bounded(value, seconds, maximum)


def _seconds_until_date(value: str, headers: Mapping[str, str], now: float | None) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    reference = now
    date = headers.get("date")
    if date:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            reference = email.utils.parsedate_to_datetime(date).timestamp()
    if reference is None:
        return None
    # A date in the past means "now" (RFC 9110), not nonsense: unlike "-5" seconds.
    return max(0.0, when - reference)


def _bounded(value: str, seconds: float | None, maximum: float) -> float | None:
    shown = value if len(value) <= 40 else value[:37] + "..."
    if seconds is None or not math.isfinite(seconds):
        # "inf" would wait forever, "nan" and garbage mean nothing.
        logger.warning("ignoring an unreadable Retry-After: %r", shown)
        return None
    if seconds < 0 or seconds > ABSURD_RETRY_AFTER:
        logger.warning(
            "ignoring an absurd Retry-After: %r (%s); waiting for the budget's window instead",
            shown,
            "negative" if seconds < 0 else "more than a day",
        )
        return None
    if seconds > maximum:
        logger.warning(
            "capping a Retry-After of %r to %gs, the rate limit's window", shown, maximum
        )
        return maximum
    return seconds
