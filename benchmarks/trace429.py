"""Where one grid cell's 429s came and what each did to the limit in force.

``python -m benchmarks.trace429 1000 1 bimodal bursts 60`` runs the cell
``1000/1x/bimodal/bursts/60`` (``grid.run_cell``, the grid's 1,000-video cap) and prints its
result, then one line per call of ``Ceiling.lower``: the time, what our window held (the
refused request included), the seconds our log covered, the limit before and after, and
the level and count of the 429s in a row the ceiling keeps (``failed``, ``repeats``). A
neighbour that is an SDK client of its own (the 20 % one) has a ceiling too, so each line
starts with the number of the ceiling it is about, in the order they saw their first 429.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sora2_async import _ceiling

from .grid import Cell, run_cell

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one cell with every ceiling's 429s recorded, and print them."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    limit, size, durations, arrivals, neighbour = args
    lines: list[tuple[int, str]] = []
    owners: dict[int, int] = {}  # each Ceiling's id, in the order they first saw a 429
    lower = _ceiling.Ceiling.lower

    def traced(
        self: _ceiling.Ceiling,
        now: float,
        *,
        ours: int,
        seen_for: float,
        retry_after: float | None,
    ) -> None:
        before = self.at(now)
        lower(self, now, ours=ours, seen_for=seen_for, retry_after=retry_after)
        lowered_to, _, failed, repeats = self.state
        owner = owners.setdefault(id(self), len(owners))
        line = f"t={now:9.1f} ours={ours:5d} seen_for={seen_for:7.1f} limit {before} -> "
        lines.append((owner, f"{line}{lowered_to} failed={failed} repeats={repeats}"))

    _ceiling.Ceiling.lower = traced  # type: ignore[method-assign]
    try:
        cell = Cell(int(limit), float(size), durations, arrivals, neighbour, max_videos=1000)
        print(run_cell(cell))
    finally:
        _ceiling.Ceiling.lower = lower  # type: ignore[method-assign]
    for owner, line in lines:
        print(f"ceiling {owner}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
