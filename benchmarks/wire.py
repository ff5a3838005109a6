"""``python -m benchmarks.wire [N ...]``: checks per second at N in flight, raw vs SDK.

The throughput part of the full run alone (``throughput.py``: a uvicorn server in a child
process, 10 connections, raw httpx loop against ``client.as_completed``), for the wire
gate's default (half the pool). Prints one line per client and size, best of its turns.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import anyio

from . import throughput
from .server import serve_in_child


def main(argv: Sequence[str] | None = None) -> int:
    """Run the throughput measurement for the sizes given (default 1,000)."""
    sizes = [int(a) for a in (sys.argv[1:] if argv is None else argv)] or [1000]
    with serve_in_child() as url:
        samples = anyio.run(
            lambda: throughput.run_throughput(
                url, sizes, rounds=lambda size: 2, clients=("raw", "sdk")
            )
        )
    best: dict[tuple[str, int], float] = {}
    for s in samples:
        key = (s.client, s.in_flight)
        best[key] = max(best.get(key, 0.0), s.per_second)
    for size in sizes:
        raw, sdk = best[("raw", size)], best[("sdk", size)]
        print(f"in flight {size}: raw {raw:.0f}/s, sdk {sdk:.0f}/s, sdk/raw {sdk / raw:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
