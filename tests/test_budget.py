"""The in-memory store (SlidingWindowLimiter): what only it does, on asyncio and trio.

The rule every store shares is tested in ``test_limiter_contract``; here: its repr, its
leases (which never lapse unless asked to), its arguments, and thousands of waiters.
"""

from __future__ import annotations

import math
import random

import anyio
import pytest

from sora2_async._admission import Contender
from sora2_async._budget import Permit, RateLimit, SlidingWindowLimiter, _View
from sora2_async._limits import Lease
from tests.limiter_helpers import GENERATE, POLL, Run, extra, near, real_time_limit


def limiter(
    limit: int = 3,
    per: float = 100.0,
    *,
    margin: float = 0.0,
    starve_after: float | None = None,
    lease_ttl: float = math.inf,
) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(
        RateLimit(limit, per=per), margin=margin, starve_after=starve_after, lease_ttl=lease_ttl
    )


# -- repr and state ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_repr_shows_the_live_budget() -> None:
    lim = limiter(limit=5, per=100.0, margin=2.0)
    assert repr(lim) == (
        "<SlidingWindowLimiter 0/5 used per 102s, reserved=0 waiting=0+0 next_free_in=0.0s 429s=0>"
    )
    run = Run(lim)
    async with anyio.create_task_group() as tg:
        run.start(tg, "video", GENERATE, promise=50.0, took=10.0)  # in flight until 10
        await run.until(1.0)
        assert await extra(lim)
        for i in range(3):
            await run.request(i, at=2.0 + i)  # 2, 3, 4: the window is full
        run.start(tg, "waiting generate", GENERATE, promise=1.0, at=5.0)
        run.start(tg, "waiting poll", at=6.0)
        await run.until(7.0)
        assert repr(lim) == (
            "<SlidingWindowLimiter 5/5 used per 102s, reserved=1 waiting=1+1 "
            "next_free_in=96.0s 429s=0>"
        )


@pytest.mark.anyio
async def test_a_429_shows_in_repr() -> None:
    lim = limiter(limit=10, per=100.0)
    run = Run(lim)
    await run.request("refused", refused=True, retry_after=30.0)
    assert "1/9 used" in repr(lim)
    assert "next_free_in=30.0s 429s=1>" in repr(lim)


@pytest.mark.anyio
async def test_last_state_is_always_fresh_in_memory() -> None:
    lim = limiter(limit=2, per=100.0)
    run = Run(lim)
    await run.request("a")
    assert lim.last_state.used == 1
    await run.until(100.0)
    assert lim.last_state.used == 0  # nobody asked the store in between
    assert lim.last_state == await lim.snapshot()


@pytest.mark.anyio
async def test_next_free_in_is_infinite_while_only_answers_in_flight_can_free_a_slot() -> None:
    lim = limiter(limit=1, per=100.0)
    async with lim.permit(POLL):
        assert (await lim.snapshot()).next_free_in == math.inf


# -- leases --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_leases_never_lapse_by_default() -> None:
    lim = limiter(limit=3, per=100.0)
    assert lim.renew_every == math.inf
    run = Run(lim)
    await run.promises(2)
    await run.until(1e6)
    assert (await lim.snapshot()).reserved == 2


@pytest.mark.anyio
async def test_leases_lapse_lease_ttl_after_the_last_renew_and_come_back_with_their_owner() -> None:
    lim = limiter(limit=3, per=100.0, lease_ttl=30.0)
    assert lim.renew_every == near(10.0)
    run = Run(lim)
    await run.promises(2, due_in=500.0)
    await run.until(20.0)
    await lim.renew()  # alive until 50
    await run.until(49.9)
    assert (await lim.snapshot()).reserved == 2  # looking is not renewing ...
    await run.until(50.0)
    assert (await lim.snapshot()).reserved == 0  # ... so they lapse at 50
    assert (await lim.snapshot()).available == 3
    await lim.renew()  # the owner was alive after all: its videos still need their polls
    assert (await lim.snapshot()).reserved == 2
    await run.until(80.0)
    assert (await lim.snapshot()).reserved == 0
    await run.request("poll")  # an admission is a sign of life too
    assert (await lim.snapshot()).reserved == 2


@pytest.mark.anyio
async def test_closing_gives_back_the_leases_and_the_store_lives_on() -> None:
    lim = limiter(limit=3, per=100.0)
    run = Run(lim)
    await run.request("video", GENERATE, promise=10.0)
    await run.promises(1)
    await lim.aclose()
    state = await lim.snapshot()
    assert (state.used, state.reserved) == (1, 0)
    assert await run.request("after", GENERATE, promise=1.0) == near(0.0)  # still usable


@pytest.mark.anyio
async def test_the_lease_dues_it_shows_are_its_leases_dues_ascending() -> None:
    """Kept in order as leases come and go (a view costs nothing per lease), equal dues
    and releases in any order included."""
    lim, rng = limiter(limit=10_000, per=100.0), random.Random(7)
    held: list[Lease] = []
    for step in range(2_000):
        if held and rng.random() < 0.45:
            lease = held.pop(rng.randrange(len(held)))
            await lim.release(lease)
            if step % 3 == 0:
                await lim.release(lease)  # twice is harmless
        else:
            held.append(await lim.promise(float(rng.choice([0, 5, 5, 30, rng.uniform(0, 99)]))))
        now = anyio.current_time()
        assert _View(lim, now).lease_dues == sorted(lease.due for lease in held)
    await lim.aclose()
    assert _View(lim, anyio.current_time()).lease_dues == []


def test_arguments_that_admit_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match="lease_ttl"):
        SlidingWindowLimiter(lease_ttl=0.0)
    with pytest.raises(ValueError, match="lease_ttl"):
        SlidingWindowLimiter(lease_ttl=math.nan)
    with pytest.raises(ValueError, match="margin"):
        SlidingWindowLimiter(margin=-1.0)


def test_rate_limit_defaults_to_the_apis_allowance() -> None:
    assert RateLimit() == RateLimit(100, per=3600.0)
    assert SlidingWindowLimiter().rate_limit == RateLimit()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"requests": 0}, "requests"),
        ({"requests": -5}, "requests"),
        ({"per": 0.0}, "per"),
        ({"per": -1.0}, "per"),
        ({"per": math.nan}, "per"),
    ],
)
def test_rate_limit_refuses_what_admits_nothing(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be positive"):
        RateLimit(**kwargs)  # type: ignore[arg-type]


# -- load ----------------------------------------------------------------------------------


class CountingLimiter(SlidingWindowLimiter):
    """Counts how often the rule is asked: what a queue of waiters costs, in calls."""

    attempts = 0

    async def _attempt(self, me: Contender, rivals: list[Contender]) -> Permit | float:
        self.attempts += 1
        return await super()._attempt(me, rivals)


@pytest.mark.anyio
async def test_two_thousand_waiters_finish_in_bounded_time_in_priority_order() -> None:
    per, margin = 3600.0, 2.0
    window = per + margin
    lim = CountingLimiter(RateLimit(100, per=per), margin=margin, starve_after=1e9)
    run = Run(lim)
    for i in range(100):
        await run.request(("fill", i))  # the window is full until `window`
    with real_time_limit(10), anyio.fail_after(21 * window):
        async with anyio.create_task_group() as tg:
            for i in range(2000):
                kind = POLL if i % 2 else GENERATE
                run.start(tg, (kind, i), kind, at=1.0 + i / 1000)

    served = run.order[100:]
    polls = [(POLL, i) for i in range(1, 2000, 2)]
    generates = [(GENERATE, i) for i in range(0, 2000, 2)]
    assert served == polls + generates  # polls first, each kind first come, first served
    for j, name in enumerate(served):  # a hundred per window, each the moment it frees
        assert run.admitted[name] == near((1 + j // 100) * window), name
    assert run.now() == near(20 * window)
    # Only the two fronts ask the rule, each a few times: linear in the waiters (a queue that
    # woke every waiter on each change asked ~2,000 times per admission, millions in all).
    assert lim.attempts <= 3 * 2100, lim.attempts
