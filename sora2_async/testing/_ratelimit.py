"""The server side of the rate limit: one window per key, and the audit of what it let in.

Times here are on the simulator's clock; ``window`` is the policy's ``per`` divided by the
time scale. An entry stamped at ``t`` leaves a sliding window at exactly ``t + window``
(compared with ``<=``, the rule the SDK's budget uses), give or take :data:`TIME_EPSILON`:
a virtual-time loop sleeping until the boundary then always sees it pass, instead of spinning
on a float that never quite gets there. Fixed windows start at multiples of ``window``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from ._config import TIME_EPSILON, RateLimitPolicy, WindowKind

__all__ = ["KeyWindow", "max_in_window"]


class KeyWindow:
    """One key's rate-limit state on the server."""

    __slots__ = ("_bucket", "_count", "_limit", "_policy", "_stamps", "_window")

    def __init__(self, policy: RateLimitPolicy, window: float) -> None:
        self._policy = policy
        self._limit = policy.requests
        self._window = window
        self._stamps: deque[float] = deque()  # sliding: the counted requests still in the window
        self._bucket: int | None = None  # fixed: the period the count belongs to
        self._count = 0

    def admit(self, now: float) -> float | None:
        """Count one request at ``now``: ``None`` if it is allowed, else seconds until a
        request would be (clock seconds, > 0). A rejected request is counted when the
        policy says so.
        """
        if self._policy.window is WindowKind.FIXED:
            return self._admit_fixed(now)
        return self._admit_sliding(now)

    def _admit_sliding(self, now: float) -> float | None:
        stamps, window = self._stamps, self._window
        while stamps and stamps[0] + window <= now + TIME_EPSILON:
            stamps.popleft()
        if len(stamps) < self._limit:
            stamps.append(now)
            return None
        if self._policy.count_rejected:
            stamps.append(now)
        # Below the limit again once the oldest len - limit + 1 entries have left.
        return max(stamps[len(stamps) - self._limit] + window - now, 0.0)

    def _admit_fixed(self, now: float) -> float | None:
        bucket = math.floor((now + TIME_EPSILON) / self._window)
        if bucket != self._bucket:
            self._bucket, self._count = bucket, 0
        if self._count < self._limit:
            self._count += 1
            return None
        if self._policy.count_rejected:
            self._count += 1
        return max((bucket + 1) * self._window - now, 0.0)


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most of ``times`` (sorted ascending) that any rolling ``window`` holds.

    A window ending at ``t`` holds the times ``s <= t`` with ``s + window > t`` (an entry
    leaves at exactly ``s + window``, give or take :data:`TIME_EPSILON`), matching
    :class:`KeyWindow`.
    """
    best = start = 0
    for end, t in enumerate(times):
        while times[start] + window <= t + TIME_EPSILON:
            start += 1
        best = max(best, end - start + 1)
    return best
