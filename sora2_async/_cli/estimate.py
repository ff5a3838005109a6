"""How long a batch will take: a pure estimate from the budget and the planner's durations.

When the budget binds, a video costs two requests (its generate, and one final poll placed
where its tier is almost surely done), so a key of ``limit`` requests per ``window``
finishes about ``limit / 2`` videos a window. The first wave goes out on what is free now;
every further ``limit`` requests wait for a window to pass; the last wave's videos then take
as long as the planner expects (``client.planner.final_poll_after(tier)``). With
``max_in_flight``, at most that many run at once, each for its tier's duration. The
estimate is the larger of the two bounds, in the seconds of the clock the figures are in
(the command line's ``--time-scale`` compresses them all alike).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .._models import ModelTier

__all__ = ["REQUESTS_PER_VIDEO", "estimate_seconds", "format_duration"]

#: A generate and the final poll that sees the video done: the floor the scheduler aims at.
REQUESTS_PER_VIDEO = 2


def estimate_seconds(
    *,
    to_send: Sequence[ModelTier | None],
    running: Sequence[ModelTier | None] = (),
    limit: int,
    window: float,
    free_now: int | None = None,
    final_poll_after: Callable[[ModelTier | None], float],
    max_in_flight: int | None = None,
) -> float:
    """Seconds until the last of ``to_send`` and ``running`` is done, roughly.

    Args:
        to_send: the tier of each video still to submit.
        running: the tier of each video already running (one poll left each).
        limit: requests the key may send per ``window`` seconds.
        window: the budget's window, in seconds.
        free_now: requests free right now (default: all of ``limit``).
        final_poll_after: the planner's seconds from submission to a video's final poll.
        max_in_flight: at most this many videos at once (``None``: as the budget carries).
    """
    tiers = [*to_send, *running]
    if not tiers:
        return 0.0
    if limit < 1 or window <= 0:
        raise ValueError(f"the budget needs a positive limit and window, not {limit}/{window}")
    longest = max(final_poll_after(tier) for tier in tiers)
    needed = REQUESTS_PER_VIDEO * len(to_send) + len(running)
    free = limit if free_now is None else max(0, min(limit, free_now))
    waves = 0 if needed <= free else math.ceil((needed - free) / limit)
    by_budget = waves * window + longest
    if not max_in_flight or len(tiers) <= max_in_flight:
        return by_budget
    mean = sum(final_poll_after(tier) for tier in tiers) / len(tiers)
    by_slots = math.ceil(len(tiers) / max_in_flight) * mean
    return max(by_budget, by_slots)


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2 h 05 min``: rounded for a person, not a stopwatch."""
    if not math.isfinite(seconds):
        return "unknown"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
