"""A starved submission goes first only when it can go: polls ahead of it are never stuck."""

from __future__ import annotations

import anyio
import pytest

from sora2_async import RateLimit, RequestKind, SlidingWindowLimiter

pytestmark = pytest.mark.anyio


async def test_a_starved_submission_that_cannot_go_does_not_hold_back_polls() -> None:
    limiter = SlidingWindowLimiter(RateLimit(4, per=3600), margin=0, starve_after=10)
    limiter.reserve(3)  # three running videos, each promised its final poll
    async with limiter.permit(RequestKind.POLL):
        pass  # one slot used: 1 used + 3 promised = the whole limit
    order: list[str] = []

    async def submit() -> None:
        async with limiter.permit(RequestKind.GENERATE, reserve=1):
            order.append("generate")

    polled_at: list[float] = []

    async def poll() -> None:
        async with limiter.permit(RequestKind.POLL):
            order.append("poll")
            polled_at.append(anyio.current_time())
        limiter.release(1)  # that poll found its video done: its promise comes back

    with anyio.fail_after(2 * 3600):  # a deadlock fails here instead of hanging
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit)
            await anyio.sleep(60)  # the submission has starved for a while now
            for _ in range(3):
                tg.start_soon(poll)
    # The polls went at once (they end videos); the submission waited for the window.
    assert order == ["poll", "poll", "poll", "generate"]
    assert polled_at == [60.0, 60.0, 60.0]


async def test_a_starved_submission_that_can_go_goes_before_new_polls() -> None:
    limiter = SlidingWindowLimiter(RateLimit(3, per=100), margin=0, starve_after=10)
    for _ in range(3):
        async with limiter.permit(RequestKind.POLL):
            pass  # the window is full until t = 100
    order: list[str] = []

    async def take(kind: RequestKind, name: str) -> None:
        async with limiter.permit(kind):
            order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, RequestKind.GENERATE, "generate")
        await anyio.sleep(20)
        tg.start_soon(take, RequestKind.POLL, "poll")
    assert order == ["generate", "poll"]
