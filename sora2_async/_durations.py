"""How long videos take: the priors, what finished videos say, and what running ones say.

The videos that finish first are the short ones, so the durations seen early are a biased
sample: a model that believed them would move every final poll too early and pay for a
re-poll per video. So a video still running at age ``t`` is data too (a *censored*
sample: its duration is more than ``t``), and the model keeps, per tier, every video
that has been seen running and has not ended yet:

* the longest expected duration never drops below the prior until enough videos have
  ended (``_TRUST_SAMPLES`` of them, and four times as many as are known to run still);
* past the longest expected duration, a video seen running raises it at once (by a
  factor that grows with the share of final polls that found their video still running),
  which moves the final polls of its siblings too: they ask the same model;
* a learned range is widened by its own spread over the number of samples (the unbiased
  estimate of a uniform range's ends), so twenty samples do not put the next final poll
  just before the twenty-first video ends;
* *before* the longest expected duration, the videos seen running can already say that the
  prior is wrong: when none of the tier has ended within the prior and the chance that all
  of them would still be running at their ages, were the prior right, is under 1 %, the
  tier is taken to be several times slower (``_SLOWER``) at once. Twenty videos tell it by
  the prior's first quarter, so an idle key stops spending its polls on the prior's range.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

from ._models import ModelTier

if TYPE_CHECKING:
    from ._planner import PollPolicy

__all__ = ["DurationModel"]

# Finished videos needed before learned bounds replace the priors instead of only widening them.
_TRUST_SAMPLES = 20
# The share of final polls expected to find their video still running, before any is seen.
_PRIOR_SHARE = 0.12
# The weight of the latest final poll in the share that found their video still running.
_FORGET = 0.1
# Below this chance of what the running videos show, were the prior right, it is wrong.
_REJECT = math.log(0.01)
# How much slower than its prior a tier whose prior is wrong is taken to be, at first: the
# prior's range times (lo, hi) of these. The provider's figures have been seen three times
# too short; the longest gets a margin, since a video past it waits for a doubled horizon.
_SLOWER = (3.0, 3.5)
Tier = ModelTier | None


class DurationModel:
    """What we know of how long each tier takes (module docstring: how it learns).

    ``observe`` records a finished video, ``observe_running`` a video seen running at an
    age, ``observe_final`` whether a final poll found its video still running, ``forget``
    a video given up.
    """

    def __init__(self, policy: PollPolicy) -> None:
        self._policy = policy
        self._samples: dict[Tier, deque[float]] = {}
        self._running: dict[Tier, dict[str, float]] = {}  # tier -> video -> age seen running
        self._oldest: dict[Tier, tuple[str, float]] = {}  # the oldest of those, per tier
        self._finals_seen = 0
        self._share = _PRIOR_SHARE
        self._version = 0  # bumped by what moves prior_rejected (which caches on it)
        self._rejected: dict[Tier, tuple[int, bool]] = {}
        self._wrong: set[Tier] = set()  # tiers whose prior was rejected (until one ends in it)
        # Kept as videos come and go, so that a decision costs the same at 10 or 10,000 in
        # flight: per tier, the log-chance of the running videos' ages were the prior right
        # (``_evidence``), and how many of its samples ended within the prior.
        self._log_chance: dict[Tier, float] = {}
        self._ended_within: dict[Tier, int] = {}

    def observe(self, tier: Tier, generation_time: float, *, key: str | None = None) -> None:
        """A video of ``tier`` took ``generation_time`` seconds of the API's time."""
        if key is not None:
            self.forget(tier, key)
        if self._policy.learn and generation_time >= 0:
            samples = self._samples.setdefault(tier, deque(maxlen=256))
            hi = self._prior(tier)[1]
            within = self._ended_within.get(tier, 0)
            if len(samples) == samples.maxlen:  # the oldest sample is about to leave
                within -= samples[0] <= hi
            samples.append(self._policy.seconds(generation_time))
            self._ended_within[tier] = within + (samples[-1] <= hi)
            self._version += 1

    def observe_running(self, tier: Tier, key: str, age: float) -> None:
        """Video ``key`` of ``tier`` was still running ``age`` seconds (our time) after it
        was submitted."""
        if self._policy.learn and age >= 0:
            running = self._running.setdefault(tier, {})
            seen = running.get(key)
            running[key] = max(age, seen or 0.0)
            change = self._evidence(tier, running[key])
            if seen is not None:
                change -= self._evidence(tier, seen)
            self._log_chance[tier] = self._log_chance.get(tier, 0.0) + change
            self._version += 1
            if running[key] >= self._oldest.get(tier, ("", -1.0))[1]:
                self._oldest[tier] = (key, running[key])

    def observe_final(self, *, still_running: bool) -> None:
        """A final poll found its video still running (``True``) or ended."""
        # A running mean of the outcomes (with the prior worth 1.5 polls), which turns into
        # a moving average with a weight of 1/10 once ten or so are seen.
        self._finals_seen += 1
        weight = max(1.0 / (self._finals_seen + 1.5), _FORGET)
        self._share += weight * (float(still_running) - self._share)

    def forget(self, tier: Tier, key: str) -> None:
        """Video ``key`` ended or is no longer followed."""
        running = self._running.get(tier)
        age = None if running is None else running.pop(key, None)
        if running is None or age is None:
            return
        self._version += 1
        # Recounted from nothing when the tier empties, so rounding cannot pile up.
        left = self._log_chance.get(tier, 0.0) - self._evidence(tier, age)
        self._log_chance[tier] = left if running else 0.0
        if self._oldest.get(tier, ("",))[0] == key:  # rare: only the oldest costs a scan
            if running:
                self._oldest[tier] = max(running.items(), key=lambda item: item[1])
            else:
                del self._oldest[tier]

    @property
    def finals_seen(self) -> int:
        """Final polls seen so far (of any tier)."""
        return self._finals_seen

    def overrun_share(self) -> float:
        """The share of recent final polls that found their video still running.

        Before any is seen it is one in eight: enough room in a first window for a re-poll of
        one video in five, little enough that a batch that fits one window on the priors
        still starts at once (the priors are the provider's word). After that it is the
        running mean, which turns into a moving average (a tenth a poll) once ten or so
        are seen: overruns under a horizon since moved out say little of the next ones.
        """
        return self._share

    def running(self, tier: Tier) -> int:
        """Videos of ``tier`` known to be running (seen running, not ended)."""
        return len(self._running.get(tier, ()))

    def prior(self, tier: Tier) -> tuple[float, float]:
        """``(lo, hi)`` of the prior of ``tier``, in the policy's time."""
        return self._prior(tier)

    def _prior(self, tier: Tier) -> tuple[float, float]:
        priors = self._policy.priors
        if tier is None or tier not in priors:  # unknown tier: the widest known range
            lo = min(p[0] for p in priors.values())
            hi = max(p[1] for p in priors.values())
        else:
            lo, hi = priors[tier]
        return self._policy.seconds(lo), self._policy.seconds(hi)

    def learned(self, tier: Tier) -> tuple[float, float] | None:
        """The range the finished videos of ``tier`` span, widened by its spread over the
        number of samples; ``None`` before any has finished."""
        samples = self._samples.get(tier)
        if not samples:
            return None
        seen_lo, seen_hi = min(samples), max(samples)
        widen = (seen_hi - seen_lo) / (len(samples) - 1) if len(samples) > 1 else 0.0
        return max(0.0, seen_lo - widen), seen_hi + widen

    def trusted(self, tier: Tier) -> bool:
        """Whether enough videos of ``tier`` have ended for what they say to replace the
        prior (not merely widen it)."""
        n = len(self._samples.get(tier, ()))
        return n >= _TRUST_SAMPLES and n >= 4 * self.running(tier)

    def prior_rejected(self, tier: Tier) -> bool:
        """Whether the videos of ``tier`` seen running make its prior implausible: none has
        ended within the prior's range, and were the prior right (uniform over it), all of
        them still running at their ages would have a chance under 1 %."""
        cached = self._rejected.get(tier)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        rejected = self._reject(tier)
        self._rejected[tier] = (self._version, rejected)
        return rejected

    def _reject(self, tier: Tier) -> bool:
        lo, hi = self._prior(tier)
        if self._ended_within.get(tier, 0) or hi <= lo:
            self._wrong.discard(tier)  # one ended within the prior: it may be right
            return False
        if tier in self._wrong:
            return True  # (the ages it was rejected at have passed the longest since)
        if self._log_chance.get(tier, 0.0) < _REJECT:
            self._wrong.add(tier)
            return True
        return False

    def _evidence(self, tier: Tier, age: float) -> float:
        """The log of the chance that a video of ``tier`` runs past ``age``, were the prior
        right (uniform over it).

        Only ages within the prior's range are evidence: videos past its longest move the
        longest themselves (``bounds``), and finals of a budget that binds (no poll before
        the longest) say nothing of the shape.
        """
        lo, hi = self._prior(tier)
        return math.log((hi - age) / (hi - lo)) if lo < age < hi else 0.0

    def bounds(self, tier: Tier) -> tuple[float, float]:
        """``(lo, hi)``: the shortest and longest this tier is expected to take."""
        lo, hi = self._prior(tier)
        if self.prior_rejected(tier):
            lo, hi = lo * _SLOWER[0], hi * _SLOWER[1]
        learned = self.learned(tier)
        if learned is not None:
            if self.trusted(tier):
                lo, hi = learned
            else:
                lo, hi = min(lo, learned[0]), max(hi, learned[1])
        if tier in self._oldest:
            oldest = self._oldest[tier][1]
            # Running past the longest expected, or past every video that ended while the
            # sample is too small to trust: that was too short.
            samples = self._samples.get(tier)
            longest_ended = hi if not samples or self.trusted(tier) else max(samples)
            if oldest >= min(hi, longest_ended):
                hi = max(hi, oldest * (1.0 + min(1.0, max(0.25, self.overrun_share()))))
        return lo, hi
