"""Peak memory per in-flight video, each configuration in a fresh process.

``python -m benchmarks.memory CLIENT N BACKEND`` (``sdk`` or ``raw``; ``asyncio`` or
``trio``) prints one JSON line. The child:

1. imports everything, makes N task ids, and runs a warm-up of 10 videos through the same
   code (so lazy imports and first-use caches are not charged to the videos);
2. reads its peak resident set size, ``VmHWM`` in ``/proc/self/status`` (Linux; else
   ``resource.getrusage(RUSAGE_SELF).ru_maxrss``);
3. follows N videos at once until every one has been polled at least once, over an
   ``httpx.MockTransport`` that answers "processing" at once: no sockets, so what grows is
   the client's own state per video, not the kernel's;
4. reads the peak again. Per video: ``(peak after - peak before) / N``.

``sdk`` is ``client.as_completed(ids)``: a poller per video, its plan, its promised poll in
the budget, its latest status. ``raw`` is the least a plain loop holds: a coroutine per video
that has polled once and kept the answer. Process-wide RSS includes the allocator's slack and
fragmentation; that is what a user pays.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from typing import Any

import anyio
import httpx

from sora2_async import RateLimit, Sora2Client

from .scenarios import KEY

__all__ = ["measure_in_child", "peak_rss_kib"]

_API = "https://nanophoto.ai/api/sora-2"
_WARMUP = 10


def peak_rss_kib() -> int:
    """This process's peak resident set size so far, in KiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def measure_in_child(
    client: str, videos: int, backend: str, timeout: float = 240.0
) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; return what it printed."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", client, str(videos), backend],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


class _Server:
    """The instant mock API: every task is processing; remembers who has been polled."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.expected = 0
        self.all_seen = anyio.Event()

    def expect(self, count: int) -> None:
        """Forget who was seen; set :attr:`all_seen` once ``count`` tasks have been polled."""
        self.seen.clear()
        self.expected = count
        self.all_seen = anyio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        task_id = json.loads(request.content)["taskId"]
        self.seen.add(task_id)
        if len(self.seen) >= self.expected:
            self.all_seen.set()
        body = {
            "success": True,
            "status": "processing",
            "progress": "generating",
            "taskId": task_id,
        }
        return httpx.Response(200, json=body)


async def _follow(client: str, ids: list[str], http: httpx.AsyncClient, server: _Server) -> None:
    """Follow ``ids`` until each has been polled once; return with all of them still held."""
    server.expect(len(ids))
    async with anyio.create_task_group() as tg:
        if client == "sdk":
            sdk = Sora2Client(KEY, http_client=http, rate_limit=RateLimit(10**9, per=3600.0))

            async def follow_all() -> None:
                async with sdk.as_completed(ids) as results:
                    async for _ in results:
                        raise RuntimeError("a video that never ends ended")

            tg.start_soon(follow_all)
        else:

            async def poll(task_id: str) -> None:
                answer = await http.post(f"{_API}/check-status", json={"taskId": task_id})
                _latest = answer.json()  # a local lives as long as the frame: kept, as a
                del answer  # plain poller keeps its last answer (and not the response)
                await anyio.sleep_forever()

            for task_id in ids:
                tg.start_soon(poll, task_id)
        await server.all_seen.wait()
        await anyio.sleep(0.1)  # let the last answers be parsed and kept
        tg.cancel_scope.cancel()


async def _child(client: str, videos: int) -> dict[str, Any]:
    server = _Server()
    ids = [f"task_{i:012x}" for i in range(videos)]
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as http:
        await _follow(client, [f"warm_{i}" for i in range(_WARMUP)], http, server)
        before = peak_rss_kib()
        await _follow(client, ids, http, server)
        after = peak_rss_kib()
    return {
        "client": client,
        "videos": videos,
        "peak_rss_before_kib": before,
        "peak_rss_after_kib": after,
        "kib_per_video": (after - before) / videos,
    }


def main() -> None:
    """Measure the configuration named on the command line; print it as JSON."""
    client, videos, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    result = anyio.run(_child, client, videos, backend=backend)
    print(json.dumps({**result, "backend": backend}))


if __name__ == "__main__":
    main()
