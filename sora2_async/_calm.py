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

from ._window import EPSILON

__all__ = ["Calm"]

# The first pause and the longest, as shares of the window (5 s and 2 min of an hour): a
# poll interval, and long enough for a burst's polls to leave the window, short beside it.
_FIRST = 1 / 720
_LONGEST = 1 / 30


class Calm:
    """When this client's next request may go, after the 429s it has seen in a row.

    A 429 of a request sent before the pause now running began (refused by the same full
    window as the one that started it) counts, but does not double the pause; an answer
    ends the run only for a request sent after the last 429 that did.
    """

    __slots__ = ("_first", "_longest", "_pause", "_started", "refusals", "until")

    def __init__(self, window: float) -> None:
        self._first = window * _FIRST
        self._longest = window * _LONGEST
        self._pause = 0.0  # the last pause; 0 once the run of 429s is over
        self._started = -math.inf  # when the last pause began
        self.until = -math.inf  #: nothing goes before this (``anyio.current_time()``)
        self.refusals = 0  #: 429s answered to this client, in all

    def __repr__(self) -> str:
        left = max(0.0, self.until - anyio.current_time())
        return f"<Calm for {left:.1f}s pause={self._pause:g}s refusals={self.refusals}>"

    def refused(self, sent_at: float) -> None:
        """A request sent at ``sent_at`` was refused: pause, twice as long as the last
        time if the run of 429s goes on."""
        self.refusals += 1
        if sent_at <= self._started:
            return  # on its way before the pause began: the same full window
        now = anyio.current_time()
        self._pause = self._first if self._pause <= 0 else min(self._longest, 2 * self._pause)
        self._started = now
        self.until = max(self.until, now + self._pause)

    def answered(self, sent_at: float) -> None:
        """A request sent at ``sent_at`` was answered: if it went after the last pause
        began, the run of 429s is over (the next pause is the first again)."""
        if sent_at > self._started:
            self._pause = 0.0

    def in_a_run(self) -> bool:
        """Whether 429s came and no answer to a request sent after them yet."""
        return self._pause > 0

    def pausing(self) -> bool:
        """Whether a request asked now would have to wait."""
        return self.until - anyio.current_time() > EPSILON

    async def wait(self) -> None:
        """Sleep until the pause is over, however often a 429 lengthens it meanwhile."""
        # A deadline a hair past the clock's tick is reached (a float sum can put it where
        # sleeping toward it never moves the clock: it spun so, on a MockClock at 5,000 s).
        while (left := self.until - anyio.current_time()) > EPSILON:  # noqa: ASYNC110
            await anyio.sleep(left)
