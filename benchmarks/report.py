"""The results as files: JSON (schema in the README), a markdown table, and a PNG plot.

matplotlib is optional (the ``bench`` extra): without it, :func:`write_plot` says so and
returns ``False``, and everything else still works.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["markdown", "write_json", "write_plot"]

CLIENT_ORDER = ("sdk", "every-5s", "fixed-120-20")


def _plain(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None``: strict JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` as strict JSON (written aside, then moved into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_plain(results), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def quality_table(scenarios: Sequence[dict[str, Any]]) -> list[str]:
    """Per scenario and client: the scheduling-quality figures."""
    header = [
        "scenario",
        "client",
        "videos",
        "requests/video",
        "makespan (s)",
        "makespan / floor",
        "mean delivery / makespan",
        "p50 delay (s)",
        "p95 delay (s)",
        "429s",
        "lost",
    ]
    rows = [
        [
            r["scenario"],
            r["client"],
            _num(r["videos"]),
            _num(r["requests_per_video"]),
            _num(r["makespan"], 0),
            _num(r["makespan_over_floor"]),
            _num(r["mean_delivery_over_makespan"]),
            _num(r["delay_p50"], 1),
            _num(r["delay_p95"], 1),
            _num(r["responses_429"]),
            _num(r["lost"]),
        ]
        for r in scenarios
    ]
    return _table(header, rows)


def targets_table(targets: Sequence[dict[str, Any]]) -> list[str]:
    """The scheduler issue's targets: the SDK's value and the plain clients' beside it."""
    keys: list[tuple[str, str]] = []
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t in targets:
        key = (t["scenario"], t["target"])
        if key not in keys:
            keys.append(key)
        cells[(*key, t["client"])] = t
    rows = []
    for scenario, target in keys:
        row = [scenario, target]
        for client in CLIENT_ORDER:
            cell = cells.get((scenario, target, client))
            row.append(
                "" if cell is None else f"{_num(cell['value'])} {'✓' if cell['met'] else '✗'}"
            )
        rows.append(row)
    return _table(["scenario", "target", *CLIENT_ORDER], rows)


def sweep_table(points: Sequence[dict[str, Any]]) -> list[str]:
    """Videos per hour by batch size (rows) and budget × client (columns), with the ceiling."""
    budgets = sorted({p["budget"] for p in points})
    batches = sorted({p["batch"] for p in points})
    at = {(p["batch"], p["budget"], p["client"]): p for p in points}
    header = ["batch"]
    for budget in budgets:
        header += [f"{budget}/h {c}" for c in CLIENT_ORDER]
    rows = []
    for batch in batches:
        row = [str(batch)]
        for budget in budgets:
            for client in CLIENT_ORDER:
                p = at.get((batch, budget, client))
                row.append("" if p is None else _num(p["videos_per_hour"], 1))
        rows.append(row)
    ceilings = ["ceiling (budget / 2)"]
    for budget in budgets:
        ceilings += [_num(budget / 2, 0)] * len(CLIENT_ORDER)
    rows.append(ceilings)
    return _table(header, rows)


def overhead_tables(overhead: dict[str, Any]) -> list[str]:
    """Throughput, memory and decision cost."""
    out: list[str] = []
    tp = overhead["throughput"]
    clients = ("raw", "raw-per-video", "sdk", "sdk-gated")
    header = ["in flight", *(f"{c} checks/s" for c in clients), "sdk / raw", "sdk / raw-per-video"]
    header += [f"{c} CPU µs/check" for c in clients]
    rows = []
    for row in tp["by_size"]:
        rate, cpu = row["checks_per_second"], row["cpu_seconds_per_check"]
        rows.append(
            [
                _num(row["in_flight"]),
                *(_num(rate.get(c), 0) for c in clients),
                _num(row["sdk_over_raw"]),
                _num(row["sdk_over_raw_per_video"]),
                *(_num(cpu[c] * 1e6, 0) if c in cpu else "—" for c in clients),
            ]
        )
    out += [
        f"Status checks per second (target: sdk ≥ {tp['target_sdk_over_raw']} × raw; "
        f"met: {'yes' if tp['target_met'] else 'NO'}):",
        "",
    ]
    out += _table(header, rows)
    mem = overhead["memory"]
    out += [
        f"Peak RSS per in-flight video (target ≤ {mem['target_kib_per_video']:g} KiB for the "
        f"SDK; met: {'yes' if mem['target_met'] else 'NO'}):",
        "",
    ]
    out += _table(
        ["client", "backend", "videos", "peak RSS before (KiB)", "after (KiB)", "KiB / video"],
        [
            [
                r["client"],
                r["backend"],
                _num(r["videos"]),
                _num(r["peak_rss_before_kib"]),
                _num(r["peak_rss_after_kib"]),
                _num(r["kib_per_video"]),
            ]
            for r in mem["runs"]
        ],
    )
    dec = overhead["decisions"]
    out += [
        f"Scheduler cost as videos in flight grow (target: {dec['target']}; "
        f"met: {'yes' if dec['target_met'] else 'NO'}):",
        "",
    ]
    out += _table(
        [
            "in flight",
            "decision (µs)",
            "growth",
            "whole poll, CPU (µs)",
            "growth",
            "log n / log 100",
        ],
        [
            [
                _num(r["videos"]),
                _num(r["seconds_per_decision"] * 1e6, 1),
                _num(r["decision_growth"]),
                _num(r["cpu_seconds_per_poll"] * 1e6, 0),
                _num(r["poll_growth"]),
                _num(r["log_growth"]),
            ]
            for r in dec["by_size"]
        ],
    )
    if overhead.get("admission"):
        out += [
            "Admission cost per permit (admit and stamp; memory's 8 processes do not share; "
            "Redis on loopback):",
            "",
        ]
        out += _table(
            ["store", "processes", "permits", "p50 (µs)", "p99 (µs)"],
            [
                [
                    r["store"],
                    _num(r["processes"]),
                    _num(r["permits"]),
                    _num(r["p50_us"], 0),
                    _num(r["p99_us"], 0),
                ]
                for r in overhead["admission"]
            ],
        )
    return out


def markdown(results: dict[str, Any], *, plot: str | None = None) -> str:
    """The whole run as markdown; ``plot`` is the PNG's file name, shown when given."""
    meta = results["meta"]
    lines = [
        f"# sora2-async benchmarks ({'quick' if meta['quick'] else 'full'} run)",
        "",
        f"`{meta['command']}` on {meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}), "
        f"Python {meta['machine']['python']}, {meta['started_at']}, {meta['seconds']:.0f} s.",
        "",
        "## Scheduling quality (virtual time, deterministic)",
        "",
        *quality_table(results["quality"]["scenarios"]),
        "Targets of the scheduler issue (✓ met, ✗ missed; plain clients shown for comparison):",
        "",
        *targets_table(results["quality"]["targets"]),
    ]
    if plot is not None:
        lines += [f"![requests per video, makespan, p95 delay, and the sweep]({plot})", ""]
    sweep = results.get("sweep")
    if sweep and sweep["points"]:
        lines += [
            f"## Sweep: videos per hour ({sweep['base']} batches; server limit = client budget)",
            "",
            *sweep_table(sweep["points"]),
        ]
    if results.get("overhead"):
        lines += [
            "## Overhead and scale (real time, loopback)",
            "",
            *overhead_tables(results["overhead"]),
        ]
    problems = results["quality"]["problems"]
    lines += (
        ["## Correctness", "", *(f"- {p}" for p in problems)]
        if problems
        else [
            "## Correctness",
            "",
            "Every run completed; every video was delivered exactly once; "
            "no 429 where none is allowed.",
            "",
        ]
    )
    return "\n".join(lines)


def _value(row: dict[str, Any] | None, field: str) -> float:
    value = None if row is None else row[field]
    return math.nan if value is None else float(value)


def write_plot(results: dict[str, Any], path: Path) -> bool:
    """Plot requests per video and makespan per scenario and client, and the sweep.

    Returns ``False`` (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError:
        return False
    scenarios = results["quality"]["scenarios"]
    names = list(dict.fromkeys(r["scenario"] for r in scenarios))
    sweep = results.get("sweep", {}).get("points", [])
    budgets = sorted({p["budget"] for p in sweep})
    fig, axes = plt.subplots(2, max(3, len(budgets)), figsize=(16, 9), squeeze=False)
    width = 0.8 / len(CLIENT_ORDER)
    panels = (
        ("requests_per_video", "requests per video", 1.0),
        ("makespan", "makespan (hours)", 3600.0),
        ("delay_p95", "p95 detection delay (seconds)", 1.0),
    )
    for column, (field, label, scale) in enumerate(panels):
        ax = axes[0][column]
        for i, client in enumerate(CLIENT_ORDER):
            by_name = {r["scenario"]: r for r in scenarios if r["client"] == client}
            values = [_value(by_name.get(n), field) / scale for n in names]
            ax.bar([x + i * width for x in range(len(names))], values, width, label=client)
        ax.set_xticks([x + width for x in range(len(names))], names)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(label)
        ax.legend(fontsize="small")
    for column, budget in enumerate(budgets):
        ax = axes[1][column]
        for client in CLIENT_ORDER:
            points = sorted(
                (p for p in sweep if p["budget"] == budget and p["client"] == client),
                key=lambda p: p["batch"],
            )
            ax.plot(
                [p["batch"] for p in points],
                [p["videos_per_hour"] for p in points],
                marker="o",
                label=client,
            )
        ax.axhline(budget / 2, color="grey", linestyle="--", label="ceiling: budget / 2")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("batch size (videos)")
        ax.set_ylabel("videos per hour")
        ax.set_title(f"sweep: budget {budget} requests/hour")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
