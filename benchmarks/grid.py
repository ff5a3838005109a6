"""The scheduler at any scale: issue 11's grid, the SDK against the offline oracle.

``python -m benchmarks.grid [--limits 10,100] [--sizes 0.1,1] [--durations priors,long]
[--arrivals batch,poisson,bursts] [--neighbours none,20,60] [--max-videos 2000]
[--store memory|sqlite]`` runs every cell of the grid in virtual time (trio's
``MockClock``, deterministic scheduling) against a fresh
:class:`~sora2_async.testing.Simulator` and prints one JSON line per cell, then a markdown
table. A cell is:

* a **limit** per hour (the server's, and the SDK's configured budget);
* a **size**: videos as a multiple of the limit (capped at ``--max-videos``, said so);
* **durations** of the sora2 tier: ``priors`` 60–180 s, ``long`` 180–540 s (3 ×),
  ``short`` 20–60 s (3 × shorter), ``bimodal`` half 20–60 s and half 300–540 s;
* **arrivals**: ``batch`` (all at 0, one ``client.batch``), ``poisson`` (at 80 % of the
  sustainable rate, ``client.run`` each), ``bursts`` (20 % of the limit every 30 min);
* a **neighbour** on the key: ``none``; ``20`` (another SDK client spending 20 % of the
  limit in status checks, with its own budget: it backs off after 429s as the SDK does);
  ``60`` (a raw loop spending 60 % of the limit that never backs off).

Measured per cell: requests per video (ours), our 429s, the worst and p95 detection delay,
makespan over the floor (the (2N)th request under our share of the limit, or the last
arrival plus the longest video) and over the offline oracle's (``oracle.py``).

The budget is the memory store unless ``--store sqlite`` puts it in a SQLite file (in a
temporary folder, on the same virtual clock): the same rule, through rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
import trio
import trio.testing

from sora2_async import Limiter, RateLimit, Sora2Client, Sora2Error, SQLiteLimiter, VideoRequest
from sora2_async.testing import Durations, RateLimitPolicy, Simulator

from .oracle import oracle
from .quality import _deterministic_trio

__all__ = ["Cell", "CellResult", "main", "measure", "run_cell"]

KEY = "grid-key"
WINDOW = 3600.0
DURATIONS = {
    "priors": (60.0, 180.0),
    "long": (180.0, 540.0),
    "short": (20.0, 60.0),
    "bimodal": (20.0, 540.0),  # drawn by _Bimodal
    "fast": (20.0, 40.0),  # the idle-budget targets' cases: 20-40 s ...
    "slow": (360.0, 600.0),  # ... and 6-10 min
}
NEIGHBOUR_SHARE = {"none": 0.0, "20": 0.2, "60": 0.6}


class _Bimodal(random.Random):
    """The simulator's task draws, with a bimodal duration: 20–60 s or 300–540 s."""

    def uniform(self, a: float, b: float) -> float:
        if self.random() < 0.5:
            return super().uniform(20.0, 60.0)
        return super().uniform(300.0, 540.0)


@attrs.frozen
class Cell:
    """One point of the grid."""

    limit: int
    size: float
    durations: str = "priors"
    arrivals: str = "batch"
    neighbour: str = "none"
    max_videos: int = 2000
    seed: int = 0
    max_in_flight: int | None = None  #: the batch's bound, if any

    @property
    def videos(self) -> int:
        """Videos asked for (the size times the limit, capped)."""
        return max(1, min(self.max_videos, round(self.size * self.limit)))

    @property
    def capped(self) -> bool:
        """Whether ``max_videos`` cut the cell down."""
        return round(self.size * self.limit) > self.max_videos

    @property
    def name(self) -> str:
        """``limit/size/durations/arrivals/neighbour``."""
        return f"{self.limit}/{self.size:g}x/{self.durations}/{self.arrivals}/{self.neighbour}"

    def times(self) -> list[float]:
        """When each video is asked for, seconds from the start."""
        n = self.videos
        if self.arrivals == "batch":
            return [0.0] * n
        ours = self.limit * (1 - NEIGHBOUR_SHARE[self.neighbour])
        if self.arrivals == "poisson":
            rng = random.Random(f"{self.seed}/arrivals")
            rate = 0.8 * ours / 2 / WINDOW  # 80 % of two requests a video, sustained
            t, out = 0.0, []
            for _ in range(n):
                t += rng.expovariate(rate)
                out.append(t)
            return out
        if self.arrivals == "bursts":
            burst = max(1, round(0.2 * ours))
            return [1800.0 * (i // burst) for i in range(n)]
        raise ValueError(f"unknown arrivals {self.arrivals!r}")


@attrs.frozen
class CellResult:
    """What the SDK did in one cell, and the oracle's figures for the same draws."""

    cell: str
    videos: int
    capped: bool
    delivered: int
    lost: int
    delivered_twice: int
    duplicates: int
    requests_per_video: float
    responses_429: int
    delay_p50: float
    delay_p95: float
    delay_max: float
    makespan: float
    floor: float
    makespan_over_floor: float
    oracle_makespan: float
    makespan_over_oracle: float
    oracle_delay_p95: float

    def as_json(self) -> dict[str, Any]:
        """As a plain dict (NaN for what could not be measured)."""
        return attrs.asdict(self)


def _p(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


async def _neighbour(http: httpx.AsyncClient, share: float, limit: int) -> None:
    every = WINDOW / (share * limit)
    if share < 0.5:  # a polite one: an SDK client of its own, which backs off after 429s
        async with Sora2Client(KEY, http_client=http, rate_limit=RateLimit(limit)) as other:
            task = await other.generate(VideoRequest("the neighbour's video"))
            while True:
                await anyio.sleep(every)
                with contextlib.suppress(Sora2Error):  # it keeps its pace whatever happens
                    await other.check_status(task)
    url = "https://nanophoto.ai/api/sora-2/check-status"
    headers = {"Authorization": f"Bearer {KEY}"}
    while True:  # a raw loop that never backs off
        await http.post(url, json={"taskId": "task_000000000000"}, headers=headers)
        await anyio.sleep(every)


STORES = ("memory", "sqlite")


async def _drive(
    cell: Cell, times: Sequence[float], store: str
) -> tuple[Simulator, dict[str, Any]]:
    sim = Simulator(
        seed=cell.seed,
        rate_limit=RateLimitPolicy(requests=cell.limit, per=WINDOW),
        durations=Durations(sora2=DURATIONS[cell.durations]),
    )
    if cell.durations == "bimodal":
        sim._books.rng = _Bimodal(f"{cell.seed}/tasks")  # the only way in; a benchmark's hack
    seen: dict[str, int] = {}
    delivered: dict[str, float] = {}
    ours = {"requests": 0, "429": 0}

    async def count(response: httpx.Response) -> None:
        ours["requests"] += 1
        ours["429"] += response.status_code == 429

    share = NEIGHBOUR_SHARE[cell.neighbour]
    start = anyio.current_time()
    async with (
        contextlib.AsyncExitStack() as stack,
        httpx.AsyncClient(transport=sim.transport()) as other_http,
        httpx.AsyncClient(transport=sim.transport(), event_hooks={"response": [count]}) as http,
        anyio.create_task_group() as outer,
    ):
        rate_limit = RateLimit(cell.limit)
        budget: RateLimit | Limiter = rate_limit
        if store == "sqlite":
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            budget = SQLiteLimiter(
                Path(folder) / "budget.sqlite",
                rate_limit=rate_limit,
                clock=anyio.current_time,
                in_thread=False,  # a worker thread would let the virtual clock jump
                recheck=math.inf,  # one owner: nobody else's changes to look for
            )
            stack.push_async_callback(budget.aclose)
        if share:
            outer.start_soon(_neighbour, other_http, share, cell.limit)
        async with Sora2Client(KEY, http_client=http, rate_limit=budget) as c:
            requests = [VideoRequest(f"grid video {i}") for i in range(len(times))]

            def note(prompt: str, task_id: str | None) -> None:
                seen[prompt] = 1 + seen.get(prompt, 0)
                if task_id is not None:
                    delivered.setdefault(task_id, anyio.current_time() - start)

            if cell.arrivals == "batch":
                async with c.batch(requests, max_in_flight=cell.max_in_flight) as results:
                    async for r in results:
                        assert r.request is not None
                        note(r.request.prompt, r.task.task_id if r.ok and r.task else None)
            else:

                async def one(req: VideoRequest) -> None:
                    try:
                        video = await c.run(req)
                    except Sora2Error:
                        note(req.prompt, None)
                    else:
                        note(req.prompt, video.task_id)

                async with anyio.create_task_group() as tg:
                    for at, req in zip(times, requests, strict=True):
                        await anyio.sleep(max(0.0, start + at - anyio.current_time()))
                        tg.start_soon(one, req)
        outer.cancel_scope.cancel()
    return sim, {"seen": seen, "delivered": delivered, **ours}


def run_cell(cell: Cell, store: str = "memory", *, order: int | None = None) -> CellResult:
    """Run one cell in a fresh ``trio.run`` on a ``MockClock``, deterministically: trio's
    scheduler seeded with ``order`` (default: the cell's seed, the grid's one order)."""
    with _deterministic_trio(cell.seed if order is None else order):
        return trio.run(measure, cell, store, clock=trio.testing.MockClock(autojump_threshold=0))


async def measure(cell: Cell, store: str = "memory") -> CellResult:
    """Run one cell in the current event loop (virtual time under the test clocks) and
    measure it and the oracle; the budget in ``store`` (one of :data:`STORES`)."""
    if store not in STORES:
        raise ValueError(f"store must be one of {STORES}, not {store!r}")
    times = cell.times()
    sim, got = await _drive(cell, times, store)
    records = [r for r in sim.tasks.values() if r.prompt.startswith("grid video")]
    delivered: dict[str, float] = got["delivered"]
    ends = {r.task_id: r.completes_at for r in records}
    delays = sorted(at - ends[t] for t, at in delivered.items() if t in ends)
    share = NEIGHBOUR_SHARE[cell.neighbour]
    ours_limit = max(1, math.floor(cell.limit * (1 - share)))
    by_prompt = {r.prompt: r.completes_at - r.created_at for r in records}
    durations = [by_prompt.get(f"grid video {i}", 0.0) for i in range(len(times))]
    n = len(times)
    floor = max(
        ((2 * n - 1) // ours_limit) * WINDOW,
        max((a + d for a, d in zip(times, durations, strict=True)), default=0.0),
    )
    best = oracle(times, durations, limit=ours_limit, window=WINDOW)
    makespan = max(delivered.values(), default=math.nan)
    seen: dict[str, int] = got["seen"]
    return CellResult(
        cell=cell.name,
        videos=n,
        capped=cell.capped,
        delivered=len(delivered),
        lost=n - len(seen),
        delivered_twice=sum(1 for v in seen.values() if v > 1),
        duplicates=sim.stats().duplicate_prompts,
        requests_per_video=got["requests"] / n,
        responses_429=got["429"],
        delay_p50=_p(delays, 50),
        delay_p95=_p(delays, 95),
        delay_max=max(delays, default=math.nan),
        makespan=makespan,
        floor=floor,
        makespan_over_floor=makespan / floor if floor else math.nan,
        oracle_makespan=best.makespan,
        makespan_over_oracle=makespan / best.makespan if best.makespan else math.nan,
        oracle_delay_p95=_p(sorted(best.delays), 95),
    )


def grid(args: argparse.Namespace) -> list[Cell]:
    """The cells the command line asks for."""
    return [
        Cell(limit, size, durations, arrivals, neighbour, max_videos=args.max_videos)
        for limit in (int(x) for x in args.limits.split(","))
        for size in (float(x) for x in args.sizes.split(","))
        for durations in args.durations.split(",")
        for arrivals in args.arrivals.split(",")
        for neighbour in args.neighbours.split(",")
    ]


def _cell_line(r: CellResult) -> str:
    return (
        f"| {r.cell}{' (capped)' if r.capped else ''} | {r.videos} | {r.requests_per_video:.3f} "
        f"| {r.responses_429} | {r.delay_p95:.0f} | {r.delay_max:.0f} "
        f"| {r.makespan_over_floor:.3f} | {r.makespan_over_oracle:.3f} "
        f"| {r.lost + r.delivered_twice + r.duplicates} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the grid; print JSON lines (stderr) and a markdown table (stdout)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grid")
    parser.add_argument("--limits", default="10,100,300,1000,10000")
    parser.add_argument("--sizes", default="0.1,1,4,10")
    parser.add_argument("--durations", default="priors,long,short,bimodal")
    parser.add_argument("--arrivals", default="batch,poisson,bursts")
    parser.add_argument("--neighbours", default="none,20,60")
    parser.add_argument("--max-videos", type=int, default=2000)
    parser.add_argument("--store", choices=STORES, default="memory")
    args = parser.parse_args(argv)
    rows = []
    for cell in grid(args):
        result = run_cell(cell, args.store)
        print(json.dumps(result.as_json()), file=sys.stderr, flush=True)
        rows.append(_cell_line(result))
    print(
        "| cell | videos | req/video | 429s | p95 delay s | max delay s | /floor | /oracle "
        "| lost+twice+dup |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
