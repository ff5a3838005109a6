"""The turns polls take before they are sent (``sora2_async._turns``), on both backends."""

from __future__ import annotations

import anyio
import pytest

from sora2_async import RateLimit, SlidingWindowLimiter
from sora2_async._limits import RequestKind
from sora2_async._turns import PollTurns

pytestmark = pytest.mark.anyio


async def fill(limiter: SlidingWindowLimiter, n: int) -> None:
    for _ in range(n):
        async with limiter.permit(RequestKind.POLL):
            pass


async def test_below_half_the_window_any_number_go_at_once() -> None:
    limiter = SlidingWindowLimiter(RateLimit(10, per=3600.0))
    turns = PollTurns(limiter)
    start = anyio.current_time()
    async with turns.taken(), turns.taken(), turns.taken(), turns.taken(), turns.taken():
        assert anyio.current_time() == start
    assert "level=0" in repr(turns)


async def test_near_the_edge_polls_go_one_at_a_time() -> None:
    limiter = SlidingWindowLimiter(RateLimit(10, per=3600.0))
    await fill(limiter, 8)  # 80 %: past three quarters
    turns = PollTurns(limiter)
    order: list[str] = []
    async with anyio.create_task_group() as group:

        async def poll(name: str) -> None:
            async with turns.taken():
                order.append(f"{name} in")
                await anyio.sleep(1.0)
                order.append(f"{name} out")

        group.start_soon(poll, "a")
        await anyio.sleep(0.1)
        group.start_soon(poll, "b")
    assert order == ["a in", "a out", "b in", "b out"]


async def test_a_poll_that_waited_for_a_turn_of_a_few_goes_alone_if_the_window_filled() -> None:
    """Four hold the turns of a few at once (the window half full); a fifth waits for one.
    By the time one is free the window is past three quarters: the fifth queues again for
    the one-at-a-time turn, behind the poll that holds it, instead of going beside it."""
    limiter = SlidingWindowLimiter(RateLimit(10, per=3600.0))
    await fill(limiter, 5)
    turns = PollTurns(limiter)
    events: list[str] = []
    async with anyio.create_task_group() as group:

        async def hold_a_few(i: int) -> None:
            async with turns.taken():
                await anyio.sleep(10.0 + i)

        for i in range(4):
            group.start_soon(hold_a_few, i)
        await anyio.sleep(0.1)

        async def fifth() -> None:
            async with turns.taken():
                events.append(f"fifth in at {anyio.current_time():.0f}")

        group.start_soon(fifth)
        await anyio.sleep(1.0)
        await fill(limiter, 3)  # 80 % now

        async def edge_holder() -> None:
            async with turns.taken():
                events.append("edge in")
                await anyio.sleep(20.0)  # past when a turn of a few frees (10 s)
                events.append(f"edge out at {anyio.current_time():.0f}")

        group.start_soon(edge_holder)
    assert events[0] == "edge in"
    assert events[1:] == ["edge out at 21", "fifth in at 21"]
