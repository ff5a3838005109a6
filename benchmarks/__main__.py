"""``python -m benchmarks [--quick]``: run the benchmarks, write the results, check them.

Full (under 5 minutes on 2 cores): scheduling quality and the sweep in virtual time, then
overhead and scale in real time; writes ``results/latest.json``, ``latest.md`` and
``latest.png``. ``--quick`` (about ten seconds, for CI): the virtual-time part with a smaller
sweep, no real-time runs, no plot; writes files only with ``--out``. Both exit 1 when a run is
incorrect: a video lost or delivered twice, a 429 where none is allowed, a run that never ends.
Timing targets are reported, never turned into a failure (they vary with the machine).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .report import markdown, write_json, write_plot
from .suite import FULL, QUICK, run_suite

RESULTS = Path(__file__).parent / "results"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="the CI subset: correctness only")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"folder for the results (full default: {RESULTS})"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    suite = QUICK if args.quick else FULL
    command = shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)])

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = run_suite(suite, command=command, log=log)
    out = args.out if args.out is not None or args.quick else RESULTS
    plot = None
    if out is not None:
        stem = "quick" if args.quick else "latest"
        write_json(results, out / f"{stem}.json")
        if not args.quick and not args.no_plot:
            if write_plot(results, out / f"{stem}.png"):
                plot = f"{stem}.png"
            else:
                log("no plot: matplotlib is not installed (pip install 'sora2-async[bench]')")
        (out / f"{stem}.md").write_text(markdown(results, plot=plot))
        log(f"results written to {out}/{stem}.*")
    print(markdown(results, plot=plot))
    found = results["quality"]["problems"]
    for problem in found:
        log(f"INCORRECT: {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
