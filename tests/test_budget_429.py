"""What a 429 does to the budget: stop, count it as spent, and tighten by what it says."""

from __future__ import annotations

import anyio
import pytest

from sora2_async import RateLimit, RequestKind, SlidingWindowLimiter

pytestmark = pytest.mark.anyio


async def refused(limiter: SlidingWindowLimiter, retry_after: float | None) -> None:
    async with limiter.permit(RequestKind.POLL) as permit:
        permit.rate_limited(retry_after)


async def test_retry_after_is_trusted_for_when_and_costs_one_slot() -> None:
    limiter = SlidingWindowLimiter(RateLimit(100, per=3600))
    await refused(limiter, 20.0)
    state = limiter.state()
    assert (state.used, state.limit, state.rate_limited) == (1, 99, 1)
    async with limiter.permit(RequestKind.POLL):
        assert anyio.current_time() == pytest.approx(20.0)


async def test_without_retry_after_the_limit_shrinks_at_most_by_half() -> None:
    limiter = SlidingWindowLimiter(RateLimit(100, per=3600), margin=0)
    for _ in range(59):
        async with limiter.permit(RequestKind.POLL):
            pass
        await anyio.sleep(30)  # our 59 requests span half an hour
    await refused(limiter, None)  # ... and the server's window is full: others hold 41
    state = limiter.state()
    # Others' 41 in our half hour would be 83 an hour, leaving us 15; but one 429 never
    # takes more than half of what we had in the window.
    assert state.limit == 60 // 2
    assert state.used == 60
    # Nothing goes until our own window has room under the new limit.
    async with limiter.permit(RequestKind.POLL):
        assert anyio.current_time() >= 3600


async def test_the_limit_comes_back_one_slot_per_quiet_window() -> None:
    limiter = SlidingWindowLimiter(RateLimit(10, per=100), margin=0)
    await refused(limiter, 1.0)
    assert limiter.state().limit == 9
    await anyio.sleep(100)
    assert limiter.state().limit == 10


async def test_without_retry_after_the_limit_shrinks_to_what_others_leave() -> None:
    limiter = SlidingWindowLimiter(RateLimit(100, per=3600), margin=0)
    for _ in range(95):
        async with limiter.permit(RequestKind.POLL):
            pass
        await anyio.sleep(36)  # our 95 requests span most of the hour
    await refused(limiter, None)  # the server's window is full: others hold the other 5
    # 5 of theirs in our 3420 s is about 5.3 an hour: we keep 100 - 5.3, less one.
    assert limiter.state().limit == 93
