"""A sliding log of request stamps: how many requests a rolling window holds, now and later.

Stamps arrive almost in order (answers of concurrent requests can swap places), so they
live in a sorted list with a moving head: appending is O(1) in the common case, dropping the
expired ones is amortised O(1), and "how many will still count at time t" is a bisection.
"""

from __future__ import annotations

import bisect

__all__ = ["EPSILON", "SlidingLog"]

# Clocks that round (looptime keeps microseconds) can wake a sleeper a hair before the
# expiry it slept for; an entry this close to leaving counts as gone.
EPSILON = 1e-6


class SlidingLog:
    """The expiry times of the requests that still count, in ascending order."""

    __slots__ = ("_expiries", "_head", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._expiries: list[float] = []
        self._head = 0  # entries before it have expired

    def __len__(self) -> int:
        return len(self._expiries) - self._head

    def __repr__(self) -> str:
        return f"<SlidingLog {len(self)} in {self.window:g}s>"

    def add(self, stamp: float) -> None:
        """Count a request stamped at ``stamp`` (it leaves at ``stamp + window``)."""
        expiry = stamp + self.window
        if not self._expiries or self._expiries[-1] <= expiry:
            self._expiries.append(expiry)
        else:
            bisect.insort(self._expiries, expiry, lo=self._head)

    def prune(self, now: float) -> None:
        """Forget the requests that have left the window by ``now``.

        An entry stamped at ``t`` leaves at exactly ``t + window``: compared with ``<=``, so
        a loop in virtual time always sees time move past the boundary.
        """
        expiries, head = self._expiries, self._head
        end = len(expiries)
        while head < end and expiries[head] <= now + EPSILON:
            head += 1
        if head > 64 and head * 2 > end:  # compact now and then, not on every call
            del expiries[:head]
            head = 0
        self._head = head

    def count_after(self, when: float) -> int:
        """How many of the current entries will still count at time ``when``."""
        index = bisect.bisect_right(self._expiries, when + EPSILON, lo=self._head)
        return len(self._expiries) - index

    def expiry(self, k: int) -> float:
        """When the ``k``-th oldest entry leaves (1-based; ``k <= len(self)``)."""
        return self._expiries[self._head + k - 1]

    def first_expiry_after(self, when: float) -> float | None:
        """The first expiry later than ``when``, or ``None``."""
        index = bisect.bisect_right(self._expiries, when + EPSILON, lo=self._head)
        return self._expiries[index] if index < len(self._expiries) else None

    def next_expiry(self) -> float | None:
        """When the oldest entry leaves the window, or ``None`` when empty."""
        return self._expiries[self._head] if len(self) else None
