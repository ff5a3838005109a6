"""Retry knobs in one place, and the arithmetic of backoff and ``Retry-After``.

Which errors are retried is decided in ``_api``; *how long* to wait is decided here.
Tests that do not run in virtual time can call :func:`set_testing` to make every backoff
zero without changing how many attempts are made.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import random
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Backoff", "RetryPolicy", "parse_retry_after", "set_testing"]

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


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date.

    A date is read against the response's own ``Date`` header when it has one (so our clock's
    error does not matter), else against ``now`` (seconds since the epoch).
    """
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "inf" would wait forever, "nan" means nothing: only finite seconds count
        return max(0.0, seconds) if math.isfinite(seconds) else None
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
    return max(0.0, when - reference)
