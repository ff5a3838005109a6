"""The scheduler's own waiting (``_scheduler``), on both backends, in virtual time."""

from __future__ import annotations

import itertools
import json

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx

from sora2_async import RateLimit, SlidingWindowLimiter, Sora2Client, Task
from sora2_async._limits import RequestKind
from sora2_async.testing import Simulator
from tests.helpers import COMPLETED, RATE_LIMITED, STATUS, client, ok

pytestmark = pytest.mark.anyio


async def test_a_deadline_a_hair_past_a_clock_tick_is_reached() -> None:
    """A deadline within a clock tick of now counts as reached. looptime's clock keeps
    whole microseconds, and a poll due 2.3e-13 s past a tick (a deadline made by arithmetic)
    was slept toward forever with the CPU spinning: a VideoWorker test hung the suite so."""
    async with Sora2Client("sched-key-1", transport=Simulator().transport()) as client:
        await anyio.sleep(1024.986174)
        deadline = anyio.current_time() + 2.2737367544323206e-13
        assert deadline > anyio.current_time()
        reached: list[bool] = []
        async with anyio.create_task_group() as group:

            async def sleep() -> None:
                reached.append(await client._scheduler._sleep_until(deadline))
                group.cancel_scope.cancel()

            group.start_soon(sleep)
            for _ in range(10_000):  # a watchdog: a spinning sleep never lets it finish
                await anyio.lowlevel.checkpoint()
            group.cancel_scope.cancel()
        assert reached == [True]


async def test_after_a_429_the_polls_due_with_it_pause_longer_with_each_in_a_row(
    api: respx.MockRouter,
) -> None:
    """A 429 says the server's window is full, not by how much. The limiter tightens the
    limit to what our window held and lets the next poll go as soon as one of ours leaves
    it, which a neighbour that spends steadily refuses again (a burst's polls were refused
    one after another so as the window turned). So this process's polls pause after a 429:
    5 s, then 10 s after a second in a row (before: the next went 5 s after the second,
    when the next of ours left the window)."""
    refusals = [True, True]
    times: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(anyio.current_time())
        if refusals:
            refusals.pop()
            return ok(RATE_LIMITED, 429)
        return ok({**COMPLETED, "taskId": json.loads(request.content)["taskId"]})

    api.post(STATUS).mock(side_effect=answer)
    limiter = SlidingWindowLimiter(RateLimit(10, per=3600.0))
    for _ in range(9):  # an hour ago, one a second: they leave the window one a second
        async with limiter.permit(RequestKind.POLL):
            pass
        await anyio.sleep(1.0)
    async with client(rate_limit=limiter) as c:
        await anyio.sleep(3600.0 - 9.0 - 1.0 - c._scheduler.final_poll_after(None))
        now = anyio.current_time()
        tasks = [Task(f"task_{i}", submitted_at=now) for i in range(3)]
        async with anyio.create_task_group() as group:
            for task in tasks:
                group.start_soon(c.wait, task)
    assert len(times) == 5, times  # two refused, then one answer each
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 5.0, (times, gaps)
    assert gaps[1] >= 10.0, (times, gaps)
