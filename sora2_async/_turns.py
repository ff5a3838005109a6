"""The turns polls take before they are sent: how many may be on the wire at once.

Below half the window, any number; past it a few; near its edge, or while the limit is
tightened after 429s, one at a time, so that the first 429 stops the next poll before it
is sent. A poll that waited long for a turn of a few (behind others waiting out a window
of 429s) takes the one the window calls for when it has it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

import anyio

from ._limits import Limiter

__all__ = ["PollTurns"]

# Above this share of the limit used, polls go one at a time (see PollTurns.taken): a neighbour
# we cannot see fills the server's window while ours is at 80 % of it (a fifth of the key),
# and a burst of polls due together there would all be refused before the first 429 is
# back (30 at once for a burst of 200 videos at 1,000/h). Below it, they go together.
_EDGE = 0.75
# Above this share, polls go at most _NEAR_AT_ONCE at a time: a neighbour that spends more
# than the rest of the key fills the server's window while ours is only half full, and the
# polls of a burst of videos due together there (200 at once on 10,000/h beside a raw
# loop spending 60 %) were all on their way before the first 429 came back. A few at a
# time keep the cost of that to a few 429s and, in real time, let a burst drain at a few
# requests per round trip.
_NEAR = 0.5
_NEAR_AT_ONCE = 4
# How many polls may be on the wire at once (see PollTurns._level): any, a few, one.
_FREE, _NEAR_TURN, _EDGE_TURN = 0, 1, 2


class PollTurns:
    """The turns of one scheduler's polls, by how full the limiter's window is."""

    __slots__ = ("_limiter", "_turns")

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter
        self._turns: tuple[AbstractAsyncContextManager[object], ...] = (
            nullcontext(),  # reusable: it holds no state
            anyio.Semaphore(_NEAR_AT_ONCE),
            anyio.Lock(),
        )

    def __repr__(self) -> str:
        return f"<PollTurns level={self._level()}>"

    @asynccontextmanager
    async def taken(self) -> AsyncIterator[None]:
        """Hold the turn the window calls for when it is taken.

        A poll may wait long for a turn of a few at once (behind others that wait out a
        window of 429s): if the window calls for fewer at once by the time it has one, it
        queues again for that.
        """
        while True:
            level = self._level()
            async with self._turns[level]:
                if level == _FREE or self._level() <= level:  # a free one is never waited for
                    yield
                    return

    def _level(self) -> int:
        """How many polls may be on the wire at once, by how full the window is."""
        state = self._limiter.last_state
        if state.used + 1 >= _EDGE * state.limit or state.limit < state.configured_limit:
            # Near the edge of the window, or while the limit is tightened after 429s (some
            # one we cannot see shares the key), one poll at a time: the first 429 stops
            # the next poll before it is sent (polls due together would all be refused).
            return _EDGE_TURN
        if state.used + 1 >= _NEAR * state.limit:
            return _NEAR_TURN  # past half the window, a few at a time (see _NEAR)
        return _FREE
