"""The cost of one admission: memory, SQLite and Redis stores, at 1 and at 8 processes.

Each process (a fresh interpreter: ``python -m benchmarks.admission STORE PATH N START``)
takes ``N`` permits one after another (``async with limiter.permit(POLL): pass``: the
admission and the stamp of its answer, nothing sent) and reports the wall time of each. The
processes of one run start together at ``START`` (a ``time.time()``), so 8 of them contend
for the SQLite file all the time. The budget never binds: a huge limit over a short window
(half a second, no margin), so the file holds about as many entries as a busy real key's.
The memory store cannot be shared: at 8 processes each has a budget of its own, and the
figure says what an admission costs a process that does not share. Redis is Debian's
``redis-server`` on loopback, started here (persistence off) and skipped when absent.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
    elif store == "redis":
        from sora2_async.redis import RedisLimiter

        async with RedisLimiter.from_url(
            path, namespace="bench", rate_limit=UNBOUND, margin=0.0
        ) as redis:
            return await _timed(redis, permits, start)
    else:
        limiter = SQLiteLimiter(path, rate_limit=UNBOUND, margin=0.0)
    return await _timed(limiter, permits, start)


async def _timed(limiter: Limiter, permits: int, start: float) -> list[float]:
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


@contextlib.contextmanager
def _redis_server() -> Iterator[str | None]:
    """A ``redis-server`` on a free loopback port (its URL), or ``None`` when not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_admission(
    stores: tuple[str, ...] = ("memory", "sqlite", "redis"),
    processes: tuple[int, ...] = (1, 8),
    permits: int = 2_000,
    timeout: float = 240.0,
) -> list[dict[str, Any]]:
    """Every (store, processes) pair: p50 and p99 microseconds per permit, over all
    (Redis only where ``redis-server`` is installed)."""
    rows = []
    with _redis_server() as redis_url:
        for store in stores:
            if store == "redis" and redis_url is None:
                continue
            for count in processes:
                rows.append(_one(store, count, permits, timeout, redis_url))
    return rows


def _one(
    store: str, count: int, permits: int, timeout: float, redis_url: str | None
) -> dict[str, Any]:
    """``count`` children of one store, started together: their permits' percentiles."""
    with tempfile.TemporaryDirectory() as folder:
        where = redis_url if store == "redis" else str(Path(folder) / "budget.sqlite")
        assert where is not None
        start = time.time() + 1.0 + 0.2 * count  # every child is up by then
        argv = [sys.executable, "-m", "benchmarks.admission", store, where]
        children = [
            subprocess.Popen([*argv, str(permits), repr(start)], stdout=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        samples: list[float] = []
        for child in children:
            out, _ = child.communicate(timeout=timeout)
            if child.returncode != 0:
                raise RuntimeError(f"admission child failed ({store}, {count})")
            samples += json.loads(out.strip().splitlines()[-1])
    return {
        "store": store,
        "processes": count,
        "permits": len(samples),
        "p50_us": _percentile(samples, 50) * 1e6,
        "p99_us": _percentile(samples, 99) * 1e6,
    }


def main() -> None:
    """A child: take the permits, print their times as a JSON list."""
    store, path, permits, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(anyio.run(_take, store, path, permits, start)))


if __name__ == "__main__":
    main()
