"""The limit in force: the configured one, lowered by 429s, restored by quiet windows.

A 429 means the server counted more than we did: another consumer shares the key, or the
server counts differently. :meth:`Ceiling.lower` takes away what the others seem to use;
each full window without a 429 gives some back: doubling while below half the configured
limit (a key that was busy for a while is not starved for days), one slot at a time above
(probing slowly where the last 429 was). The value is a pure function of time since the last
429, so looking at it changes nothing.

It learns from repeated 429s: doubling stops short of the limit that was in force when the
last 429 came (a neighbour that never backs off was there, and doubling back to it would
only buy the next 429 a window later); from there it probes one slot a window, and after
each further repeated 429 half as often (every 2, 4, 8, then 16 windows): a neighbour that never
backs off costs a 429 each time we probe where it is, so a run of many windows pays a few
429s in all rather than one every other window. The level is kept in memory only: a shared
store rebuilds a ceiling from ``lowered`` and starts afresh.
"""

from __future__ import annotations

import math

__all__ = ["Ceiling"]

# Probing slows down to a slot every 2**4 = 16 windows at most, and four such rounds of quiet
# end the learning: a neighbour that left is noticed in bounded time (it was 2**16 windows).
_MAX_DOUBLINGS = 4


class Ceiling:
    """The highest number of requests the budget lets into one window now."""

    __slots__ = ("_configured", "_failed", "_lowered_at", "_lowered_to", "_repeats", "_window")

    def __init__(
        self,
        configured: int,
        window: float,
        *,
        lowered_to: int | None = None,
        lowered_at: float = -math.inf,
    ) -> None:
        self._configured = configured
        self._window = window
        self._lowered_to = configured if lowered_to is None else lowered_to
        self._lowered_at = lowered_at
        self._failed = configured  # the limit in force when the last 429 came
        self._repeats = 0  # repeated 429s since the last long quiet

    @property
    def lowered(self) -> tuple[int, float]:
        """``(lowered_to, lowered_at)``: what a shared store keeps to rebuild it."""
        return self._lowered_to, self._lowered_at

    def __repr__(self) -> str:
        return f"<Ceiling {self._lowered_to}/{self._configured} per {self._window:g}s>"

    def _windows_since(self, now: float) -> int:
        """Whole windows from the last 429 to ``now``, exactly as :meth:`next_rise` counts
        them (a float division alone can round a boundary either way, and a waiter would
        then sleep past the rise it waits for)."""
        k = max(0, int((now - self._lowered_at) // self._window))
        while self._lowered_at + (k + 1) * self._window <= now:
            k += 1
        while k > 0 and self._lowered_at + k * self._window > now:
            k -= 1
        return k

    def at(self, now: float) -> int:
        """The limit at time ``now``."""
        value = self._lowered_to
        if value >= self._configured:
            return self._configured
        # Doubling goes no further than just below where the last repeated 429 came.
        cap = self._configured if self._failed >= self._configured else max(1, self._failed - 1)
        # Probing above where the repeated 429s came: a slot every 2**(repeats - 1) windows.
        every = 1 << min(max(0, self._repeats - 1), _MAX_DOUBLINGS)
        probes = 0
        for windows in range(1, self._windows_since(now) + 1):
            if windows >= 4 * every:  # the quiet that ends the learning (as ``lower`` has it)
                cap = self._configured
            if 2 * value <= self._configured and value < cap:
                value = min(cap, 2 * value)
            elif value < cap:
                value += 1
            else:
                probes += 1
                if probes % every == 0:
                    value = min(self._configured, value + 1)
            if value == self._configured:
                break
        return value

    def next_rise(self, now: float) -> float:
        """When the limit next goes up by itself (``inf`` when it is at the configured one)."""
        if self.at(now) >= self._configured:
            return math.inf
        return self._lowered_at + (self._windows_since(now) + 1) * self._window

    def lower(self, now: float, *, ours: int, seen_for: float, retry_after: float | None) -> None:
        """Account for a 429 at ``now``, while our window held ``ours`` (the refused one too).

        ``ours`` leaves out our earlier 429s still in the window. The budget counts each as
        spent, but a server that did not count it frees nothing when it leaves our window:
        counted here, every 429 would let one more request into a full server window a window
        later (a 429 every few milliseconds at the turn of a window beside a neighbour that
        never backs off). Left out, the limit in force is that much lower.

        With ``Retry-After`` the server says when it frees: it is trusted, and one slot goes.
        Without, the server's window is full while ours holds ``ours``, so others hold at
        least ``configured - ours + 1`` of it, seen over the ``seen_for`` seconds our log
        covers; they are assumed to go on at that pace for a whole window. Each 429 takes
        at least one slot, and never more than half of what we had in the window.
        """
        current = self.at(now)
        since = now - self._lowered_at
        # A quiet as long as four rounds of probing at the pace in force ends the learning.
        quiet = 4 * self._window * (1 << min(max(0, self._repeats - 1), _MAX_DOUBLINGS))
        if self._window / 120 < since < quiet:
            # Again, and not the same burst of answers: someone holds that much of the key
            # for good; we had ``ours`` in the window when it came.
            self._failed = min(current, ours)
            self._repeats += 1
        elif since >= quiet:
            self._failed = self._configured  # long quiet: start afresh
            self._repeats = 0
        if retry_after is not None:
            lowered = current - 1
        else:
            others = max(1, self._configured - (ours - 1))
            seen_for = min(self._window, max(self._window / 12, seen_for))
            expected = others * self._window / seen_for
            target = math.floor(self._configured - expected) - 1
            lowered = max(ours // 2, min(current - 1, target))
        self._lowered_to = max(1, lowered)
        self._lowered_at = now
