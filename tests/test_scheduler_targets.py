"""The scheduler's targets (issue 4), in virtual time against the simulator, on both backends.

Each scenario is the one the benchmarks report (``benchmarks/scenarios.py``): the simulator
enforces a sliding 100 requests per hour, seeded; the SDK is driven the way users write it.
"""

from __future__ import annotations

import pytest

from benchmarks.scenarios import SCENARIOS, Report, run_scenario, sdk_driver

pytestmark = pytest.mark.anyio


async def run(name: str) -> Report:
    report = await run_scenario(SCENARIOS[name], sdk_driver)
    # Everything asked for yields exactly one result, and nothing is paid twice.
    assert report.lost == 0, report
    assert report.duplicates == 0, report
    assert report.delivered + report.failed == report.videos, report
    return report


async def test_bulk_runs_at_the_floor() -> None:
    r = await run("bulk")
    assert r.requests_per_video <= 2.05, r
    assert r.makespan_over_floor <= 1.05, r
    assert r.mean_delivery_over_makespan <= 0.6, r
    assert r.responses_429 == 0, r
    assert r.failed == 0, r


async def test_few_videos_spend_idle_budget_on_latency() -> None:
    r = await run("few")
    assert r.delay_p95 <= 10.0, r
    assert r.requests_per_video <= 10.0, r
    assert r.responses_429 == 0, r


async def test_pro_tier_all_delivered_soon_after_the_longest_task() -> None:
    r = await run("pro")
    assert r.makespan <= 1.1 * r.floor, r  # the floor here is the longest task
    assert r.makespan <= 3600.0, r
    assert r.responses_429 == 0, r


async def test_shared_key_learns_from_429s_and_loses_nothing() -> None:
    r = await run("shared")
    assert r.responses_429 <= 3, r
    assert r.failed == 0, r


async def test_service_arrivals_are_detected_quickly() -> None:
    r = await run("service")
    assert r.delay_p95 <= 35.0, r
    assert r.responses_429 == 0, r
    assert r.failed == 0, r


async def test_failed_videos_are_their_own_results() -> None:
    r = await run("failures")
    assert r.failed > 0, r  # 10 % of 100 fail: some must
    assert r.delivered == r.videos - r.failed, r
    assert r.responses_429 == 0, r
