"""What a full and a quick run measure, and the results they put together.

Full: every scenario with every client, the sweep (batch 1 → 500, budget 100 → 1,000), and
the real-time overhead runs. Quick: the same scenarios (in virtual time they take about a
second) and a smaller sweep; no overhead runs. Both check correctness on every run.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from .checks import problems, targets
from .overhead import OverheadPlan, run_overhead
from .quality import Outcome, SweepPoint, run_quality, run_sweep
from .scenarios import SCENARIOS

__all__ = ["FULL", "QUICK", "Suite", "run_checks", "run_suite"]


@attrs.frozen
class Suite:
    """One kind of run."""

    name: str
    sweep_batches: Sequence[int]
    sweep_budgets: Sequence[int]
    overhead: OverheadPlan | None


FULL = Suite("full", (1, 5, 20, 50, 100, 200, 500), (100, 300, 1000), OverheadPlan())
QUICK = Suite("quick", (1, 20, 100), (100, 1000), None)


def run_checks(suite: Suite) -> tuple[list[Outcome], list[SweepPoint], list[str]]:
    """The virtual-time part: scenarios and sweep, and what is wrong with them."""
    outcomes = run_quality(SCENARIOS.values())
    sweep = run_sweep(SCENARIOS["bulk"], suite.sweep_batches, suite.sweep_budgets)
    return outcomes, sweep, problems([*outcomes, *(p.outcome for p in sweep)])


def run_suite(suite: Suite, *, command: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``suite``; return the results (the JSON file's content)."""
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    log(f"{suite.name}: scenarios and sweep in virtual time ...")
    outcomes, sweep, found = run_checks(suite)
    overhead = run_overhead(suite.overhead, log) if suite.overhead is not None else None
    return {
        "schema": 1,
        "meta": {
            "command": command,
            "quick": suite is QUICK,
            "started_at": started.isoformat(timespec="seconds"),
            "seconds": time.perf_counter() - clock,
            "machine": _machine(),
            "versions": _versions(),
            "git_commit": _git_commit(),
        },
        "quality": {
            "scenarios": [o.as_json() for o in outcomes],
            "targets": targets(outcomes),
            "problems": found,
        },
        "sweep": {
            "base": "bulk",
            "batches": list(suite.sweep_batches),
            "budgets": list(suite.sweep_budgets),
            "points": [p.as_json() for p in sweep],
        },
        "overhead": overhead,
    }


def _machine() -> dict[str, Any]:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _versions() -> dict[str, str]:
    out = {}
    for name in (
        "sora2-async",
        "httpx",
        "httpcore",
        "anyio",
        "trio",
        "uvicorn",
        "h11",
        "matplotlib",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None
