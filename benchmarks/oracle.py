"""The offline oracle: the best a client could do if it knew every video's duration.

Each video costs exactly two requests: its generate, and one status check sent at the
instant it completes. Both are subject to the key's sliding window (``limit`` requests per
``window`` seconds, of which a neighbour's share is not ours). Requests are served in time
order, a due check before any generate (a check ends a video; a generate only starts one),
generates in arrival order. A generate is held back when sending it would leave no slot for
a check already due within the video's own duration; that is what the SDK's promised
polls do too, so the oracle's makespan is a fair yardstick, not a free lunch.

The oracle is greedy and exact on its own terms: it is not proven optimal, but it sends no
request that does not serve a video and never polls early or late, so nothing online can
beat it by more than its greed loses (none in the cases measured: a batch at once).
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Sequence

import attrs

__all__ = ["OracleResult", "oracle"]


@attrs.frozen
class OracleResult:
    """What the oracle achieved."""

    makespan: float  #: from the start to the last video's check
    delays: tuple[float, ...]  #: per video: its check's time minus its completion
    requests: int  #: always two per video


def oracle(
    arrivals: Sequence[float], durations: Sequence[float], *, limit: int, window: float
) -> OracleResult:
    """Schedule every video (``arrivals[i]``, ``durations[i]``) under ``limit`` per ``window``."""
    if len(arrivals) != len(durations):
        raise ValueError("one duration per arrival")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit!r}")
    sent: deque[float] = deque()  # send times still in the window, oldest first
    order = sorted(range(len(arrivals)), key=lambda i: arrivals[i])
    checks: list[tuple[float, int]] = []  # (due, video): completion times of started videos
    delays = [0.0] * len(arrivals)
    nxt = 0
    now = 0.0
    makespan = 0.0

    def free_at(t: float) -> float:
        while sent and sent[0] + window <= t:
            sent.popleft()
        if len(sent) < limit:
            return t
        return sent[len(sent) - limit] + window

    while nxt < len(order) or checks:
        # The next thing that wants to go: a due check, else the next arrival.
        candidates = []
        if checks:
            candidates.append(checks[0][0])
        if nxt < len(order):
            candidates.append(arrivals[order[nxt]])
        now = max(now, min(candidates))
        now = free_at(now)
        if checks and checks[0][0] <= now:
            due, video = heapq.heappop(checks)
            sent.append(now)
            delays[video] = now - due
            makespan = max(makespan, now)
            continue
        if nxt < len(order) and arrivals[order[nxt]] <= now:
            video = order[nxt]
            done = now + durations[video]
            # Hold the generate if, at the due time of some check (its own included), the
            # window would then hold more than the limit: what is sent and still counts
            # then, this generate, and every check due by then.
            if not checks or _fits(sent, [d for d, _ in checks], done, limit, window):
                sent.append(now)
                heapq.heappush(checks, (done, video))
                nxt += 1
                continue
            # Wait for the next change: a check falling due or a slot leaving the window.
            later = [checks[0][0]] + [s + window for s in sent if s + window > now]
            now = max(now, min(later))
            continue
        # Nothing is ready yet: move to the next event.
        now = min((c for c in candidates if c > now), default=now)
    return OracleResult(makespan, tuple(delays), 2 * len(arrivals))


def _fits(sent: deque[float], dues: list[float], done: float, limit: int, window: float) -> bool:
    times = list(sent)
    for k, due in enumerate(sorted([*dues, done]), start=1):
        counting = len(times) - bisect.bisect_right(times, due - window) + 1
        if counting + k > limit:
            return False
    return True
