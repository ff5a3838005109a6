"""``sora2_async.testing``: a faithful simulator of the nanophoto.ai Sora 2 API.

It speaks the API's contract to the letter (fields, error codes, status codes), limits each
key's requests (sliding 100 per hour by default, fixed windows as an option), keeps a credit
ledger with the price table and refunds, runs tasks for durations drawn from a seed, fails
some on request, injects faults (latency, 5xx, dropped connections, malformed and slow
bodies), and reports what it saw.

In-process, in virtual time, on asyncio or trio::

    import httpx
    from sora2_async import Sora2Client, VideoRequest
    from sora2_async.testing import Simulator

    sim = Simulator(seed=1)
    http = httpx.AsyncClient(transport=sim.transport())
    async with Sora2Client("any-key", http_client=http) as client:
        task = await client.generate(VideoRequest("a corgi surfing"))
    print(sim.stats().as_json(), sim.tasks[task.task_id])

Over HTTP: ``python -m sora2_async.testing --port 8765 --time-scale 60`` (needs uvicorn, the
``server`` extra), or :func:`serve_in_thread` in tests. For pytest fixtures, enable
:mod:`sora2_async.testing.pytest_plugin`. To answer one chosen request yourself (a 429 for
one prompt, an error for one task) and let the simulator answer the rest, use
:class:`RuleTransport`.
"""

from ._asgi import SimulatorApp
from ._config import Durations, Faults, RateLimitPolicy, WindowKind
from ._mp4 import video_bytes
from ._records import SimulatorStats, TaskRecord
from ._rules import RuleTransport
from ._server import run_server, serve_in_thread
from ._simulator import DEFAULT_VIDEO_BASE_URL, Simulator
from ._transport import SimulatorTransport

__all__ = [
    "DEFAULT_VIDEO_BASE_URL",
    "Durations",
    "Faults",
    "RateLimitPolicy",
    "RuleTransport",
    "Simulator",
    "SimulatorApp",
    "SimulatorStats",
    "SimulatorTransport",
    "TaskRecord",
    "WindowKind",
    "run_server",
    "serve_in_thread",
    "video_bytes",
]
