"""DurationModel: the priors, what finished videos say, and what running ones say."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sora2_async._durations import DurationModel
from sora2_async._models import ModelTier
from sora2_async._planner import DEFAULT_PRIORS, PollPolicy

POLICY = PollPolicy()


def test_the_priors_per_tier() -> None:
    model = DurationModel(POLICY)
    assert model.bounds(ModelTier.SORA2) == (60.0, 180.0)
    assert model.bounds(ModelTier.PRO_STANDARD) == (180.0, 480.0)
    assert model.bounds(ModelTier.PRO_HIGH) == (180.0, 480.0)
    assert dict(DEFAULT_PRIORS) == dict(POLICY.priors)


def test_an_unknown_tier_gets_the_widest_known_range() -> None:
    assert DurationModel(POLICY).bounds(None) == (60.0, 480.0)
    policy = PollPolicy(priors={ModelTier.SORA2: (10.0, 20.0), ModelTier.PRO_HIGH: (100.0, 200.0)})
    model = DurationModel(policy)
    assert model.bounds(ModelTier.PRO_STANDARD) == (10.0, 200.0)
    assert model.bounds(None) == (10.0, 200.0)
    assert model.bounds(ModelTier.SORA2) == (10.0, 20.0)


def test_samples_widen_the_prior_until_there_are_enough_to_replace_it() -> None:
    model = DurationModel(POLICY)
    for seconds in range(100, 119):  # 19 videos, all well inside the prior
        model.observe(ModelTier.SORA2, float(seconds))
    assert model.bounds(ModelTier.SORA2) == (60.0, 180.0)
    model.observe(ModelTier.SORA2, 119.0)  # the 20th: what was seen is what is known,
    assert model.bounds(ModelTier.SORA2) == (99.0, 120.0)  # widened by its spread / (n - 1)
    assert model.bounds(ModelTier.PRO_HIGH) == (180.0, 480.0)  # tiers learn apart


def test_a_few_samples_outside_the_prior_widen_it() -> None:
    model = DurationModel(POLICY)
    model.observe(ModelTier.SORA2, 240.0)
    assert model.bounds(ModelTier.SORA2) == (60.0, 240.0)
    model.observe(ModelTier.SORA2, 30.0)  # two samples: widened by their whole spread
    assert model.bounds(ModelTier.SORA2) == (0.0, 450.0)
    model.observe(None, 900.0)  # a video of unknown tier teaches the unknown tier only
    assert model.bounds(None) == (60.0, 900.0)
    assert model.bounds(ModelTier.PRO_HIGH) == (180.0, 480.0)


def test_an_api_that_changes_speed_is_learned_again() -> None:
    model = DurationModel(POLICY)
    for _ in range(50):
        model.observe(ModelTier.SORA2, 60.0)
    for _ in range(1000):
        model.observe(ModelTier.SORA2, 150.0)
    assert model.bounds(ModelTier.SORA2) == (150.0, 150.0)  # old samples are forgotten


def test_impossible_samples_are_ignored() -> None:
    model = DurationModel(POLICY)
    for seconds in range(100, 119):
        model.observe(ModelTier.SORA2, float(seconds))
    model.observe(ModelTier.SORA2, -5.0)
    assert model.bounds(ModelTier.SORA2) == (60.0, 180.0)  # still 19: still widening


def test_a_model_that_must_not_learn_keeps_the_priors() -> None:
    model = DurationModel(PollPolicy(learn=False))
    for _ in range(50):
        model.observe(ModelTier.SORA2, 500.0)
    assert model.bounds(ModelTier.SORA2) == (60.0, 180.0)


def test_durations_are_in_the_policys_time() -> None:
    model = DurationModel(PollPolicy(time_scale=10.0))
    assert model.bounds(ModelTier.SORA2) == (6.0, 18.0)
    model.observe(ModelTier.SORA2, 240.0)  # generationTime: seconds of the API's time
    assert model.bounds(ModelTier.SORA2) == (6.0, 24.0)
    assert PollPolicy(time_scale=4.0).seconds(10.0) == 2.5


def test_running_videos_are_data_the_longest_never_shrinks_on_the_first_to_end() -> None:
    """The short ones end first: twenty of them are not enough while as many run on."""
    model = DurationModel(POLICY)
    for i in range(20):
        model.observe_running(ModelTier.SORA2, f"long {i}", 100.0)
    for seconds in range(80, 100):
        model.observe(ModelTier.SORA2, float(seconds))
    assert model.bounds(ModelTier.SORA2)[1] >= 180.0  # not trusted: 20 ended, 20 still run
    for i in range(20):  # ... they end too, later: now the sample says it all
        model.forget(ModelTier.SORA2, f"long {i}")
        model.observe(ModelTier.SORA2, 150.0 + i)
    hi = model.bounds(ModelTier.SORA2)[1]
    assert 169.0 < hi < 175.0  # 169, widened by its spread over the samples
    # A video running past every one that ended raises the longest at once.
    model.observe_running(ModelTier.SORA2, "slow", 200.0)
    assert model.bounds(ModelTier.SORA2)[1] >= 250.0


def test_the_share_of_overruns_starts_small_and_follows_the_final_polls() -> None:
    model = DurationModel(POLICY)
    assert model.overrun_share() == pytest.approx(0.12)
    for _ in range(10):
        model.observe_final(still_running=True)
    assert model.overrun_share() > 0.8
    for _ in range(40):
        model.observe_final(still_running=False)
    assert model.overrun_share() < 0.05  # it forgets: the horizon moved since


# -- rejecting the prior -------------------------------------------------------------------


def test_videos_running_through_the_prior_reject_it_and_one_ending_in_it_takes_that_back() -> None:
    model = DurationModel(POLICY)
    for i in range(16):  # at 90 s of a 60-180 s prior: (90/120)^16 > 1 % > (90/120)^17
        model.observe_running(ModelTier.SORA2, f"v{i}", 90.0)
    assert model.bounds(ModelTier.SORA2) == (60.0, 180.0)
    model.observe_running(ModelTier.SORA2, "v16", 90.0)
    assert model.bounds(ModelTier.SORA2) == (180.0, 630.0)  # 3 x and 3.5 x the prior
    assert model.bounds(ModelTier.PRO_HIGH) == (180.0, 480.0)  # tiers apart
    model.forget(ModelTier.SORA2, "v0")
    model.observe(ModelTier.SORA2, 170.0)  # one ended within the prior: it may be right
    assert model.bounds(ModelTier.SORA2)[0] == 60.0


def test_videos_seen_past_the_priors_longest_are_no_evidence_against_its_shape() -> None:
    model = DurationModel(POLICY)
    for i in range(40):
        model.observe_running(ModelTier.SORA2, f"v{i}", 150.0)
        model.observe_running(ModelTier.SORA2, f"v{i}", 200.0)  # later look, past 180 s
    assert not model.prior_rejected(ModelTier.SORA2)


def test_a_video_no_longer_followed_is_no_longer_evidence() -> None:
    model = DurationModel(POLICY)
    for i in range(16):
        model.observe_running(ModelTier.SORA2, f"v{i}", 90.0)
    model.forget(ModelTier.SORA2, "v0")  # given up: what it showed goes with it
    model.observe_running(ModelTier.SORA2, "v16", 90.0)
    assert not model.prior_rejected(ModelTier.SORA2)  # 16 at 90 s, not 17
    model.observe_running(ModelTier.SORA2, "v17", 90.0)
    assert model.prior_rejected(ModelTier.SORA2)


def test_a_video_that_ended_within_the_prior_counts_while_it_is_among_the_samples() -> None:
    model = DurationModel(POLICY)
    model.observe(ModelTier.SORA2, 100.0)
    for _ in range(255):  # the last 256 samples are kept: 100 s is still one of them
        model.observe(ModelTier.SORA2, 900.0)
    for i in range(17):
        model.observe_running(ModelTier.SORA2, f"v{i}", 90.0)
    assert not model.prior_rejected(ModelTier.SORA2)
    model.observe(ModelTier.SORA2, 900.0)  # ... and now it is not
    assert model.prior_rejected(ModelTier.SORA2)


class _Reference:
    """The rule of ``prior_rejected`` computed from scratch, as it reads in the docstring."""

    def __init__(self) -> None:
        self.running: dict[str, float] = {}
        self.samples: list[float] = []
        self.wrong = False

    def rejected(self, lo: float, hi: float) -> bool:
        if any(d <= hi for d in self.samples[-256:]):
            self.wrong = False
            return False
        if self.wrong:
            return True
        chance = sum(math.log((hi - a) / (hi - lo)) for a in self.running.values() if lo < a < hi)
        self.wrong = chance < math.log(0.01)
        return self.wrong


# Mostly looks within the prior, where they are evidence; ends mostly past it (one within
# takes the rejection back); forgets, which take a video's evidence away.
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.integers(0, 40), st.floats(0.0, 200.0)),
        st.tuples(st.just("run"), st.integers(0, 40), st.floats(60.0, 180.0)),
        st.tuples(st.just("end"), st.integers(0, 40), st.floats(181.0, 400.0)),
        st.tuples(st.just("end"), st.integers(0, 40), st.floats(0.0, 400.0)),
        st.tuples(st.just("forget"), st.integers(0, 40), st.just(0.0)),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS)
def test_prior_rejected_kept_as_videos_come_and_go_equals_it_counted_afresh(
    ops: list[tuple[str, int, float]],
) -> None:
    """The model keeps its evidence as it goes (a decision costs the same at any number
    in flight); what it says must be what a recount of every video would say."""
    model, reference = DurationModel(POLICY), _Reference()
    tier = ModelTier.SORA2
    for op, video, age in ops:
        key = f"v{video}"
        if op == "run":
            model.observe_running(tier, key, age)
            reference.running[key] = max(age, reference.running.get(key, 0.0))
        elif op == "end":
            model.observe(tier, age, key=key)
            reference.running.pop(key, None)
            reference.samples.append(age)
        else:
            model.forget(tier, key)
            reference.running.pop(key, None)
        assert model.prior_rejected(tier) is reference.rejected(60.0, 180.0)
