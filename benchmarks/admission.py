"""The cost of one admission: the in-memory budget against the SQLite store, 1 and 8 processes.

Each process (a fresh interpreter: ``python -m benchmarks.admission STORE PATH N START``)
takes ``N`` permits one after another (``async with limiter.permit(POLL): pass``: the
admission and the stamp of its answer, nothing sent) and reports the wall time of each. The
processes of one run start together at ``START`` (a ``time.time()``), so 8 of them contend
for the SQLite file all the time. The budget never binds: a huge limit over a short window
(half a second, no margin), so the file holds about as many entries as a busy real key's.
The memory store cannot be shared: at 8 processes each has a budget of its own, and the
figure says what an admission costs a process that does not share.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from sora2_async import Limiter, RateLimit, RequestKind, SlidingWindowLimiter, SQLiteLimiter

__all__ = ["run_admission"]

UNBOUND = RateLimit(10**9, per=0.5)


async def _take(store: str, path: str, permits: int, start: float) -> list[float]:
    limiter: Limiter
    if store == "memory":
        limiter = SlidingWindowLimiter(UNBOUND, margin=0.0)
    else:
        limiter = SQLiteLimiter(path, rate_limit=UNBOUND, margin=0.0)
    times: list[float] = []
    try:
        await anyio.sleep(max(0.0, start - time.time()))
        for _ in range(permits):
            began = time.perf_counter()
            async with limiter.permit(RequestKind.POLL):
                pass
            times.append(time.perf_counter() - began)
    finally:
        await limiter.aclose()
    return times


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_admission(
    stores: tuple[str, ...] = ("memory", "sqlite"),
    processes: tuple[int, ...] = (1, 8),
    permits: int = 2_000,
    timeout: float = 240.0,
) -> list[dict[str, Any]]:
    """Every (store, processes) pair: p50 and p99 microseconds per permit, over all."""
    rows = []
    for store in stores:
        for count in processes:
            with tempfile.TemporaryDirectory() as folder:
                path = str(Path(folder) / "budget.sqlite")
                start = time.time() + 1.0 + 0.2 * count  # every child is up by then
                argv = [sys.executable, "-m", "benchmarks.admission", store, path]
                children = [
                    subprocess.Popen(
                        [*argv, str(permits), repr(start)],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    for _ in range(count)
                ]
                samples: list[float] = []
                for child in children:
                    out, _ = child.communicate(timeout=timeout)
                    if child.returncode != 0:
                        raise RuntimeError(f"admission child failed ({store}, {count})")
                    samples += json.loads(out.strip().splitlines()[-1])
            rows.append(
                {
                    "store": store,
                    "processes": count,
                    "permits": len(samples),
                    "p50_us": _percentile(samples, 50) * 1e6,
                    "p99_us": _percentile(samples, 99) * 1e6,
                }
            )
    return rows


def main() -> None:
    """A child: take the permits, print their times as a JSON list."""
    store, path, permits, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(anyio.run(_take, store, path, permits, start)))


if __name__ == "__main__":
    main()
