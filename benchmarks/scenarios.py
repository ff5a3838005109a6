"""The scheduling scenarios of the SDK, runnable by any client, measured one way.

A scenario is a list of arrivals (when each video is asked for) against a seeded
:class:`~sora2_async.testing.Simulator` that enforces the API's limit. A *driver* is a
client: it gets the arrivals and an ``httpx.AsyncClient`` wired to the simulator, and calls
``deliver`` as each video's result reaches its caller. :func:`run_scenario` times it all in
the event loop's clock (virtual under the test clocks) and reports requests per video,
makespan against the floor, detection delays, 429s, losses and duplicates.

The tests assert the SDK's targets on these reports; the benchmarks print them side by side
with plain clients.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import anyio
import attrs
import httpx

from sora2_async import ModelTier, RateLimit, Sora2Client, Sora2Error, VideoRequest
from sora2_async.testing import RateLimitPolicy, Simulator

__all__ = [
    "SCENARIOS",
    "Arrival",
    "Driver",
    "Report",
    "Scenario",
    "run_scenario",
    "sdk_driver",
    "sdk_driver_for",
]

KEY = "bench-key"


@attrs.frozen
class Scenario:
    """What is asked, when, and of which server."""

    name: str
    videos: int = 0  #: videos asked for at time 0 (a batch)
    tier: ModelTier = ModelTier.SORA2
    failure_rate: float = 0.0
    arrivals_per_hour: float = 0.0  #: Poisson arrivals instead of a batch (a service)
    hours: float = 0.0  #: how long arrivals go on
    other_client_per_hour: float = 0.0  #: another client of the same key, requests per hour
    limit: int = 100  #: the server's limit per hour
    seed: int = 0

    def arrivals(self) -> list[Arrival]:
        """The requests and their times (seconds from the start), reproducibly."""
        if not self.arrivals_per_hour:
            return [Arrival(0.0, self._request(i)) for i in range(self.videos)]
        rng = random.Random(f"{self.seed}/arrivals")
        out: list[Arrival] = []
        t = 0.0
        while True:
            t += rng.expovariate(self.arrivals_per_hour / 3600.0)
            if t > self.hours * 3600.0:
                return out
            out.append(Arrival(t, self._request(len(out))))

    def _request(self, index: int) -> VideoRequest:
        return VideoRequest(f"{self.name} video {index}", model_tier=self.tier)


@attrs.frozen
class Arrival:
    """One video asked for at ``at`` seconds from the start."""

    at: float
    request: VideoRequest


#: The scenarios of issue 4's targets.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("bulk", videos=190),
        Scenario("few", videos=5),
        Scenario("pro", videos=45, tier=ModelTier.PRO_HIGH),
        Scenario("shared", videos=150, other_client_per_hour=25),
        Scenario("service", arrivals_per_hour=15, hours=3),
        Scenario("failures", videos=100, failure_rate=0.1),
    )
}

Deliver = Callable[[VideoRequest, "str | None", "BaseException | None"], None]


class Driver(Protocol):
    """A client under test: runs the arrivals, calls ``deliver`` per finished video."""

    async def __call__(
        self, arrivals: Sequence[Arrival], http: httpx.AsyncClient, deliver: Deliver
    ) -> None: ...


@attrs.frozen
class Report:
    """What one driver did in one scenario."""

    scenario: str
    client: str
    videos: int
    delivered: int
    failed: int
    lost: int
    duplicates: int
    requests: int
    requests_per_video: float
    responses_429: int
    max_requests_in_window: int
    makespan: float
    floor: float
    makespan_over_floor: float
    mean_delivery_over_makespan: float
    delay_p50: float
    delay_p95: float
    delay_max: float

    def as_json(self) -> dict[str, Any]:
        """The report as a plain dict."""
        return attrs.asdict(self)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


async def run_scenario(scenario: Scenario, driver: Driver, *, client: str = "sdk") -> Report:
    """Run ``driver`` through ``scenario`` against a fresh simulator; measure it."""
    sim = Simulator(
        seed=scenario.seed,
        failure_rate=scenario.failure_rate,
        rate_limit=RateLimitPolicy(requests=scenario.limit, per=3600.0),
    )
    arrivals = scenario.arrivals()
    start = anyio.current_time()
    delivered: dict[str, float] = {}
    outcomes: list[tuple[float, str | None, BaseException | None]] = []

    def deliver(request: VideoRequest, task_id: str | None, error: BaseException | None) -> None:
        now = anyio.current_time()
        outcomes.append((now, task_id, error))
        if task_id is not None:
            delivered.setdefault(task_id, now)

    async with (
        httpx.AsyncClient(transport=sim.transport()) as http,
        anyio.create_task_group() as tg,
    ):
        if scenario.other_client_per_hour:
            tg.start_soon(_other_client, http, 3600.0 / scenario.other_client_per_hour)
        await driver(arrivals, http, deliver)
        tg.cancel_scope.cancel()

    stats = sim.stats()
    records = sim.tasks
    ends = [t - start for t, _, _ in outcomes] or [0.0]
    makespan = max(ends)
    delays = sorted(
        at - records[task_id].completes_at
        for task_id, at in delivered.items()
        if task_id in records
    )
    longest = max((r.completes_at - r.created_at for r in records.values()), default=0.0)
    floor = max((max(0, 2 * len(arrivals) - 1) // scenario.limit) * sim.window, longest)
    ours = stats.requests_by_key.get(KEY, {})
    requests = sum(ours.values())
    return Report(
        scenario=scenario.name,
        client=client,
        videos=len(arrivals),
        delivered=sum(1 for _, task_id, error in outcomes if error is None and task_id),
        failed=sum(1 for _, _, error in outcomes if error is not None),
        lost=len(arrivals) - len(outcomes),
        duplicates=stats.duplicate_prompts,
        requests=requests,
        requests_per_video=requests / max(1, len(arrivals)),
        responses_429=stats.responses_429,
        max_requests_in_window=stats.max_requests_in_window,
        makespan=makespan,
        floor=floor,
        makespan_over_floor=makespan / floor if floor else math.nan,
        mean_delivery_over_makespan=statistics.fmean(ends) / makespan if makespan else math.nan,
        delay_p50=_percentile(delays, 50),
        delay_p95=_percentile(delays, 95),
        delay_max=max(delays, default=math.nan),
    )


async def _other_client(http: httpx.AsyncClient, every: float) -> None:
    """Another program on the same key: its own SDK client, its own budget, a steady trickle."""
    # Its own client, so its own budget: the SDK's limiter cannot see these requests.
    async with Sora2Client(KEY, http_client=http) as other:
        task = await other.generate(VideoRequest("the other client's video"))
        while True:
            await anyio.sleep(every)
            with contextlib.suppress(Sora2Error):  # it keeps its pace whatever happens
                await other.check_status(task)


def sdk_driver_for(rate_limit: RateLimit | None = None) -> Driver:
    """The SDK as its users write it (``batch`` for a batch, ``run`` per arrival for a
    service), with a budget of ``rate_limit`` (default: the API's 100 an hour)."""

    async def drive(arrivals: Sequence[Arrival], http: httpx.AsyncClient, deliver: Deliver) -> None:
        async with Sora2Client(KEY, http_client=http, rate_limit=rate_limit) as client:
            if all(a.at == 0.0 for a in arrivals):
                async with client.batch([a.request for a in arrivals]) as results:
                    async for result in results:
                        task_id = result.task.task_id if result.task else None
                        deliver(result.request or arrivals[0].request, task_id, result.error)
                return
            start = anyio.current_time()

            async def one(arrival: Arrival) -> None:
                try:
                    video = await client.run(arrival.request)
                except Sora2Error as exc:
                    deliver(arrival.request, None, exc)
                else:
                    deliver(arrival.request, video.task_id, None)

            async with anyio.create_task_group() as tg:
                for arrival in arrivals:
                    await anyio.sleep(max(0.0, start + arrival.at - anyio.current_time()))
                    tg.start_soon(one, arrival)

    return drive


#: The SDK with the API's default budget: what the tests pin.
sdk_driver: Driver = sdk_driver_for()
