"""How robust the scheduler's targets are: every scenario over many seeds, in virtual time.

The tests pin one seed per scenario; this runs ``--seeds N`` of them (seed 0 to N-1, each a
different draw of task durations, failures and arrivals) and prints, per target, how many
seeds meet it and the worst value seen::

    python -m benchmarks.seeds --seeds 10
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import attrs
import trio
import trio.testing

from .scenarios import SCENARIOS, Report, run_scenario, sdk_driver

#: Issue 4's targets: (scenario, what, value of a report, the bound, higher is worse).
TARGETS: list[tuple[str, str, Callable[[Report], float], float]] = [
    ("bulk", "requests/video", lambda r: r.requests_per_video, 2.05),
    ("bulk", "makespan/floor", lambda r: r.makespan_over_floor, 1.05),
    ("bulk", "mean delivery/makespan", lambda r: r.mean_delivery_over_makespan, 0.6),
    ("few", "p95 delay (s)", lambda r: r.delay_p95, 10.0),
    ("few", "requests/video", lambda r: r.requests_per_video, 10.0),
    ("pro", "makespan/longest task", lambda r: r.makespan / r.floor, 1.1),
    ("shared", "429s", lambda r: r.responses_429, 3),
    ("service", "p95 delay (s)", lambda r: r.delay_p95, 35.0),
    ("service", "429s", lambda r: r.responses_429, 0),
    ("failures", "videos lost", lambda r: r.lost, 0),
]


async def _reports(seeds: int) -> dict[str, list[Report]]:
    out: dict[str, list[Report]] = {}
    for name in sorted({scenario for scenario, *_ in TARGETS}):
        runs = []
        for seed in range(seeds):
            scenario = attrs.evolve(SCENARIOS[name], seed=seed)
            runs.append(await run_scenario(scenario, sdk_driver))
        out[name] = runs
    return out


def main(argv: list[str] | None = None) -> int:
    """Print how many seeds meet each target; exit 1 if any seed misses one."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seeds", description=__doc__)
    parser.add_argument("--seeds", type=int, default=10, help="how many seeds (default 10)")
    args = parser.parse_args(argv)
    reports = trio.run(_reports, args.seeds, clock=trio.testing.MockClock(autojump_threshold=0))
    missed = False
    print(f"{'scenario':<10} {'target':<24} {'bound':>7} {'worst':>8}  seeds meeting it")
    for scenario, what, value, bound in TARGETS:
        values = [value(r) for r in reports[scenario]]
        met = sum(v <= bound for v in values)
        missed |= met < len(values)
        print(f"{scenario:<10} {what:<24} {bound:>7g} {max(values):>8.3f}  {met}/{len(values)}")
    lost = sum(r.lost + r.duplicates for runs in reports.values() for r in runs)
    print(f"videos lost or paid twice, all runs: {lost}")
    return 1 if missed or lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
