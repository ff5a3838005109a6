"""``python -m benchmarks.wire [N ...] [--rounds K] [--seconds S]``: checks per second at N
in flight, raw vs SDK.

The throughput part of the full run alone (``throughput.py``: a uvicorn server in a child
process, 10 connections, raw httpx loop against ``client.as_completed``), for the wire
gate's default (half the pool). The two clients take ``K`` turns each, alternating, with a
window of ``S`` seconds. Prints, per size, the best turn of each (as the full run reports
it) and the ratio of every turn of the SDK to the raw turn just before it, with their
median: on a shared machine whose speed drifts from second to second, short alternating
turns and the median of the pairs say more than one long turn each.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import anyio

from . import throughput
from .server import serve_in_child


def main(argv: Sequence[str] | None = None) -> int:
    """Run the throughput measurement for the sizes given (default 1,000)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wire")
    parser.add_argument("sizes", nargs="*", type=int, default=[1000], help="videos in flight")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each client per size")
    parser.add_argument("--seconds", type=float, default=2.0, help="each turn's window")
    args = parser.parse_args(argv)
    with serve_in_child() as url:
        samples = anyio.run(
            lambda: throughput.run_throughput(
                url,
                args.sizes,
                rounds=lambda size: args.rounds,
                clients=("raw", "sdk"),
                seconds=args.seconds,
            )
        )
    for size in args.sizes:
        raw = [s.per_second for s in samples if s.in_flight == size and s.client == "raw"]
        sdk = [s.per_second for s in samples if s.in_flight == size and s.client == "sdk"]
        pairs = [b / a for a, b in zip(raw, sdk, strict=True)]
        print(
            f"in flight {size}: best raw {max(raw):.0f}/s, best sdk {max(sdk):.0f}/s, "
            f"sdk/raw {max(sdk) / max(raw):.2f}; turn by turn "
            f"{' '.join(f'{p:.2f}' for p in pairs)} (median {statistics.median(pairs):.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
