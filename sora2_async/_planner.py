"""When a poll is worth a request: duration priors, what they learn, and the poll plan.

A poll costs 1/100 of an hour. The floor is two requests a video: the generate, and one
poll that finds it done. So each video gets one *final* poll, promised to it in the budget
when it is submitted and placed where the video is almost surely done: ``hi`` seconds (the
longest duration the tier is known to take) after submission. Spare budget buys *extra*
polls before that, every ``s`` seconds from ``lo`` (the shortest known duration), where
``s`` shrinks as the spare grows, down to ``target_delay`` and never below
``min_interval``. Extra polls never wait for budget: when the budget is busy they are
skipped, so they cannot delay a poll that finishes a video or a new submission.

A :class:`Planner` is what the scheduler asks; :class:`PollPlanner` is the default one, and
:class:`PollPolicy` holds its knobs. The planner is the one owner of the final-poll horizon
(:meth:`Planner.final_poll_after`) and of the learned durations. Everything here is
arithmetic on numbers given to it; nothing sleeps or sends.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ._limits import BudgetState
from ._models import ModelTier

__all__ = [
    "DEFAULT_PRIORS",
    "Demand",
    "DurationModel",
    "Planner",
    "PollPlan",
    "PollPlanner",
    "PollPolicy",
    "Tracked",
    "extra_allowance",
    "plan_next",
]

#: Typical generation time per tier, in seconds: (shortest, longest). From the provider's
#: documentation: sora2 about 1–3 minutes, the pro tiers about 3–8 minutes.
DEFAULT_PRIORS: Mapping[ModelTier, tuple[float, float]] = {
    ModelTier.SORA2: (60.0, 180.0),
    ModelTier.PRO_STANDARD: (180.0, 480.0),
    ModelTier.PRO_HIGH: (180.0, 480.0),
}

# Extra polls a video keeps when the window's share for them is spent but nothing binds.
_FLOOR = 3

# Samples needed before learned bounds replace the priors instead of only widening them.
_TRUST_SAMPLES = 20


def _check_priors(
    _: object, __: attrs.Attribute[Any], value: Mapping[ModelTier, tuple[float, float]]
) -> None:
    if not value:
        raise ValueError("priors must give a (lo, hi) range for at least one tier")
    for tier, (lo, hi) in value.items():
        if not 0 <= lo <= hi:
            raise ValueError(f"prior of {tier}: need 0 <= lo <= hi, got ({lo}, {hi})")


@attrs.frozen
class PollPolicy:
    """The knobs of the poll scheduler.

    ``min_interval``: never poll one task more often (the provider asks for 5 s or more).
    ``target_delay``: the detection delay aimed at when the budget is idle; polling faster
    buys little and costs requests. ``final_margin``: seconds after ``hi`` for the final poll.
    ``budget_share``: the part of the limit the planner counts on (the rest is slack).
    ``time_scale``: divide every duration by this (to match a simulator run faster).
    """

    min_interval: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    target_delay: float = attrs.field(default=9.5, validator=attrs.validators.ge(0))
    final_margin: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    budget_share: float = attrs.field(
        default=0.95, validator=[attrs.validators.gt(0), attrs.validators.le(1)]
    )
    priors: Mapping[ModelTier, tuple[float, float]] = attrs.field(
        factory=lambda: dict(DEFAULT_PRIORS), validator=_check_priors
    )
    learn: bool = True
    time_scale: float = attrs.field(default=1.0)

    @time_scale.validator
    def _check_scale(self, _: attrs.Attribute[float], value: float) -> None:
        if not value > 0:
            raise ValueError(f"time_scale must be positive, not {value!r}")

    def seconds(self, value: float) -> float:
        """A duration of the real API, in this policy's (possibly compressed) time."""
        return value / self.time_scale


class DurationModel:
    """What we know of how long each tier takes: the priors, then what ``generationTime`` says.

    Until ``_TRUST_SAMPLES`` videos of a tier have finished, observations only widen the
    prior; after that the observed range replaces it (a faster or slower API is learned).
    """

    def __init__(self, policy: PollPolicy) -> None:
        self._policy = policy
        self._samples: dict[ModelTier | None, deque[float]] = {}

    def observe(self, tier: ModelTier | None, generation_time: float) -> None:
        """Record that a video of ``tier`` took ``generation_time`` seconds of the API's time."""
        if self._policy.learn and generation_time >= 0:
            samples = self._samples.setdefault(tier, deque(maxlen=256))
            samples.append(self._policy.seconds(generation_time))

    def bounds(self, tier: ModelTier | None) -> tuple[float, float]:
        """``(lo, hi)``: the shortest and longest this tier is expected to take."""
        priors = self._policy.priors
        if tier is None or tier not in priors:  # unknown tier: the widest known range
            lo = min(p[0] for p in priors.values())
            hi = max(p[1] for p in priors.values())
        else:
            lo, hi = priors[tier]
        lo, hi = self._policy.seconds(lo), self._policy.seconds(hi)
        samples = self._samples.get(tier)
        if samples:
            seen_lo, seen_hi = min(samples), max(samples)
            if len(samples) >= _TRUST_SAMPLES:
                return seen_lo, seen_hi
            return min(lo, seen_lo), max(hi, seen_hi)
        return lo, hi


@attrs.define
class Tracked:
    """The poll state of one task (owned by the scheduler)."""

    tier: ModelTier | None
    anchor: float  # when it was submitted, or first seen if it came from elsewhere
    age_known: bool = True
    polls: int = 0
    last_poll: float | None = None
    overdue: bool = False  # its final poll found it still running


@attrs.frozen
class PollPlan:
    """The next poll of a task: when, and whether it is an extra (skippable) one."""

    at: float
    extra: bool


@attrs.frozen
class Demand:
    """What this process's scheduler has asked of the budget lately (it counts its own)."""

    submissions_in_window: int = 0  #: videos submitted within the last window
    extra_polls_in_window: int = 0  #: extra polls spent on latency within the last window


def extra_allowance(state: BudgetState, demand: Demand, share: float) -> int:
    """How many extra polls a running video may plan over its remaining uncertainty.

    Zero while anything waits for budget. Extra polls as a whole may use what is left of
    ``share × limit`` once every video of the window has its two requests, and half the limit
    stays free for videos yet to come (arrivals cluster, and the future is unknown). A video's
    part is its fair share of that, times 1.5: on a grid of k polls a video ends, on average,
    about halfway. When the window's part is spent, videos keep a thin floor of extra polls
    rather than none, so that no video waits for its final poll just because it came late.
    """
    if state.waiting_generates or state.waiting_polls:
        return 0
    submissions = max(1, demand.submissions_in_window)
    for_extras = share * state.limit - max(2 * submissions, state.limit / 2)
    per_video = 1.5 * for_extras / submissions
    if per_video < 1:  # the budget binds: two requests a video
        return 0
    if demand.extra_polls_in_window >= for_extras:
        return min(_FLOOR, math.floor(per_video))
    return math.floor(per_video)


def plan_next(
    task: Tracked,
    now: float,
    *,
    bounds: tuple[float, float],
    policy: PollPolicy,
    allowance: int,
) -> PollPlan:
    """When to poll ``task`` next."""
    lo, hi = bounds
    min_interval = policy.seconds(policy.min_interval)
    if not task.age_known and task.polls == 0:
        return PollPlan(now, extra=False)  # from elsewhere: one look says how far it is
    earliest = now if task.last_poll is None else task.last_poll + min_interval
    if task.overdue:
        # Slower than ever seen: back off in proportion to how long it has run.
        since = task.last_poll if task.last_poll is not None else now
        wait = max(min_interval, 0.25 * (now - task.anchor - lo))
        return PollPlan(max(earliest, since + wait), extra=False)
    final_at = max(earliest, task.anchor + hi + policy.seconds(policy.final_margin))
    if allowance > 0:
        step = max(min_interval, policy.seconds(policy.target_delay), (hi - lo) / (allowance + 1))
        grid = task.anchor + lo + step
        if task.last_poll is not None:
            grid = max(grid, task.last_poll + step)
        at = max(earliest, grid)
        if at < final_at - min_interval:
            return PollPlan(at, extra=True)
    return PollPlan(final_at, extra=False)


@runtime_checkable
class Planner(Protocol):
    """Decides when each running video is worth a poll (``Sora2Client(planner=...)``).

    The scheduler owns the tasks and the sleeping; the planner only answers questions.
    """

    def final_poll_after(self, tier: ModelTier | None) -> float:
        """Seconds from submission to the final poll of a video of ``tier``, as planned now.

        A submission waits until the budget can carry that poll when it falls due.
        """

    def next_poll(self, task: Tracked, now: float, budget: BudgetState, demand: Demand) -> PollPlan:
        """When to poll ``task`` next, and whether that poll is an extra one."""

    def extra_still_worth(self, budget: BudgetState, demand: Demand) -> bool:
        """Whether a planned extra poll is still worth sending (asked when it falls due)."""

    def observe(self, tier: ModelTier | None, generation_time: float) -> None:
        """A video of ``tier`` took ``generation_time`` seconds of the API's time."""


class PollPlanner:
    """The default planner: priors per tier, learned durations, a final poll per video,
    and extra polls from idle budget (the module docstring says how)."""

    def __init__(self, policy: PollPolicy | None = None) -> None:
        self.policy = policy or PollPolicy()
        self.durations = DurationModel(self.policy)

    def __repr__(self) -> str:
        return f"<PollPlanner {self.policy!r}>"

    def final_poll_after(self, tier: ModelTier | None) -> float:
        """Seconds from submission to the final poll: the longest known duration plus margin."""
        return self.durations.bounds(tier)[1] + self.policy.seconds(self.policy.final_margin)

    def next_poll(self, task: Tracked, now: float, budget: BudgetState, demand: Demand) -> PollPlan:
        """When to poll ``task`` next (see :func:`plan_next`)."""
        lo, hi = self.durations.bounds(task.tier)
        if not task.age_known:
            lo = 0.0  # it may have run for a while already
        allowance = extra_allowance(budget, demand, self.policy.budget_share)
        return plan_next(task, now, bounds=(lo, hi), policy=self.policy, allowance=allowance)

    def extra_still_worth(self, budget: BudgetState, demand: Demand) -> bool:
        """Whether idle budget still allows an extra poll."""
        return extra_allowance(budget, demand, self.policy.budget_share) > 0

    def observe(self, tier: ModelTier | None, generation_time: float) -> None:
        """Learn from a finished video's ``generationTime``."""
        self.durations.observe(tier, generation_time)
