"""The scheduler's cost per decision as the number of videos in flight grows.

Two measurements, each size in a fresh process (``python -m benchmarks.decisions METHOD N``,
one JSON line), so that one size's heap does not slow the next:

* ``decision``: the decision path alone, called directly: the default planner's
  :meth:`~sora2_async.PollPlanner.next_poll` (the duration model's bounds, the extra-poll
  allowance, the poll plan) on the budget's snapshot, and the admission through the
  :class:`~sora2_async.SlidingWindowLimiter` (``try_permit`` for an extra poll, ``permit`` for
  a due one) with its stamp. The budget starts as N in-flight videos leave it: N submissions
  in the window, each with its final poll promised. Nothing is sent. Wall time per decision,
  the best of 5 rounds of ``K`` decisions over the N tracked plans.
* ``poll``: the whole SDK following N videos with ``as_completed`` over an instant
  ``httpx.MockTransport``, on trio's ``MockClock`` (virtual time: only CPU is measured). The
  videos are submitted evenly over one poll interval, so polls are spread evenly in time;
  CPU seconds (``time.process_time``) per poll over a window of about ``K`` polls. This adds
  the HTTP client, parsing and the event loop's timers to the decision.

Targets: the cost grows no faster than ``log n``, i.e. ``cost(n) / cost(100)`` stays within
``log(n) / log(100)``.
"""

from __future__ import annotations

import gc
import json
import math
import subprocess
import sys
import time
from typing import Any

import anyio
import httpx
import trio
import trio.testing

from sora2_async import (
    Demand,
    ModelTier,
    PollPlanner,
    PollPolicy,
    RateLimit,
    RequestKind,
    SlidingWindowLimiter,
    Sora2Client,
    Task,
    Tracked,
    VideoRequest,
)

from .scenarios import KEY

__all__ = ["measure_in_child"]

#: Priors wide enough that every video stays in its grid of extra polls for the whole run
#: (with the default 1-3 min, a video would reach its final poll before the window ends),
#: and no bound on extra polls (the default spreads 14 over the range: a day here).
WIDE = PollPolicy(priors={ModelTier.SORA2: (60.0, 86_400.0)}, max_extra_polls=None)
UNLIMITED = RateLimit(10**9, per=3600.0)


def measure_in_child(
    method: str, videos: int, decisions: int, timeout: float = 240.0
) -> dict[str, Any]:
    """Run one size in a fresh interpreter; return what it printed."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.decisions", method, str(videos), str(decisions)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def _decision_cost(videos: int, decisions: int) -> float:
    planner = PollPlanner(PollPolicy())
    limiter = SlidingWindowLimiter(UNLIMITED)
    horizon = planner.final_poll_after(ModelTier.SORA2)
    for _ in range(videos):  # N submissions, each promising its final poll
        async with limiter.permit(RequestKind.GENERATE, promise=horizon):
            pass
    demand = Demand(submissions_in_window=videos)
    now = anyio.current_time()
    plans = [Tracked(ModelTier.SORA2, anchor=now - 180.0 * i / videos) for i in range(videos)]
    best = math.inf
    for _ in range(5):
        gc.collect()
        started = time.perf_counter()
        for i in range(decisions):
            plan = plans[i % videos]
            now = anyio.current_time()
            step = planner.next_poll(plan, now, limiter.last_state, demand)
            admitted = (
                await limiter.try_permit() if step.extra else limiter.permit(RequestKind.POLL)
            )
            if admitted is not None:
                async with admitted:
                    pass
            plan.polls += 1
            plan.last_poll = now
        best = min(best, (time.perf_counter() - started) / decisions)
    return best


async def _poll_cost(videos: int, decisions: int) -> tuple[float, int]:
    polls = [0]

    def answer(request: httpx.Request) -> httpx.Response:
        polls[0] += 1
        task_id = json.loads(request.content)["taskId"]
        body = {
            "success": True,
            "status": "processing",
            "progress": "generating",
            "taskId": task_id,
        }
        return httpx.Response(200, json=body)

    interval = WIDE.target_delay
    now = anyio.current_time()
    request = VideoRequest("in flight")
    # Submitted evenly over one interval before now: polls come evenly, not in one burst.
    tasks = [Task(f"task_{i:012x}", request, now - interval * i / videos) for i in range(videos)]
    window = interval * decisions / videos  # virtual seconds that hold about K polls
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http,
        Sora2Client(KEY, http_client=http, rate_limit=UNLIMITED, poll_policy=WIDE) as sdk,
        sdk.as_completed(tasks),
    ):
        # The first polls fall evenly over [lo, lo + interval]: start measuring in there.
        await anyio.sleep(WIDE.priors[ModelTier.SORA2][0] + interval / 10)
        gc.collect()
        count, cpu = polls[0], time.process_time()
        await anyio.sleep(window)
        return (time.process_time() - cpu) / (polls[0] - count), polls[0] - count


def main() -> None:
    """Measure the method and size named on the command line; print them as JSON."""
    method, videos, decisions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    clock = trio.testing.MockClock(autojump_threshold=0)
    if method == "decision":
        seconds = trio.run(_decision_cost, videos, decisions)
        result = {"seconds_per_decision": seconds, "decisions": decisions}
    elif method == "poll":
        seconds, polls = trio.run(_poll_cost, videos, decisions, clock=clock)
        result = {"cpu_seconds_per_poll": seconds, "polls": polls}
    else:
        raise SystemExit(f"unknown method {method!r}")
    print(json.dumps({"method": method, "videos": videos, **result}))


if __name__ == "__main__":
    main()
