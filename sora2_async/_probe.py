"""After a quiet spell, the first request goes alone.

While nothing of ours has been answered for a while, what the server's window holds is
unknown: someone else on the key (another program, a loop that never backs off) may have
filled it meanwhile. Requests that fall due together then (a burst of submissions, polls
due at one instant) would all be refused before the first 429 came back: 200 at once
beside a raw loop spending 60 % of a 10,000/h key (``benchmarks/README.md``). So the first
goes alone, and the rest ask the budget once its answer is in. After a 429 the budget
holds them, and the first after it goes alone again. It costs them one answer's latency
after each quiet spell, and nothing in requests.

The probe is per process: a shared store's other owners have their own.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["QuietProbe", "Turn"]


class QuietProbe:
    """Sends the first request after ``quiet`` seconds without an answer on its own."""

    __slots__ = ("_answered_at", "_flying", "_probe", "_quiet")

    def __init__(self, quiet: float) -> None:
        self._quiet = quiet
        self._answered_at = -math.inf  # when a request of ours last ended
        self._flying = 0  # requests admitted and not yet ended
        self._probe: anyio.Event | None = None  # set when the probe on its way ends

    def __repr__(self) -> str:
        return (
            f"<QuietProbe quiet={self._quiet:g}s flying={self._flying} "
            f"probing={self._probe is not None}>"
        )

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[Turn]:
        """One request's turn: ask the budget and send inside it.

        Entering waits while a probe is on its way (cancellable: nothing is taken). The
        turn ends after the permit does, so that a 429 the probe met is the budget's before
        the requests held back ask it.
        """
        while self._probe is not None:
            await self._probe.wait()
        turn = Turn(self)
        try:
            yield turn
        finally:
            if turn.admitted:
                self._flying -= 1
                if not turn.refused:  # a 429 says the window is full: the next goes alone too
                    self._answered_at = anyio.current_time()
            if turn.probe is not None:
                self._probe = None
                turn.probe.set()


class Turn:
    """A request's place in its :class:`QuietProbe` (see :meth:`QuietProbe.turn`)."""

    __slots__ = ("_of", "admitted", "probe", "refused")

    def __init__(self, of: QuietProbe) -> None:
        self._of = of
        self.admitted = False
        self.refused = False  #: set by the caller when the answer was a 429
        self.probe: anyio.Event | None = None  # this request is the probe

    async def go(self) -> None:
        """Call once admitted, just before sending: it goes alone if the key was quiet;
        if a probe set off meanwhile (while this one waited for budget), after its answer."""
        of = self._of
        while of._probe is not None:
            await of._probe.wait()
        if of._flying == 0 and anyio.current_time() - of._answered_at > of._quiet:
            self.probe = of._probe = anyio.Event()
        of._flying += 1
        self.admitted = True
