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

__all__ = ["RetryPolicy", "parse_retry_after", "set_testing"]

_testing = False


def set_testing(enabled: bool = True) -> None:
    """Make backoff waits zero (attempt counts are unchanged). For tests in real time."""
    global _testing
    _testing = enabled


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, not {value!r}")


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry.

    ``max_retries`` bounds the retries of one call after connection errors, timeouts and
    5xx (``check_status`` always; ``generate`` only when the request provably never left).
    ``max_rate_limit_retries`` bounds the retries after 429s, which wait for the budget.
    Backoff is exponential from ``initial`` to ``maximum`` seconds with full ``jitter``
    (a fraction of the wait drawn at random), and never shorter than a ``Retry-After``.
    """

    max_retries: int = attrs.field(default=3, validator=_non_negative)
    max_rate_limit_retries: int = attrs.field(default=5, validator=_non_negative)
    initial: float = attrs.field(default=1.0, validator=_non_negative)
    maximum: float = attrs.field(default=30.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.5, validator=_non_negative)

    def backoff(self, retry: int, *, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if _testing:
            return 0.0
        base = min(self.maximum, self.initial * 2 ** (retry - 1))
        wait = base - random.uniform(0.0, base * min(1.0, self.jitter))
        return float(max(wait, retry_after or 0.0))


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
