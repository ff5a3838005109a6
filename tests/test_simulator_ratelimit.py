"""The simulator's rate limit, against a brute-force count, in every mode it offers."""

from __future__ import annotations

import math
import random

import anyio
import httpx
import pytest

from sora2_async import RateLimit
from sora2_async.testing import RateLimitPolicy, Simulator, WindowKind
from sora2_async.testing._config import TIME_EPSILON
from sora2_async.testing._ratelimit import max_in_window

pytestmark = pytest.mark.anyio

API = "https://nanophoto.ai"
GENERATE = "/api/sora-2/generate"
STATUS = "/api/sora-2/check-status"
AUTH = {"Authorization": "Bearer key-a"}


async def knock(http: httpx.AsyncClient, i: int, headers: dict[str, str] = AUTH) -> int:
    """One request: alternately a generate, a check-status, and an invalid body."""
    if i % 3 == 0:
        response = await http.post(
            API + GENERATE, json={"prompt": "p", "mode": "textToVideo"}, headers=headers
        )
    elif i % 3 == 1:
        response = await http.post(API + STATUS, json={"taskId": "task_unknown"}, headers=headers)
    else:
        response = await http.post(API + STATUS, content=b"{oops", headers=headers)
    return response.status_code


class ManualClock:
    """A clock the test sets by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def expected_rejections(
    times: list[float], limit: int, window: float, kind: WindowKind, count_rejected: bool
) -> list[bool]:
    """The brute-force oracle: look at every earlier request, no cleverness."""
    counted: list[float] = []
    rejected: list[bool] = []
    for t in times:
        if kind is WindowKind.SLIDING:
            in_window = sum(1 for s in counted if s + window > t + TIME_EPSILON)
        else:
            period = math.floor((t + TIME_EPSILON) / window)
            in_window = sum(1 for s in counted if math.floor((s + TIME_EPSILON) / window) == period)
        over = in_window >= limit
        rejected.append(over)
        if not over or count_rejected:
            counted.append(t)
    return rejected


def brute_max_in_window(times: list[float], window: float) -> int:
    return max(
        (sum(1 for s in times if s <= t < s + window - TIME_EPSILON) for t in times), default=0
    )


@pytest.mark.parametrize("kind", list(WindowKind))
@pytest.mark.parametrize("count_rejected", [True, False])
async def test_rejections_match_a_brute_force_count(kind: WindowKind, count_rejected: bool) -> None:
    rng = random.Random(f"{kind}-{count_rejected}")
    for _ in range(8):
        limit = rng.randint(1, 8)
        window = rng.choice([10.0, 60.0, 3600.0 / 7])
        times: list[float] = []
        t = rng.uniform(0, 50)
        for _ in range(rng.randint(20, 80)):
            # Bursts, pauses, exact repeats and exact window boundaries.
            t += rng.choice([0.0, 0.1, rng.uniform(0, window / 3), window, window / limit])
            times.append(t)
        clock = ManualClock()
        policy = RateLimitPolicy(limit, window, window=kind, count_rejected=count_rejected)
        sim = Simulator(rate_limit=policy, clock=clock)
        seen: list[bool] = []
        async with httpx.AsyncClient(transport=sim.transport()) as http:
            for i, t in enumerate(times):
                clock.now = t
                seen.append(await knock(http, i) == 429)
        assert seen == expected_rejections(times, limit, window, kind, count_rejected)
        stats = sim.stats()
        assert stats.responses_429 == sum(seen)
        # The audit counts every request the server saw, rejected or not.
        assert stats.max_requests_in_window == brute_max_in_window(times, window)


def test_max_in_window_matches_brute_force() -> None:
    rng = random.Random(5)
    for _ in range(200):
        window = rng.choice([1.0, 2.5, 10.0])
        times = sorted(
            rng.choice([0.0, 1.0, 2.5, 5.0]) + rng.randint(0, 30) * rng.choice([0.5, 1.0, 2.5])
            for _ in range(rng.randint(0, 40))
        )
        assert max_in_window(times, window) == brute_max_in_window(times, window)


async def test_429_body_is_the_documented_one_and_invalid_requests_count() -> None:
    sim = Simulator(rate_limit=RateLimitPolicy(3, 3600))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        codes = [await knock(http, i) for i in range(3)]
        response = await http.post(API + STATUS, json={"taskId": "x"}, headers=AUTH)
    assert codes == [200, 404, 400]
    assert response.status_code == 429
    assert "retry-after" not in response.headers  # off by default
    assert response.json() == {
        "success": False,
        "error": "API key rate limit exceeded. Maximum 3 requests per hour.",
        "errorCode": "API_KEY_RATE_LIMIT_EXCEEDED",
    }
    assert response.json()["error"].startswith("API key rate limit exceeded. ")


async def test_the_default_is_100_per_hour_sliding_per_key() -> None:
    sim = Simulator()
    assert sim.rate_limit == RateLimitPolicy(100, 3600.0, WindowKind.SLIDING, True, False)
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        start = anyio.current_time()
        for i in range(100):
            assert await knock(http, i) != 429
            await anyio.sleep(1)
        other = {"Authorization": "Bearer key-b"}
        assert await knock(http, 0, other) == 200  # another key, another budget
        await anyio.sleep(start + 3600 - anyio.current_time())
        assert await knock(http, 0) == 200  # the first request left at exactly t + 3600
        assert await knock(http, 0) == 429
        assert await knock(http, 0, other) == 200
    assert sim.stats().responses_429 == 1
    assert sim.stats().max_requests_in_window_by_key == {"key-a": 101, "key-b": 2}


async def test_sdk_rate_limit_converts_to_a_sliding_policy() -> None:
    sim = Simulator(rate_limit=RateLimit(5, per=60.0))
    assert sim.rate_limit == RateLimitPolicy(5, 60.0)


@pytest.mark.parametrize(("count_rejected", "expected"), [(False, "60"), (True, "91")])
async def test_retry_after_is_sent_when_asked_for(count_rejected: bool, expected: str) -> None:
    clock = ManualClock()
    policy = RateLimitPolicy(2, 100, retry_after=True, count_rejected=count_rejected)
    sim = Simulator(rate_limit=policy, clock=clock)
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        await knock(http, 0)
        clock.now = 30.5
        await knock(http, 0)
        clock.now = 40.0
        response = await http.post(API + STATUS, json={"taskId": "x"}, headers=AUTH)
    assert response.status_code == 429
    # Not counting it, the t=0 entry leaves at t=100; counting it, the t=30.5 one must
    # leave too (at t=130.5), since this rejected request now holds a place.
    assert response.headers["retry-after"] == expected


async def test_fixed_window_resets_on_the_clock_period() -> None:
    clock = ManualClock()
    policy = RateLimitPolicy(2, 100, window="fixed", retry_after=True)
    sim = Simulator(rate_limit=policy, clock=clock)
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        clock.now = 98.0
        assert [await knock(http, 1) for _ in range(3)] == [404, 404, 429]
        response = await http.post(API + STATUS, json={"taskId": "x"}, headers=AUTH)
        assert response.headers["retry-after"] == "2"
        clock.now = 100.0  # a new period: a full budget again, right after a burst
        assert [await knock(http, 1) for _ in range(3)] == [404, 404, 429]
    # Seven requests seen, four of them accepted, within two seconds: a fixed window lets
    # twice the limit through across a boundary, which the audit shows.
    assert sim.stats().max_requests_in_window == 7
    assert sim.stats().responses_429 == 3


async def test_time_scale_shrinks_the_window() -> None:
    sim = Simulator(rate_limit=RateLimitPolicy(2, 3600), time_scale=3600)
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        assert [await knock(http, 1) for _ in range(3)] == [404, 404, 429]
        await anyio.sleep(1.0)
        assert await knock(http, 1) == 404


async def test_a_virtual_time_loop_waiting_on_the_boundary_does_not_spin() -> None:
    # Retrying at exactly "when the first request leaves" must succeed: the boundary is
    # inclusive, so a client sleeping until then is not answered 429 forever.
    sim = Simulator(rate_limit=RateLimitPolicy(1, 0.1 + 0.2), time_scale=1.0)
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        assert await knock(http, 1) == 404
        first = anyio.current_time()
        attempts = 0
        while await knock(http, 1) == 429:
            attempts += 1
            assert attempts < 3
            await anyio.sleep(first + sim.window - anyio.current_time())
