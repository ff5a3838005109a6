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
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ._durations import DurationModel
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

# With at least this many extra polls to spend, a video's first poll may come before the
# shortest duration known (a faster tier is found out only by looking early) ...
_EARLY = 4
# The most polls a video past its final poll may have had for more extra polls.
_MAX_EXTRA = 12
# The share of overruns a first window spanning several windows is insured for.
_INSURED_SHARE = 2.0 / 3.0
# ... for this many videos of a tier, while none of the tier has ended: one that ends
# early teaches every other video of the tier to poll early.
_PROBES = 2


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
    ``max_extra_polls``: the most extra polls a video spends before its final poll, however
    idle the budget (``None``: no bound). Over the prior's range 14 are ``target_delay``
    apart (a video ends halfway, so about eight requests in all); a tier found slower than
    its prior spreads what it has left over the range it is then thought to take.
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
    max_extra_polls: int | None = 14
    time_scale: float = attrs.field(default=1.0)

    @time_scale.validator
    def _check_scale(self, _: attrs.Attribute[float], value: float) -> None:
        if not value > 0:
            raise ValueError(f"time_scale must be positive, not {value!r}")

    def seconds(self, value: float) -> float:
        """A duration of the real API, in this policy's (possibly compressed) time."""
        return value / self.time_scale


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
    #: submissions a batch holds that have not asked the budget yet (they will need it)
    queued_submissions: int = 0
    #: submissions a window is expected to see at the pace of those within the last one
    #: (a window's worth at the rate between the first and the last of them)
    expected_submissions: float = 0.0


def extra_allowance(
    state: BudgetState,
    demand: Demand,
    share: float,
    *,
    overrun_share: float = 0.0,
    floor: bool = True,
) -> int:
    """How many extra polls a running video may plan over its remaining uncertainty.

    Zero while anything waits for budget. Extra polls as a whole may use what is left of
    ``share × limit`` once every video of the window, and every submission a batch still
    holds, has its two requests (and the re-polls that ``overrun_share`` of final polls
    finding their video running will cost), and half the limit stays free for videos yet to
    come (arrivals cluster, and the future is unknown). A video's part is its fair share of
    that, times 1.5: on a grid of k polls a video ends, on average, about halfway. When the
    window's part is spent, videos keep a thin floor of extra polls rather than none, so that
    no video waits for its final poll just because it came late (``floor``; not for an overdue
    video, which has had its share).
    """
    if state.waiting_generates or state.waiting_polls:
        return 0
    submissions = max(1, demand.submissions_in_window)
    # Videos arriving one by one are demand before they arrive: a stream that has just
    # begun counts at its pace, not as the few seen so far.
    coming = max(submissions, demand.expected_submissions)
    needed = (2 + 1.5 * overrun_share) * (coming + demand.queued_submissions)
    for_extras = share * state.limit - max(needed, state.limit / 2)
    per_video = 1.5 * for_extras / coming  # (shared with the videos on their way too)
    # Extra polls only while the window keeps room for a re-poll of every video of it: a
    # video whose final poll finds it running needs one, and the window must have it then.
    room = share * state.limit - state.used - state.reserved - 1.5 * submissions
    if per_video < 1 or room <= 0:  # the budget binds: two requests a video
        return 0
    if demand.extra_polls_in_window >= for_extras:
        return min(_FLOOR, math.floor(per_video)) if floor else 0
    return math.floor(per_video)


def plan_next(
    task: Tracked,
    now: float,
    *,
    bounds: tuple[float, float],
    policy: PollPolicy,
    allowance: int,
    typical: float | None = None,
    early: bool = False,
    left: int | None = None,
) -> PollPlan:
    """When to poll ``task`` next.

    ``typical``: the longest duration seen so far, when it is below ``bounds``' ``hi``:
    extra polls are packed over ``(lo, typical)``, where most videos end, before the rest.
    ``early``: with idle budget, look once before ``lo`` (a probe of the tier's speed).
    ``left``: the most extra polls the task may still spend; they are spread over what is
    left of the range (from its last look), so a range that moved out keeps them for later.
    """
    lo, hi = bounds
    min_interval = policy.seconds(policy.min_interval)
    if not task.age_known and task.polls == 0:
        return PollPlan(now, extra=False)  # from elsewhere: one look says how far it is
    earliest = now if task.last_poll is None else task.last_poll + min_interval
    horizon = task.anchor + hi + policy.seconds(policy.final_margin)
    since = task.last_poll if task.last_poll is not None else now
    if task.overdue and horizon <= since:
        # Slower than the model knows (or it may not learn): back off in proportion to how
        # long it has run.
        wait = max(min_interval, 0.25 * (now - task.anchor - lo))
        return PollPlan(max(earliest, since + wait), extra=False)
    final_at = max(earliest, horizon)
    if allowance > 0:
        start = since if task.overdue else task.anchor + lo  # an overdue one: from its last look
        end = hi
        if typical is not None:
            # Dense where the videos seen so far ended (a quarter of the range at least:
            # one sample says little of the spread), then over the rest.
            typical = max(typical, lo + (hi - lo) / 4)
            if typical < hi and now - task.anchor < typical:
                end = typical
        early = early and allowance >= _EARLY and not task.overdue
        # Idle budget: one of the extra polls comes before the shortest known duration, in
        # case this tier is faster than known; the grid after it has one point fewer.
        step = max(
            min_interval,
            policy.seconds(policy.target_delay),
            (task.anchor + end - start) / (allowance + (0 if early else 1)),
            0.1 * (now - task.anchor) if task.overdue else 0.0,
            0.0 if left is None else (task.anchor + end - max(start, since)) / (left + 1),
        )
        grid = start + step
        if early and task.polls == 0:
            grid = min(grid, task.anchor + max(min_interval, lo / 2))
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
    A planner may also have the methods of :class:`PollPlanner` that learn from running
    videos (``observe_running``, ``observe_final``, ``forget``) and size the slack for
    re-polls (``repoll_slack``): the scheduler calls them when they are there.
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
    """The default planner: priors per tier, learned durations (survival-aware: see
    ``_durations``), a final poll per video, extra polls from idle budget (the module
    docstring says how), and slack in the window for the re-polls of overdue videos."""

    def __init__(self, policy: PollPolicy | None = None) -> None:
        self.policy = policy or PollPolicy()
        self.durations = DurationModel(self.policy)
        self._probes: dict[ModelTier | None, set[int]] = {}

    def __repr__(self) -> str:
        return f"<PollPlanner {self.policy!r}>"

    def bounds(self, tier: ModelTier | None) -> tuple[float, float]:
        """``(lo, hi)``: the shortest and longest a video of ``tier`` is expected to take."""
        return self.durations.bounds(tier)

    def final_poll_after(self, tier: ModelTier | None) -> float:
        """Seconds from submission to the final poll: the longest known duration plus margin."""
        return self.durations.bounds(tier)[1] + self.policy.seconds(self.policy.final_margin)

    def _allowance(self, budget: BudgetState, demand: Demand, *, floor: bool = True) -> int:
        share = self.durations.overrun_share()
        return extra_allowance(
            budget, demand, self.policy.budget_share, overrun_share=share, floor=floor
        )

    def next_poll(self, task: Tracked, now: float, budget: BudgetState, demand: Demand) -> PollPlan:
        """When to poll ``task`` next (see :func:`plan_next`)."""
        lo, hi = self.durations.bounds(task.tier)
        if task.overdue and task.age_known:
            hi = max(hi, self._tight_horizon(task, now, budget))
        learned = self.durations.learned(task.tier)
        typical = None if learned is None or self.durations.trusted(task.tier) else learned[1]
        if not task.age_known:
            lo = 0.0  # it may have run for a while already
        return plan_next(
            task,
            now,
            bounds=(lo, hi),
            policy=self.policy,
            allowance=self._overdue_cap(
                task, self._allowance(budget, demand, floor=not task.overdue)
            ),
            typical=typical,
            early=self._probe(task, learned is None),
            left=self._left(task),
        )

    @staticmethod
    def _overdue_cap(task: Tracked, allowance: int) -> int:
        # Idle budget buys latency, up to a point: a video spends at most max_extra_polls
        # polls before its final poll, and one past its final poll gets extra polls only
        # while it has spent fewer than _MAX_EXTRA (its re-polls aside), spaced at least a
        # tenth of its age apart (a late video is late; seconds matter less).
        if not task.overdue:
            return allowance  # (and max_extra_polls in all: plan_next's ``left``)
        return min(allowance, max(0, _MAX_EXTRA - task.polls))

    def _left(self, task: Tracked) -> int | None:
        most = self.policy.max_extra_polls
        return None if task.overdue or most is None else max(0, most - task.polls)

    def _probe(self, task: Tracked, unlearned: bool) -> bool:
        if not unlearned:
            self._probes.pop(task.tier, None)
            return False
        probes = self._probes.setdefault(task.tier, set())
        if id(task) in probes:
            return True
        if len(probes) < _PROBES and task.polls == 0:
            probes.add(id(task))
            return True
        return False

    def _tight_horizon(self, task: Tracked, now: float, budget: BudgetState) -> float:
        # When the window cannot carry two more rounds of re-polls for every overdue video,
        # an overdue video gets one, late: at three times the prior's longest (the priors
        # may be three times too short). A second round would find the window full and wait
        # an hour. Every video with a promised poll (and the slack) may be overdue soon.
        # Not for a tier whose ended videos are trusted (the model's own range, four times
        # as many ended as run): one past that range is a stray, a second or so past the
        # learned longest, and its re-poll at the moved horizon finds it ended (at three
        # times the prior it waited 361 s on 1,000/h bursts).
        if budget.limit - budget.used >= 2 * max(1, budget.reserved):
            return 0.0
        if self.durations.trusted(task.tier):
            return 0.0
        late = 3.0 * self.durations.prior(task.tier)[1]
        return late if now - task.anchor < late else 0.0

    def extra_still_worth(self, budget: BudgetState, demand: Demand) -> bool:
        """Whether idle budget still allows an extra poll."""
        return self._allowance(budget, demand) > 0

    def observe(
        self, tier: ModelTier | None, generation_time: float, *, key: str | None = None
    ) -> None:
        """Learn from a finished video's ``generationTime`` (``key``: the video, if it was
        seen running)."""
        self.durations.observe(tier, generation_time, key=key)

    def observe_running(self, tier: ModelTier | None, key: str, age: float) -> None:
        """Video ``key`` was seen running at ``age`` seconds: its duration is longer."""
        self.durations.observe_running(tier, key, age)

    def observe_final(self, *, still_running: bool) -> None:
        """A final poll found its video still running, or not."""
        self.durations.observe_final(still_running=still_running)

    def forget(self, tier: ModelTier | None, key: str) -> None:
        """Video ``key`` is no longer followed (it ended, or nobody waits for it)."""
        self.durations.forget(tier, key)

    def repoll_slack(self, budget: BudgetState, running: int, demand: Demand | None = None) -> int:
        """Slots to keep free in the window for re-polls, with ``running`` videos followed.

        Each video's own promised poll is kept already; a video whose final poll finds it
        running needs about one and a half more. So the slack is that many times the share
        of final polls that found their video running, rounded, and never more than a third
        of the limit (new videos must still start).

        Before any final poll has said how right the priors are, a ``demand`` that spans
        more than one window (a batch bigger than half the limit) insures its first window
        as if two in three would overrun: holding a third of the window back for a few
        minutes costs a batch of several windows little, while priors three times too short
        would leave most of a full window's videos waiting an hour for their re-poll. A
        demand that fits one window is trusted to the priors (insuring it would double its
        makespan).
        """
        share = self.durations.overrun_share()
        if demand is not None and self.durations.finals_seen == 0:
            wanted = demand.submissions_in_window + demand.queued_submissions
            if 2 * wanted > budget.limit:
                share = max(share, _INSURED_SHARE)
        expected = 1.5 * share * running
        return min(int(expected + 0.5), budget.limit // 3)
