"""The pause of one API caller's requests after 429s in a row.

A 429 says the server's window is full, not by how much. The limiter tightens its limit to
what our window held, and lets the next request go as soon as one of ours leaves it, which
a neighbour that spends steadily refuses again: ten in a row, each 10 below the last, as a
burst's polls left the window beside a raw loop spending 60 % of a 1,000/h key. So after a
429 nothing of this caller goes for a pause, which doubles with each 429 in a row and ends
with the first answer: 5 s, 10 s, 20 s ... up to 2 minutes of an hour's window.
"""

from __future__ import annotations

import math

import anyio

__all__ = ["Calm"]

# The first pause and the longest, as shares of the window (5 s and 2 min of an hour): a
# poll interval, and long enough for a burst's polls to leave the window, short beside it.
_FIRST = 1 / 720
_LONGEST = 1 / 30


class Calm:
    """When this caller's next request may go, after the 429s it has seen in a row."""

    __slots__ = ("_first", "_longest", "_pause", "refusals", "until")

    def __init__(self, window: float) -> None:
        self._first = window * _FIRST
        self._longest = window * _LONGEST
        self._pause = 0.0  # the last pause; 0 once a request was answered
        self.until = -math.inf  #: nothing goes before this (``anyio.current_time()``)
        self.refusals = 0  #: 429s answered to this caller, in all

    def __repr__(self) -> str:
        left = max(0.0, self.until - anyio.current_time())
        return f"<Calm for {left:.1f}s pause={self._pause:g}s refusals={self.refusals}>"

    def refused(self) -> None:
        """A 429 came: pause, twice as long as the last time if no answer came between."""
        self.refusals += 1
        self._pause = self._first if self._pause <= 0 else min(self._longest, 2 * self._pause)
        self.until = max(self.until, anyio.current_time() + self._pause)

    def answered(self) -> None:
        """An answer came: the 429s in a row are over (the next pause is the first again)."""
        self._pause = 0.0

    def pausing(self) -> bool:
        """Whether a request asked now would have to wait."""
        return anyio.current_time() < self.until

    async def wait(self) -> None:
        """Sleep until the pause is over. (A 429 that comes meanwhile lengthens it for the
        next to ask; the caller sees it came, and asks again.)"""
        left = self.until - anyio.current_time()
        if left > 0:
            await anyio.sleep(left)
