"""A client with ``time_scale=N`` matches a simulator served over HTTP at ``--time-scale N``.

Real time on loopback (uvicorn in a thread), on both backends: a batch that would take
minutes against the real API takes a fraction of a second, with the budget's window scaled
too, so no 429 comes back.
"""

from __future__ import annotations

import anyio
import pytest

from sora2_async import RateLimit, Sora2Client, VideoRequest
from sora2_async.testing import RateLimitPolicy, Simulator, serve_in_thread

pytestmark = pytest.mark.anyio

SCALE = 600.0  # a 3-minute video takes 0.3 s; an hour's window, 6 s


@pytest.mark.parametrize("anyio_backend", ["asyncio-real", "trio-real"], indirect=True)
async def test_scaled_client_runs_a_batch_against_a_scaled_server() -> None:
    sim = Simulator(seed=21, time_scale=SCALE, rate_limit=RateLimitPolicy(requests=20))
    with serve_in_thread(sim) as base_url:
        async with Sora2Client(
            "scale-key-0001", base_url=base_url, time_scale=SCALE, rate_limit=RateLimit(20)
        ) as client:
            started = anyio.current_time()
            requests = [VideoRequest(f"scaled {i}") for i in range(8)]
            async with client.batch(requests) as results:
                got = [r async for r in results]
            elapsed = anyio.current_time() - started
    stats = sim.stats()
    assert all(r.ok for r in got), [r.error for r in got if not r.ok]
    assert len(got) == 8
    assert stats.responses_429 == 0
    assert stats.max_requests_in_window <= 20
    # 16 requests at least, 20 per (scaled) window: well within two windows of 6 s.
    assert elapsed < 2 * 3600 / SCALE + 1


def test_time_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        Sora2Client("k", time_scale=0)
