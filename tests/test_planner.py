"""The poll planner: when a poll is worth a request, what the durations teach, and how much
idle budget a video may spend on latency. Pure arithmetic, except where a live budget's state
feeds it."""

from __future__ import annotations

import itertools
import math
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sora2_async._budget import BudgetState, RateLimit, RequestKind, SlidingWindowLimiter
from sora2_async._models import ModelTier
from sora2_async._planner import (
    Demand,
    DurationModel,
    PollPlan,
    PollPlanner,
    PollPolicy,
    Tracked,
    extra_allowance,
    plan_next,
)

POLICY = PollPolicy()
SORA2 = (60.0, 180.0)  # the sora2 prior: about 1 to 3 minutes
SHARE = POLICY.budget_share


def follow(
    task: Tracked,
    *,
    allowance: int,
    bounds: tuple[float, float] = SORA2,
    policy: PollPolicy = POLICY,
    start: float | None = None,
) -> list[PollPlan]:
    """Every poll the plan asks for, made on time, each finding the video still running."""
    now = task.anchor if start is None else start
    plans: list[PollPlan] = []
    for _ in range(10_000):
        plan = plan_next(task, now, bounds=bounds, policy=policy, allowance=allowance)
        plans.append(plan)
        if not plan.extra:
            return plans
        now = plan.at
        task.polls += 1
        task.last_poll = now
    raise AssertionError("the plan never reaches its final poll")


def budget(
    *,
    limit: int = 100,
    submissions: int = 0,
    extras: int = 0,
    waiting_polls: int = 0,
    waiting_generates: int = 0,
) -> tuple[BudgetState, Demand]:
    state = BudgetState(
        limit=limit,
        configured_limit=limit,
        window=3602.0,
        used=submissions + extras,
        reserved=0,
        waiting_polls=waiting_polls,
        waiting_generates=waiting_generates,
        next_free_in=0.0,
        rate_limited=0,
        blocked_for=0.0,
    )
    return state, Demand(submissions, extras)


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-9)


# -- plan_next -----------------------------------------------------------------------------


@pytest.mark.parametrize("allowance", [0, 5])
def test_a_task_of_unknown_age_is_looked_at_at_once(allowance: int) -> None:
    task = Tracked(tier=None, anchor=500.0, age_known=False)
    plan = plan_next(task, 500.0, bounds=(0.0, 480.0), policy=POLICY, allowance=allowance)
    assert plan == PollPlan(500.0, extra=False)


def test_after_one_look_a_task_of_unknown_age_is_planned_from_when_it_was_seen() -> None:
    task = Tracked(tier=None, anchor=500.0, age_known=False, polls=1, last_poll=500.0)
    plan = plan_next(task, 500.0, bounds=(0.0, 480.0), policy=POLICY, allowance=0)
    assert plan == PollPlan(500.0 + 480.0 + 1.0, extra=False)


def test_without_allowance_the_next_poll_is_the_final_one() -> None:
    task = Tracked(tier=ModelTier.SORA2, anchor=100.0)
    for now in (100.0, 150.0, 280.0):
        plan = plan_next(task, now, bounds=SORA2, policy=POLICY, allowance=0)
        assert plan == PollPlan(100.0 + 180.0 + 1.0, extra=False)  # anchor + hi + margin
    # Past it (a task picked up late): now.
    assert plan_next(task, 300.0, bounds=SORA2, policy=POLICY, allowance=0) == PollPlan(
        300.0, extra=False
    )
    assert follow(task, allowance=0) == [PollPlan(281.0, extra=False)]


def test_a_few_extra_polls_spread_over_the_uncertainty() -> None:
    # step = max(min_interval 5, target_delay 9.5, (180 - 60) / (3 + 1) = 30) = 30
    plans = follow(Tracked(tier=ModelTier.SORA2, anchor=1000.0), allowance=3)
    assert plans == [
        PollPlan(1090.0, extra=True),  # anchor + lo + step
        PollPlan(1120.0, extra=True),
        PollPlan(1150.0, extra=True),
        PollPlan(1181.0, extra=False),  # 1180 would be within min_interval of it: the final
    ]


def test_many_extra_polls_stop_at_the_target_delay() -> None:
    # (180 - 60) / 14 = 8.6 < target_delay: the grid is 9.5 s, however much is allowed.
    for allowance in (13, 1000):
        plans = follow(Tracked(tier=ModelTier.SORA2, anchor=0.0), allowance=allowance)
        extras = [p.at for p in plans if p.extra]
        assert extras == [approx(60.0 + 9.5 * j) for j in range(1, 13)]  # 69.5 ... 174
        assert plans[-1] == PollPlan(181.0, extra=False)


def test_the_grid_never_goes_below_min_interval() -> None:
    policy = PollPolicy(target_delay=1.0)
    plans = follow(Tracked(tier=ModelTier.SORA2, anchor=0.0), allowance=1000, policy=policy)
    assert [p.at for p in plans if p.extra] == [approx(60.0 + 5.0 * j) for j in range(1, 24)]
    assert plans[-1] == PollPlan(181.0, extra=False)


def test_a_poll_off_the_grid_moves_the_grid() -> None:
    # Someone looked at 100 (say, a caller's check_status): the next extra is a step after it.
    task = Tracked(tier=ModelTier.SORA2, anchor=0.0, polls=1, last_poll=100.0)
    assert plan_next(task, 100.0, bounds=SORA2, policy=POLICY, allowance=13) == PollPlan(
        109.5, extra=True
    )


@pytest.mark.parametrize(
    ("last_poll", "final"),
    [(170.0, 181.0), (173.0, 181.0), (178.0, 183.0), (185.0, 190.0)],
)
def test_near_the_end_the_plan_switches_to_the_final_poll_min_interval_after_the_last(
    last_poll: float, final: float
) -> None:
    task = Tracked(tier=ModelTier.SORA2, anchor=0.0, polls=3, last_poll=last_poll)
    for allowance in (0, 13):
        plan = plan_next(task, last_poll, bounds=SORA2, policy=POLICY, allowance=allowance)
        assert plan == PollPlan(final, extra=False)


def test_the_first_extra_poll_waits_for_the_shortest_duration() -> None:
    task = Tracked(tier=ModelTier.PRO_HIGH, anchor=0.0)
    plan = plan_next(task, 0.0, bounds=(180.0, 480.0), policy=POLICY, allowance=9)
    assert plan == PollPlan(180.0 + 30.0, extra=True)  # (480 - 180) / 10 = 30
    # A task picked up in the middle of its grid (no poll yet) is looked at now.
    assert plan_next(task, 300.0, bounds=(180.0, 480.0), policy=POLICY, allowance=9) == (
        PollPlan(300.0, extra=True)
    )


@pytest.mark.parametrize(
    ("now", "last_poll", "expected"),
    [
        (460.0, 460.0, 560.0),  # ran 400 s past lo: wait a quarter of that
        (100.0, 100.0, 110.0),  # 40 s past lo: 10 s
        (70.0, 70.0, 75.0),  # 10 s past lo would be 2.5 s: never faster than 5 s
        (460.0, 400.0, 500.0),  # counted from the last poll
        (460.0, None, 560.0),  # never polled (picked up overdue): from now
    ],
)
def test_an_overdue_task_backs_off_in_proportion_to_its_age(
    now: float, last_poll: float | None, expected: float
) -> None:
    """When the model's horizon is behind it (a model that may not learn): a backoff."""
    task = Tracked(tier=ModelTier.SORA2, anchor=0.0, polls=4, last_poll=last_poll, overdue=True)
    for allowance in (0, 13):
        plan = plan_next(task, now, bounds=(60.0, 60.0), policy=POLICY, allowance=allowance)
        assert plan == PollPlan(expected, extra=False)


def test_an_overdue_task_is_polled_again_at_the_horizon_its_overrun_moved() -> None:
    task = Tracked(tier=ModelTier.SORA2, anchor=0.0, polls=1, last_poll=181.0, overdue=True)
    plan = plan_next(task, 181.0, bounds=(60.0, 300.0), policy=POLICY, allowance=0)
    assert plan == PollPlan(301.0, extra=False)
    # With idle budget, extra polls fill the gap from its last look.
    plan = plan_next(task, 181.0, bounds=(60.0, 300.0), policy=POLICY, allowance=3)
    assert plan == PollPlan(181.0 + 29.75, extra=True)  # (300 - 181) / 4


def test_with_the_window_tight_an_overdue_video_waits_for_three_priors_unless_its_tier_known() -> (
    None
):
    """A window that cannot carry two rounds of re-polls: one, late, at three times the
    prior's longest (the prior may be that wrong); but a tier whose ended videos are trusted
    is re-polled at the horizon its overrun moved (a stray, just past the learned range)."""
    tight, _ = budget(limit=100, submissions=95)
    tight = attrs.evolve(tight, reserved=10)
    for trusted in (False, True):
        planner = PollPlanner()
        if trusted:
            for i in range(40):
                planner.observe(ModelTier.SORA2, 60.0 + 3.0 * i)  # 60-177 s: trusted
        task = Tracked(tier=ModelTier.SORA2, anchor=0.0, polls=1, last_poll=179.5, overdue=True)
        planner.observe_running(ModelTier.SORA2, "late", 179.5)
        at = planner.next_poll(task, 179.5, tight, Demand()).at
        if trusted:
            assert 179.5 < at <= 179.5 * 1.25 + 1.0
        else:
            assert at >= 3 * 180.0


def test_an_overrun_moves_the_final_polls_of_its_siblings() -> None:
    planner = PollPlanner()
    assert planner.final_poll_after(ModelTier.SORA2) == 181.0
    planner.observe_final(still_running=True)
    planner.observe_running(ModelTier.SORA2, "a", 181.0)
    moved = planner.final_poll_after(ModelTier.SORA2)
    assert moved >= 181.0 * 1.25 + 1.0  # the sibling submitted next plans past it
    planner.forget(ModelTier.SORA2, "a")  # it ended (its duration is a sample now)
    planner.observe(ModelTier.SORA2, 200.0)
    assert planner.final_poll_after(ModelTier.SORA2) == 201.0


def test_the_slack_for_re_polls_grows_with_the_overruns_and_is_bounded() -> None:
    planner = PollPlanner()
    state, _ = budget()
    assert planner.repoll_slack(state, 0) == 0
    assert planner.repoll_slack(state, 45) == 8  # 1.5 x 0.12 x 45, rounded
    for _ in range(20):
        planner.observe_final(still_running=True)
    assert planner.repoll_slack(state, 45) == 33  # a third of the limit at most
    for _ in range(60):
        planner.observe_final(still_running=False)
    assert planner.repoll_slack(state, 45) == 0


@settings(max_examples=100, deadline=None)
@given(
    lo=st.floats(0.0, 600.0),
    spread=st.floats(0.0, 600.0),
    anchor=st.floats(0.0, 1e5),
    allowance=st.integers(0, 200),
    min_interval=st.floats(0.5, 20.0),
    target_delay=st.floats(0.0, 30.0),
    margin_part=st.floats(0.0, 0.9),  # the default: 1 s against 5 s
)
def test_any_plan_keeps_its_promises(
    lo: float,
    spread: float,
    anchor: float,
    allowance: int,
    min_interval: float,
    target_delay: float,
    margin_part: float,
) -> None:
    """Extras on the grid from lo + step, at most ``allowance`` of them, never two polls closer
    than min_interval, and a final poll at hi + final_margin."""
    hi = lo + spread
    final_margin = margin_part * min_interval
    policy = PollPolicy(
        min_interval=min_interval, target_delay=target_delay, final_margin=final_margin
    )
    plans = follow(
        Tracked(tier=None, anchor=anchor), allowance=allowance, bounds=(lo, hi), policy=policy
    )
    extras, final = plans[:-1], plans[-1]
    assert all(p.extra for p in extras)
    assert not final.extra
    assert len(extras) <= allowance
    step = max(min_interval, target_delay, (hi - lo) / (allowance + 1))
    for j, plan in enumerate(extras, start=1):
        assert plan.at == pytest.approx(anchor + lo + j * step, rel=1e-9, abs=1e-6)
    times = [p.at for p in plans]
    assert all(b - a >= min_interval - 1e-6 for a, b in itertools.pairwise(times))
    assert final.at == pytest.approx(
        max(anchor + hi + final_margin, (times[-2] if extras else -math.inf) + min_interval)
    )
    assert final.at >= anchor + hi + final_margin - 1e-6


@settings(max_examples=100, deadline=None)
@given(
    scale=st.integers(-10, 10).map(lambda k: 2.0**k),  # divisions without rounding
    lo=st.floats(0.0, 600.0),
    spread=st.floats(0.0, 600.0),
    elapsed=st.floats(0.0, 2000.0),
    since_poll=st.one_of(st.none(), st.floats(0.0, 100.0)),
    allowance=st.integers(0, 50),
    overdue=st.booleans(),
    age_known=st.booleans(),
)
def test_time_scale_divides_every_duration(
    scale: float,
    lo: float,
    spread: float,
    elapsed: float,
    since_poll: float | None,
    allowance: int,
    overdue: bool,
    age_known: bool,
) -> None:
    """A run s times faster is the same plan s times faster."""
    hi = lo + spread
    now = 1000.0 + elapsed

    def plan(s: float) -> PollPlan:
        last = None if since_poll is None else (now - since_poll) / s
        task = Tracked(
            tier=ModelTier.SORA2,
            anchor=1000.0 / s,
            age_known=age_known,
            polls=0 if last is None else 1,
            last_poll=last,
            overdue=overdue,
        )
        return plan_next(
            task,
            now / s,
            bounds=(lo / s, hi / s),
            policy=PollPolicy(time_scale=s),
            allowance=allowance,
        )

    normal, fast = plan(1.0), plan(scale)
    assert fast == PollPlan(normal.at / scale, normal.extra)


@pytest.mark.parametrize("scale", [10.0, 60.0, 0.3])
def test_time_scale_divides_a_whole_poll_sequence(scale: float) -> None:
    normal = follow(Tracked(tier=ModelTier.SORA2, anchor=30.0), allowance=13)
    policy = PollPolicy(time_scale=scale)
    model = DurationModel(policy)
    fast = follow(
        Tracked(tier=ModelTier.SORA2, anchor=30.0 / scale),
        allowance=13,
        bounds=model.bounds(ModelTier.SORA2),
        policy=policy,
    )
    assert [p.extra for p in fast] == [p.extra for p in normal]
    assert [p.at for p in fast] == [approx(p.at / scale) for p in normal]


# -- extra_allowance -----------------------------------------------------------------------


@pytest.mark.parametrize(("polls", "generates"), [(1, 0), (0, 1), (3, 2)])
def test_no_extra_polls_while_anyone_waits(polls: int, generates: int) -> None:
    state = budget(submissions=1, waiting_polls=polls, waiting_generates=generates)
    assert extra_allowance(*state, SHARE) == 0


def test_no_extra_polls_when_the_budget_binds() -> None:
    # 45 videos in the window take 90 of 100 requests at two a video: nothing to spare.
    assert extra_allowance(*budget(submissions=45), SHARE) == 0
    assert extra_allowance(*budget(submissions=36), SHARE) == 0  # 1.5 * 23 / 36 < 1
    assert extra_allowance(*budget(submissions=35), SHARE) == 1  # 1.5 * 25 / 35


def test_a_few_videos_get_enough_for_the_target_delay() -> None:
    allowance = extra_allowance(*budget(submissions=5), SHARE)
    assert allowance == 13  # 1.5 * (95 - 50) / 5
    plans = follow(Tracked(tier=ModelTier.SORA2, anchor=0.0), allowance=allowance)
    extras = [p.at for p in plans if p.extra]
    gaps = [b - a for a, b in itertools.pairwise(extras)]
    assert gaps == [approx(POLICY.target_delay)] * 11
    assert extras[0] == approx(60.0 + POLICY.target_delay)
    assert plans[-1].at - extras[-1] <= POLICY.target_delay


def test_a_window_with_no_submissions_counts_as_one() -> None:
    assert extra_allowance(*budget(submissions=0), SHARE) == extra_allowance(
        *budget(submissions=1), SHARE
    )


@pytest.mark.parametrize(
    ("submissions", "expected"),
    [(5, 3), (10, 3), (20, 0), (30, 0), (45, 0)],
)
def test_a_thin_floor_of_extra_polls_once_the_windows_share_is_spent(
    submissions: int, expected: int
) -> None:
    """The floor is three (the planner's docstring and its last change), never more than a
    video's fair share, nothing when the budget binds, and nothing once the window has no
    room left for a re-poll of each of its videos (95 - 80 - 30 < 0 for 20)."""
    state = budget(submissions=submissions, extras=60)
    assert extra_allowance(*state, SHARE) == expected


def test_the_allowance_scales_with_the_limit() -> None:
    assert extra_allowance(*budget(limit=1000, submissions=45), SHARE) == 15  # 1.5*450/45
    assert extra_allowance(*budget(limit=1000, submissions=5), SHARE) == 135
    assert extra_allowance(*budget(limit=100, submissions=45), SHARE) == 0


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 2000),
    submissions=st.integers(0, 500),
    extras=st.integers(0, 500),
    more=st.integers(1, 100),
)
def test_more_demand_never_buys_more_extra_polls(
    limit: int, submissions: int, extras: int, more: int
) -> None:
    allowance = extra_allowance(*budget(limit=limit, submissions=submissions, extras=extras), SHARE)
    assert allowance >= 0
    assert allowance >= extra_allowance(
        *budget(limit=limit, submissions=submissions + more, extras=extras), SHARE
    )
    assert allowance >= extra_allowance(
        *budget(limit=limit, submissions=submissions, extras=extras + more), SHARE
    )
    assert allowance <= extra_allowance(
        *budget(limit=limit + more, submissions=submissions, extras=extras), SHARE
    )


@pytest.mark.anyio
async def test_the_allowance_follows_a_live_budget() -> None:
    """The planner reads the limiter's snapshot for what binds (waiting, the limit) and the
    scheduler's own demand for what was spent on what."""
    limiter = SlidingWindowLimiter(RateLimit(100, per=3600.0))
    planner = PollPlanner(POLICY)
    for _ in range(5):
        async with limiter.permit(RequestKind.GENERATE, promise=180.0):
            pass
    assert extra_allowance(limiter.last_state, Demand(5, 0), SHARE) == 13
    assert planner.extra_still_worth(limiter.last_state, Demand(5, 0))
    assert extra_allowance(limiter.last_state, Demand(5, 40), SHARE) == 13  # 40 of 45 spent
    assert extra_allowance(limiter.last_state, Demand(5, 45), SHARE) == 3  # all 45: the floor

    async def hold() -> None:
        async with limiter.permit(RequestKind.POLL):
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        for _ in range(96):  # fill the window: the last poll has to wait
            tg.start_soon(hold)
        await anyio.sleep(1.0)
        assert limiter.last_state.waiting_polls == 1
        assert extra_allowance(limiter.last_state, Demand(5, 45), SHARE) == 0
        assert not planner.extra_still_worth(limiter.last_state, Demand(5, 45))
        tg.cancel_scope.cancel()


def test_the_default_planner_owns_the_final_poll_horizon() -> None:
    planner = PollPlanner(POLICY)
    assert planner.final_poll_after(ModelTier.SORA2) == 180.0 + POLICY.final_margin
    planner.observe(ModelTier.SORA2, 400.0)  # a slow one widens the range
    assert planner.final_poll_after(ModelTier.SORA2) == 400.0 + POLICY.final_margin


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan])
def test_time_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(ValueError, match="time_scale must be positive"):
        PollPolicy(time_scale=scale)


@pytest.mark.parametrize("prior", [(200.0, 100.0), (-1.0, 10.0), (math.nan, 10.0)])
def test_priors_must_be_ranges_of_durations(prior: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="prior of"):
        PollPolicy(priors={ModelTier.SORA2: prior})


def test_a_prior_may_be_a_single_duration() -> None:
    policy = PollPolicy(priors={ModelTier.SORA2: (0.0, 0.0), ModelTier.PRO_HIGH: (5.0, 5.0)})
    assert DurationModel(policy).bounds(ModelTier.PRO_HIGH) == (5.0, 5.0)


def test_empty_priors_are_refused_or_still_give_bounds() -> None:
    try:
        policy = PollPolicy(priors={})
    except ValueError:
        return
    for tier in (None, *ModelTier):
        lo, hi = DurationModel(policy).bounds(tier)
        assert 0 <= lo <= hi
