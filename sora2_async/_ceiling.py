"""The limit in force: the configured one, lowered by 429s, restored by quiet windows.

A 429 means the server counted more than we did: another consumer shares the key, or the
server counts differently. :meth:`Ceiling.lower` takes away what the others seem to use;
each full window without a 429 gives some back: doubling while below half the configured
limit (a key that was busy for a while is not starved for days), one slot at a time above.
The value is a pure function of time since the last 429, so looking at it changes nothing.

It learns from the 429s: the level in force when one came is where someone else was, so
the climb back stops one slot below it. From there it probes, one slot, after a window at
first, then after 8, then after every 32: a neighbour that never backs off costs a 429
each time we probe where it is, so a day of windows pays three 429s in all (one where it
was found, one where the climb back met it, one probe) rather than one every other window.
A probe that holds for a whole window ends the learning: the neighbour shrank or left, and
the climb goes on to the configured limit (within about 32 + 20 windows however long it
was there). A 429 more than 64 windows after the last is learnt afresh. What it learnt is
four numbers (:attr:`Ceiling.state`): a shared store keeps them, so every process of a key
probes by the same count and a process that restarts forgets nothing
(``redis/admission.lua`` does the same arithmetic; ``tests/test_redis_script.py`` compares).
"""

from __future__ import annotations

import math

__all__ = ["Ceiling"]

# Windows spent one slot below where the 429s came before the next probe there, by how many
# came in a row: 1, then 8, then 32 for good (a neighbour that left is noticed within 32).
_PROBE_EVERY = (1, 8, 32)
# Windows after the last 429 past which the next is learnt afresh, whatever came before: the
# neighbour it counted is old news (a shared store keeps the count for good otherwise, and a
# 429 a month on would wait 32 windows for its first probe).
_FORGET_AFTER = 64


def _probe_every(repeats: int) -> int:
    return _PROBE_EVERY[min(max(0, repeats - 1), len(_PROBE_EVERY) - 1)]


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
        failed: int | None = None,
        repeats: int = 0,
    ) -> None:
        self._configured = configured
        self._window = window
        self._lowered_to = configured if lowered_to is None else lowered_to
        self._lowered_at = lowered_at
        # The limit in force when the last 429 came, and 429s in a row with none of our
        # probes holding in between.
        self._failed = configured if failed is None else failed
        self._repeats = repeats

    @property
    def state(self) -> tuple[int, float, int, int]:
        """``(lowered_to, lowered_at, failed, repeats)``: what a shared store keeps, and
        gives back to the constructor, to rebuild it."""
        return self._lowered_to, self._lowered_at, self._failed, self._repeats

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

    def _replay(self, now: float) -> tuple[int, bool]:
        """The limit at ``now``, and whether the learning has ended by then (a probe held
        a whole window, or the limit is back at the configured one)."""
        value = self._lowered_to
        if value >= self._configured:
            return self._configured, True
        cap = max(1, self._failed - 1)  # the climb stops below where the last 429 came
        every = _probe_every(self._repeats)
        held = False
        waited = 0
        for _ in range(self._windows_since(now)):
            if value >= self._failed:  # a probe there held the window that just ended
                held, cap = True, self._configured
            if 2 * value <= self._configured and value < cap:
                value = min(cap, 2 * value)
            elif value < cap:
                value += 1
            else:
                waited += 1
                if waited % every == 0:
                    value = min(self._configured, value + 1)
            if value == self._configured:
                return value, True
        return value, held

    def at(self, now: float) -> int:
        """The limit at time ``now``."""
        return self._replay(now)[0]

    def next_rise(self, now: float) -> float:
        """When the limit next goes up by itself (``inf`` when it is at the configured one)."""
        if self.at(now) >= self._configured:
            return math.inf
        return self._lowered_at + (self._windows_since(now) + 1) * self._window

    def lower(self, now: float, *, ours: int, seen_for: float, retry_after: float | None) -> None:
        """Account for a 429 at ``now``, while our window held ``ours`` (the refused one too).

        ``ours`` leaves out our earlier 429s still in the window. The budget counts each as
        spent; whether the server does is not documented (the simulator does by default).
        Left out, the others' share comes out the larger of the two readings, so the limit
        is right for a server that does not count them and a little low for one that does;
        counted, every 429 of ours would, against the first kind, let one more request into
        a full server window as it left ours (a 429 every few milliseconds at the turn of a
        window beside a neighbour that never backs off).

        With ``Retry-After`` the server says when it frees: it is trusted, and one slot goes.
        Without, the server's window is full while ours holds ``ours``, so others hold at
        least ``configured - ours + 1`` of it, seen over the ``seen_for`` seconds our log
        covers; they are assumed to go on at that pace for a whole window. Each 429 takes
        at least one slot, and never more than half of what we had in the window.
        """
        current, ended = self._replay(now)
        # Learn afresh after the first 429, or once we got past where the last one came (a
        # probe that held while we used less than it proves nothing: that is a repeat), or
        # long after the last.
        stale = now - self._lowered_at > _FORGET_AFTER * self._window
        if self._repeats > 0 and not stale and not ended:
            # The others were on the key at the last 429, still being learnt: their share
            # of the server's window has gathered since then at least, however little of it
            # our log covers now (a log emptied by a wait, extrapolated over its last 543 s,
            # cut 272 to 60).
            seen_for = max(seen_for, now - self._lowered_at)
        if self._repeats == 0 or stale or (ended and ours > self._failed):
            self._failed, self._repeats = min(current, ours), 1
        elif now - self._lowered_at > self._window / 120 and ours <= current:
            # Again, and not the same burst: not a request sent before the limit came down
            # (we held more than the limit now in force), which says nothing new.
            self._failed, self._repeats = min(current, ours), self._repeats + 1
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
