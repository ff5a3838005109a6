"""When a poll that is due may go on the wire: how many at once, and which goes first.

The planner says when a poll is due and the budget whether it may be sent; this module only
orders the polls that are due together, so that the answer of one can save the others:

* **By how full the window is.** Past half of it, polls go at most :data:`NEAR_AT_ONCE` at
  a time; past :data:`EDGE`, or while the limit is tightened after 429s, one at a time. A
  neighbour we cannot see fills the server's window while ours is part full, and polls due
  together there would all be on their way before the first 429 came back.
* **Final polls due together start one at a time.** Videos submitted together have their
  final polls due together, and when the priors are too short every one of them finds its
  video running: the first answers move the tier's horizon (``_durations``), and the
  others, planned again, wait for it instead of spending a request each on a video that is
  surely still running (32 re-polls at 181 s on a 100/h batch of 3-9 minute videos). So a
  final poll of a tier waits while as many of its tier are on the wire as the tier has
  earned: twice as many for each final that found its video done; for each that found it
  running, half the doublings earned so far (the square root: 1,024, 32, 4, 2, 1), a
  slow start as TCP's that falls back fast. A final held back plans again only when
  the tier's recent finals found their videos mostly running (more than two in three):
  where half of them end (a bimodal tier), holding the done half back for the
  moved horizon would cost more delay than the running half's re-polls cost requests.
  When the priors are right, N finals due together take about log2(N) round trips.

The scheduler asks, sends, and then says what the answer was (:meth:`PollTurns.final_answered`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext

import anyio

from ._limits import BudgetState
from ._models import ModelTier

__all__ = ["EDGE", "NEAR", "NEAR_AT_ONCE", "PollTurns"]

#: Above this share of the limit used, polls go one at a time: a neighbour we cannot see
#: fills the server's window while ours is at 80 % of it (a fifth of the key), and a burst
#: of polls due together there would all be refused before the first 429 is back (30 at
#: once for a burst of 200 videos at 1,000/h).
EDGE = 0.75
#: Above this share, polls go at most NEAR_AT_ONCE at a time: a neighbour that spends more
#: than the rest of the key fills the server's window while ours is only half full, and the
#: polls of a burst of videos due together there (200 at once on 10,000/h beside a raw loop
#: spending 60 %) were all on their way before the first 429 came back. A few at a time keep
#: the cost of that to a few 429s and, in real time, let a burst drain at a few requests per
#: round trip.
NEAR = 0.5
NEAR_AT_ONCE = 4

# After this many finals of a tier in a row found their video done, its finals go as the
# window allows (2 ** 10 at once).
_OPEN_AFTER = 10

# Finals answered, per tier, past which the counts of what they found are halved.
_RECENT = 64

_OPEN: AbstractAsyncContextManager[object] = nullcontext()


class PollTurns:
    """The order in which due polls go on the wire (see the module docstring)."""

    __slots__ = ("_answer", "_edge", "_near", "_out", "_seen", "_streak")

    def __init__(self) -> None:
        self._edge = anyio.Lock()
        self._near = anyio.Semaphore(NEAR_AT_ONCE)
        self._out: dict[ModelTier | None, int] = {}  # final polls on the wire, per tier
        self._streak: dict[ModelTier | None, int] = {}  # finals found done since one ran on
        self._answer: dict[ModelTier | None, anyio.Event] = {}  # set at the next answer
        self._seen: dict[ModelTier | None, tuple[int, int]] = {}  # recent: (done, running)

    def __repr__(self) -> str:
        return f"<PollTurns finals on the wire={sum(self._out.values())}>"

    def window(self, state: BudgetState) -> AbstractAsyncContextManager[object]:
        """What a poll waits for before it is sent, by how full the window is (``state``)."""
        if state.used + 1 >= EDGE * state.limit or state.limit < state.configured_limit:
            # Near the edge of the window, or while the limit is tightened after 429s (some
            # one we cannot see shares the key), one poll at a time: the first 429 stops
            # the next poll before it is sent (polls due together would all be refused).
            return self._edge
        if state.used + 1 >= NEAR * state.limit:
            return self._near  # past half the window, a few at a time
        return _OPEN

    def final_wait(self, tier: ModelTier | None) -> anyio.Event | None:
        """What a final poll of ``tier`` waits for before it may go (set when a final of
        the tier now on the wire is answered), or ``None`` if it may go now."""
        out = self._out.get(tier, 0)
        if out == 0 or out < 1 << self._streak.get(tier, 0):
            return None
        return self._answer.setdefault(tier, anyio.Event())

    def mostly_running(self, tier: ModelTier | None) -> bool:
        """Whether the recent finals of ``tier`` found their videos mostly running (more
        than two in three): a final held back while their answers moved its horizon is then
        better planned again than sent."""
        done, running = self._seen.get(tier, (0, 0))
        return running > 2 * done

    def final_out(self, tier: ModelTier | None) -> None:
        """A final poll of ``tier`` goes on the wire (once :meth:`final_wait` said so); it
        must be followed by :meth:`final_answered`."""
        self._out[tier] = self._out.get(tier, 0) + 1

    def final_answered(self, tier: ModelTier | None, *, ended: bool | None) -> None:
        """A final poll of ``tier`` came back: its video ``ended``, was still running
        (``False``), or nothing was learnt (``None``: it failed or was not sent)."""
        self._out[tier] -= 1
        if ended is not None:
            streak = self._streak.get(tier, 0)
            # Done: one more doubling. Running: half the doublings (the allowance, 2 ** streak,
            # to its square root), so a tier whose priors went wrong is back to one quickly.
            self._streak[tier] = min(streak + 1, _OPEN_AFTER) if ended else streak // 2
            done, running = self._seen.get(tier, (0, 0))
            done, running = done + ended, running + (not ended)
            if done + running >= _RECENT:  # halved now and then: recent answers count most
                done, running = done // 2, running // 2
            self._seen[tier] = (done, running)
        answer = self._answer.pop(tier, None)
        if answer is not None:
            answer.set()
