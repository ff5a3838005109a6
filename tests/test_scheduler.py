"""The scheduler's own waiting (``_scheduler``), on both backends, in virtual time."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from sora2_async import Sora2Client
from sora2_async.testing import Simulator

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
