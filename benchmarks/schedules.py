"""One grid cell over many of trio's scheduling orders.

``python -m benchmarks.schedules 1000 1 bimodal bursts 60 --runs 30`` runs the cell
``1000/1x/bimodal/bursts/60`` (the grid's 1,000-video cap) ``--runs`` times, in virtual time,
each on trio's scheduler seeded with the run's number (``--first`` is the first seed), and
prints a line per run and the spread of each count. The grid (``grid.run_cell``) runs one
order, seeded with the cell's seed; the tests run on trio's unseeded order, which differs
from run to run. A count a test pins must hold over the spread this prints, not just over
the grid's one order: a rule that looks better on one order may be worse on most.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from .grid import STORES, Cell, CellResult, run_cell

__all__ = ["main", "run_schedules"]

#: What each line shows of a run, and how.
COLUMNS = {
    "responses_429": "{:d}",
    "requests_per_video": "{:.3f}",
    "delay_p95": "{:.0f}",
    "delay_max": "{:.0f}",
    "makespan_over_floor": "{:.3f}",
}


def run_schedules(
    cell: Cell, seeds: Sequence[int], store: str = "memory"
) -> list[tuple[int, CellResult]]:
    """Run ``cell`` once per seed of trio's scheduler; the results in the seeds' order."""
    return [(seed, run_cell(cell, store, order=seed)) for seed in seeds]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cell named on the command line over ``--runs`` orders and print the spread."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.schedules")
    parser.add_argument("limit", type=int)
    parser.add_argument("size", type=float)
    parser.add_argument("durations")
    parser.add_argument("arrivals")
    parser.add_argument("neighbour")
    parser.add_argument("--runs", type=int, default=12, help="orders to run")
    parser.add_argument("--first", type=int, default=1, help="the first order's seed")
    parser.add_argument("--store", choices=STORES, default="memory")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    cell = Cell(
        args.limit, args.size, args.durations, args.arrivals, args.neighbour, max_videos=1000
    )
    seeds = range(args.first, args.first + args.runs)
    results = run_schedules(cell, seeds, args.store)
    print(f"{cell.name} over {args.runs} orders of trio's scheduler (store: {args.store})")
    for seed, r in results:
        if (r.lost, r.duplicates, r.delivered_twice) != (0, 0, 0) or r.delivered != r.videos:
            flaw = f" LOST {r.lost} DUPLICATES {r.duplicates} TWICE {r.delivered_twice}"
        else:
            flaw = ""
        shown = " ".join(f"{k}={f.format(getattr(r, k))}" for k, f in COLUMNS.items())
        print(f"seed {seed:4d}: {shown}{flaw}")
    for key in COLUMNS:
        values = [getattr(r, key) for _, r in results]
        low, mid, high = min(values), statistics.median(values), max(values)
        print(f"{key}: min {low:g}, median {mid:g}, max {high:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
