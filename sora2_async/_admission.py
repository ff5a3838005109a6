"""The admission rule, once, for every store: pure arithmetic over what a store holds.

A store (memory, SQLite, Redis) shows its contents as a :class:`Window` at one instant;
the waiting requests that compete for its next slot are :class:`Contender` s (in memory,
the heads of this process's queues; in a shared store, every owner's heads). These
functions say who is served next, whether it fits now, and when the answer can next
change by time alone. The Redis store's Lua script implements the same rule, and its tests
compare the two.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Protocol

import attrs

from ._limits import RequestKind

__all__ = [
    "PROMISE_SLIP",
    "Contender",
    "Window",
    "decide",
    "extra_fits",
    "fits",
    "next_change",
    "next_free_at",
    "serves_next",
]


#: Seconds a promised poll due before a new submission's own may wait for its slot.
PROMISE_SLIP = 30.0


@attrs.frozen
class Contender:
    """A request waiting for a slot: what it is, since when, and its final poll's horizon.

    ``promise`` is ``None`` when it promises no poll (a poll, or a bare generate).
    """

    kind: RequestKind
    since: float
    promise: float | None = None
    owner: str = ""


class Window(Protocol):
    """What a store holds at the instant ``now`` (every owner's entries and leases)."""

    @property
    def now(self) -> float: ...
    @property
    def limit(self) -> int: ...  # the limit in force now
    @property
    def used(self) -> int: ...  # entries counting now, in flight ones included
    @property
    def reserved(self) -> int: ...  # live leases
    @property
    def blocked_until(self) -> float: ...  # a server's Retry-After
    @property
    def rises_at(self) -> float: ...  # when a tightened limit next rises by itself

    def later(self, when: float) -> int:
        """Entries that will still count at ``when`` (in flight ones always do)."""

    def expiry(self, k: int) -> float | None:
        """When the ``k``-th entry to leave the window leaves (answered ones only)."""

    def first_expiry_after(self, when: float) -> float | None:
        """The first time later than ``when`` at which an answered entry leaves."""

    # A store that knows when its leases fall due may also show them, ascending, as
    # ``lease_dues`` (a sequence of times): ``fits`` then checks each of them (see there).


def fits(window: Window, contender: Contender) -> bool:
    """Whether ``contender`` can go now, as far as the budget goes.

    A poll needs one slot: the promised ones are kept for polls. Anything else must leave
    every promised poll, and its own, a slot when they fall due (``promise`` seconds from
    now, at most): only what will still be in the window then is counted.

    A promised poll due sooner than ``promise`` meets a fuller window (fewer entries have
    left by then), so where a store shows its leases' due times (``lease_dues``), each
    earlier one is checked at its own time too: the window then, this request, and the
    polls promised by then. Without that, a submission could take the slot an earlier
    promised poll needs, and that video would wait for the window to free (up to an hour).
    An earlier poll may wait up to ``PROMISE_SLIP`` seconds for its slot, so that a
    window that frees as fast as it fills (a bulk batch) keeps its pace.
    """
    if window.now < window.blocked_until or window.used + 1 > window.limit:
        return False
    if contender.kind is RequestKind.POLL:
        return True
    own = 0 if contender.promise is None else 1
    horizon = window.now + (contender.promise or 0.0)
    later = window.later(horizon)
    if later + window.reserved + 1 + own > window.limit:
        return False
    dues: Sequence[float] | None = getattr(window, "lease_dues", None)
    if not dues:
        return True
    # The k-th lease due before the horizon needs later(its due + slip) + k + 1 <= limit.
    # ``later`` only falls with time and the dues ascend, so the room one lease's time
    # leaves covers every lease after it up to that room: the check jumps there instead of
    # looking at each (a submission costs the same at 10 or 10,000 in flight).
    due_by, before = 1, bisect.bisect_left(dues, horizon)
    while due_by <= before:
        room = window.limit - 1 - window.later(max(window.now, dues[due_by - 1]) + PROMISE_SLIP)
        if due_by > room:
            return False
        due_by = room + 1
    return True


def serves_next(
    window: Window, contenders: Iterable[Contender], *, starve_after: float
) -> Contender | None:
    """Who is served next: the oldest poll, unless the oldest submission has starved.

    A starved submission goes first only once it can go: until then the polls ahead of it
    are what end videos and give back the promised slots it waits for, so holding them
    back would deadlock.
    """
    poll: Contender | None = None
    submission: Contender | None = None
    for c in contenders:
        if c.kind is RequestKind.POLL:
            if poll is None or c.since < poll.since:
                poll = c
        elif submission is None or c.since < submission.since:
            submission = c
    if submission is None:
        return poll
    if poll is None or (window.now - submission.since >= starve_after and fits(window, submission)):
        return submission
    return poll


def next_free_at(window: Window) -> float:
    """When a poll could next go out, as far as the window alone can tell."""
    excess = window.used + 1 - window.limit
    free_at = window.now
    if excess > 0:  # that many answered entries must leave first, or the limit must rise
        expiry = window.expiry(excess)
        free_at = window.rises_at if expiry is None else min(expiry, window.rises_at)
    return max(window.blocked_until, free_at)


def next_change(window: Window, contender: Contender, *, starving_at: float = math.inf) -> float:
    """When the answer for ``contender`` may change with time alone (nobody telling it).

    ``starving_at``: when a waiting submission starts to starve (the head may change then).
    """
    now = window.now
    times = [window.blocked_until, window.rises_at, starving_at]
    first = window.expiry(1)
    if first is not None:
        times.append(first)
    if contender.promise:  # its promised polls fit once now + promise passes an expiry
        later = window.first_expiry_after(now + contender.promise)
        if later is not None:
            times.append(later - contender.promise)
    return min((t for t in times if t > now), default=math.inf)


def decide(
    window: Window, me: Contender, rivals: Iterable[Contender], *, starve_after: float
) -> float | None:
    """``None`` when ``me`` may be admitted now; else when to look again, by time alone.

    ``rivals`` are the other requests waiting for the same store (``me`` excluded).
    """
    contenders = [me, *rivals]
    if serves_next(window, contenders, starve_after=starve_after) is me and fits(window, me):
        return None
    starving_at = math.inf
    if any(c.kind is RequestKind.POLL for c in contenders):
        oldest = min((c.since for c in contenders if c.kind is not RequestKind.POLL), default=None)
        if oldest is not None:
            starving_at = oldest + starve_after
    return next_change(window, me, starving_at=starving_at)


def extra_fits(window: Window, rivals: Iterable[Contender]) -> bool:
    """Whether an extra poll may take a slot now: nobody waits, and no promise is touched."""
    if any(True for _ in rivals):
        return False
    return fits(window, Contender(RequestKind.EXTRA_POLL, window.now))
