"""Status checks per second through the SDK and through raw httpx loops, side by side.

Against one server (``benchmarks.server``: real uvicorn on loopback, in its own process, limit
lifted, videos that never finish), with N videos in flight, each client for a window:

* ``raw``: the raw httpx loop at its best: as many workers as the pool has connections, each
  posting check-status for the next task of the N (round robin) and reading the JSON.
* ``raw-per-video``: the same requests from one coroutine per video, the SDK's own shape.
* ``sdk``: the SDK following the N tasks with ``as_completed``: the scheduler plans every
  poll, the budget admits it, the HTTP layer sends it, the answer becomes a ``TaskStatus``.
  The budget is ``RateLimit(10**9)`` and the poll policy lets a task be polled every
  millisecond, so the SDK polls as fast as it can: its ceiling, not its everyday pace.
* ``sdk-gated``: the SDK again, its ``http_client`` wrapped in a :class:`GatedTransport`
  (a diagnostic: see :mod:`benchmarks.gate`).

``raw``, ``raw-per-video`` and ``sdk`` use one ``httpx.AsyncClient`` configuration (same
pool, same timeouts). Answers are counted by an httpx response hook, the same for all. Each
window follows ``warmup`` seconds of running; the rate is answers in the window over its wall
time, and the CPU cost is ``time.process_time()`` over the window (the client's process
only: the server runs in another) per answer. Clients alternate, so that drift in the machine
hits all of them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
import attrs
import httpx

from sora2_async import ModelTier, PollPolicy, RateLimit, Sora2Client, Task, VideoRequest

from .gate import GatedTransport
from .scenarios import KEY

__all__ = ["CLIENTS", "ThroughputSample", "create_tasks", "measure", "run_throughput"]

#: The clients, in the order they take turns.
CLIENTS = ("raw", "raw-per-video", "sdk", "sdk-gated")

#: Polls as often as every millisecond, over a duration range that never closes: a poller
#: that is always due, so the SDK's rate is what its own code allows.
FLAT_OUT = PollPolicy(
    min_interval=0.001,
    target_delay=0.001,
    priors={tier: (0.0, 7 * 24 * 3600.0) for tier in ModelTier},
    max_extra_polls=None,  # (the default spreads 14 over the range: a week here)
)
#: A budget that never binds (the server's limit is lifted too).
UNLIMITED = RateLimit(requests=10**9, per=3600.0)


@attrs.frozen
class ThroughputSample:
    """One measurement window."""

    client: str
    in_flight: int
    checks: int
    seconds: float
    cpu_seconds: float

    @property
    def per_second(self) -> float:
        """Status checks answered per second of wall time."""
        return self.checks / self.seconds

    @property
    def cpu_per_check(self) -> float:
        """Client CPU seconds per status check."""
        return self.cpu_seconds / self.checks if self.checks else float("nan")


def http_client(
    max_connections: int, counter: list[int], *, gated: bool = False
) -> httpx.AsyncClient:
    """The one client configuration all sides use; ``counter[0]`` counts answers.

    ``gated``: the same pool behind a :class:`GatedTransport` of the pool's size.
    """

    async def count(_: httpx.Response) -> None:
        counter[0] += 1

    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    options: dict[str, Any] = {
        # No pool timeout: thousands queue for the pool, and on a slow machine the last of
        # 5,000 raw-per-video coroutines waited over a minute for a connection (2026-12-02).
        "timeout": httpx.Timeout(60.0, connect=10.0, pool=None),
        "event_hooks": {"response": [count]},
    }
    if gated:
        pool = httpx.AsyncHTTPTransport(limits=limits)
        return httpx.AsyncClient(transport=GatedTransport(pool, max_connections), **options)
    return httpx.AsyncClient(limits=limits, **options)


async def create_tasks(url: str, count: int, max_connections: int) -> list[str]:
    """Submit ``count`` videos with raw requests (setup, not measured); return their ids."""
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    async with http_client(max_connections, [0]) as http:

        async def submit(first: int) -> None:
            for i in range(first, count, max_connections):
                body = VideoRequest(f"in flight {i}").to_wire()
                response = await http.post(f"{url}/api/sora-2/generate", json=body, headers=headers)
                ids.append(response.json()["taskId"])

        async with anyio.create_task_group() as tg:
            for first in range(min(count, max_connections)):
                tg.start_soon(submit, first)
    return ids


async def _window(counter: list[int], warmup: float, seconds: float) -> tuple[int, float, float]:
    await anyio.sleep(warmup)
    checks, wall, cpu = counter[0], time.perf_counter(), time.process_time()
    await anyio.sleep(seconds)
    return counter[0] - checks, time.perf_counter() - wall, time.process_time() - cpu


async def measure(
    client: str,
    url: str,
    task_ids: Sequence[str],
    *,
    max_connections: int,
    warmup: float,
    seconds: float,
) -> ThroughputSample:
    """One window of ``client`` (one of :data:`CLIENTS`) following ``task_ids``."""
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}")
    counter = [0]
    async with http_client(max_connections, counter, gated=client == "sdk-gated") as http:
        if client == "raw":  # a pool of workers sharing one cycle through the tasks
            shared = itertools.cycle(task_ids)
            streams: list[Iterable[str]] = [shared] * max_connections
            result = await _raw(url, streams, http, counter, warmup, seconds)
        elif client == "raw-per-video":  # the SDK's shape: one coroutine per video
            streams = [itertools.repeat(task_id) for task_id in task_ids]
            result = await _raw(url, streams, http, counter, warmup, seconds)
        else:
            result = await _sdk(url, task_ids, http, counter, warmup, seconds, max_connections)
    checks, wall, cpu = result
    return ThroughputSample(client, len(task_ids), checks, wall, cpu)


async def _raw(
    url: str,
    streams: Sequence[Iterable[str]],
    http: httpx.AsyncClient,
    counter: list[int],
    warmup: float,
    seconds: float,
) -> tuple[int, float, float]:
    """Plain httpx: one coroutine per stream of task ids, each asking about its next id."""
    headers = {"Authorization": f"Bearer {KEY}"}
    endpoint = f"{url}/api/sora-2/check-status"

    async def work(ids: Iterable[str]) -> None:
        for task_id in ids:
            response = await http.post(endpoint, json={"taskId": task_id}, headers=headers)
            if response.json().get("status") != "processing":
                raise RuntimeError(f"task {task_id} left 'processing': {response.text}")

    async with anyio.create_task_group() as tg:
        for ids in streams:
            tg.start_soon(work, ids)
        result = await _window(counter, warmup, seconds)
        tg.cancel_scope.cancel()
    return result


async def _sdk(
    url: str,
    task_ids: Sequence[str],
    http: httpx.AsyncClient,
    counter: list[int],
    warmup: float,
    seconds: float,
    max_connections: int,
) -> tuple[int, float, float]:
    now = anyio.current_time()
    request = VideoRequest("in flight")
    tasks = [Task(task_id, request, now) for task_id in task_ids]
    async with (
        Sora2Client(
            KEY,
            base_url=url,
            rate_limit=UNLIMITED,
            http_client=http,
            poll_policy=FLAT_OUT,  # the wire gate is the SDK's default: half the pool
        ) as sdk,
        sdk.as_completed(tasks),  # nothing finishes; leaving the block cancels the pollers
    ):
        return await _window(counter, warmup, seconds)


async def run_throughput(
    url: str,
    sizes: Sequence[int],
    *,
    max_connections: int = 10,
    warmup: float = 1.0,
    seconds: float = 2.0,
    rounds: Callable[[int], int] = lambda size: 2 if size <= 100 else 1,
    clients: Sequence[str] = CLIENTS,
) -> list[ThroughputSample]:
    """For each size, ``rounds(size)`` turns of every client, alternating.

    Thousands of coroutines waiting in httpx's pool take seconds to tens of seconds to get
    going (see :mod:`benchmarks.gate`), so only the smallest size gets two rounds.
    """
    ids = await create_tasks(url, max(sizes), max_connections)
    samples = []
    for size in sizes:
        for _ in range(rounds(size)):
            for client in clients:
                sample = await measure(
                    client,
                    url,
                    ids[:size],
                    max_connections=max_connections,
                    warmup=warmup,
                    seconds=seconds,
                )
                samples.append(sample)
    return samples
