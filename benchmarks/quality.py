"""Scheduling quality in virtual time: every scenario, every client, the same simulator.

Each run is a fresh ``trio.run`` on a fresh ``MockClock(autojump_threshold=0)``: hours of
polling pass in milliseconds, and the clock only moves when every task sleeps, so the numbers
do not depend on the machine. Trio shuffles its run queue at random to shake out ordering
bugs; here that would make two runs of one scenario differ by a few requests, so the
scheduler is made deterministic for the run (the switch trio's own Hypothesis plugin uses).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import attrs
import httpx
import trio
import trio.testing

from sora2_async import RateLimit, VideoRequest

from .baselines import BASELINES, plain_driver
from .scenarios import Arrival, Deliver, Driver, Report, Scenario, run_scenario, sdk_driver_for

__all__ = ["CLIENTS", "Outcome", "SweepPoint", "drivers", "run_one", "run_quality", "run_sweep"]

#: The clients compared, in table order.
CLIENTS = ("sdk", *BASELINES)

#: A run still going after this much virtual time is reported as not completed.
VIRTUAL_DEADLINE = 14 * 24 * 3600.0


@attrs.frozen
class Outcome:
    """A scenario's :class:`Report` plus what the harness checks on top of it."""

    report: Report
    completed: bool  #: the driver returned before the virtual deadline
    delivered_twice: int  #: requests whose result reached the caller more than once
    never_delivered: int  #: requests whose result never reached the caller
    wall_seconds: float  #: real time the run took (the virtual run's cost on this machine)

    @property
    def videos_per_hour(self) -> float:
        """Videos delivered per hour of makespan."""
        r = self.report
        return r.videos / (r.makespan / 3600.0) if r.makespan > 0 else math.nan

    def as_json(self) -> dict[str, Any]:
        """The report's fields, then the harness's."""
        return {
            **self.report.as_json(),
            "videos_per_hour": self.videos_per_hour,
            "completed": self.completed,
            "delivered_twice": self.delivered_twice,
            "never_delivered": self.never_delivered,
            "wall_seconds": self.wall_seconds,
        }


@attrs.frozen
class SweepPoint:
    """One batch size, budget and client of the sweep."""

    batch: int
    budget: int  #: requests per hour, the server's limit and the client's alike
    outcome: Outcome

    @property
    def ceiling(self) -> float:
        """Videos per hour if every video cost exactly two requests: ``budget / 2``."""
        return self.budget / 2

    def as_json(self) -> dict[str, Any]:
        """Flat, for the JSON file."""
        r = self.outcome.report
        return {
            "batch": self.batch,
            "budget": self.budget,
            "client": r.client,
            "videos_per_hour": self.outcome.videos_per_hour,
            "ceiling": self.ceiling,
            "of_ceiling": self.outcome.videos_per_hour / self.ceiling,
            "requests_per_video": r.requests_per_video,
            "makespan": r.makespan,
            "floor": r.floor,
            "makespan_over_floor": r.makespan_over_floor,
            "responses_429": r.responses_429,
            "lost": r.lost,
            "completed": self.outcome.completed,
        }


def drivers(limit: int = 100) -> dict[str, Driver]:
    """The three clients, each with a budget of ``limit`` requests per hour."""
    out: dict[str, Driver] = {"sdk": sdk_driver_for(RateLimit(limit, per=3600.0))}
    for name, (first, every) in BASELINES.items():
        out[name] = plain_driver(first=first, every=every, limit=limit)
    return out


@contextlib.contextmanager
def _deterministic_trio(seed: int) -> Iterator[None]:
    # Private, but it is what trio's Hypothesis plugin flips; without it, runs differ.
    run = trio._core._run
    saved = run._ALLOW_DETERMINISTIC_SCHEDULING
    run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    run._r.seed(seed)
    # The SDK's retry jitter draws from the global generator: seeded too, or two runs of a
    # cell with retried submissions submit in another order (the same SDK figures, but the
    # simulator's durations then go to other videos, and the oracle's figures moved).
    drawn = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        run._ALLOW_DETERMINISTIC_SCHEDULING = saved  # type: ignore[misc]
        random.setstate(drawn)


def run_one(scenario: Scenario, driver: Driver, client: str) -> Outcome:
    """Run ``driver`` through ``scenario`` in virtual time and tally its deliveries."""
    counts: Counter[str] = Counter()

    async def counted(
        arrivals: Sequence[Arrival], http: httpx.AsyncClient, deliver: Deliver
    ) -> None:
        def deliver_once(
            request: VideoRequest, task_id: str | None, error: BaseException | None
        ) -> None:
            counts[request.prompt] += 1  # prompts are unique per arrival
            deliver(request, task_id, error)

        await driver(arrivals, http, deliver_once)

    async def main() -> Report | None:
        with trio.move_on_after(VIRTUAL_DEADLINE):
            return await run_scenario(scenario, counted, client=client)
        return None

    started = time.perf_counter()
    with _deterministic_trio(scenario.seed):
        report = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    wall = time.perf_counter() - started
    prompts = [a.request.prompt for a in scenario.arrivals()]
    completed = report is not None
    if report is None:  # cut off: say so, with what can be said
        report = _unfinished(scenario, client, len(prompts))
    return Outcome(
        report=report,
        completed=completed,
        delivered_twice=sum(1 for p in prompts if counts[p] > 1),
        never_delivered=sum(1 for p in prompts if counts[p] == 0),
        wall_seconds=wall,
    )


def _unfinished(scenario: Scenario, client: str, videos: int) -> Report:
    nan = math.nan
    return Report(
        scenario=scenario.name,
        client=client,
        videos=videos,
        delivered=0,
        failed=0,
        lost=videos,
        duplicates=0,
        requests=0,
        requests_per_video=nan,
        responses_429=0,
        max_requests_in_window=0,
        makespan=nan,
        floor=nan,
        makespan_over_floor=nan,
        mean_delivery_over_makespan=nan,
        delay_p50=nan,
        delay_p95=nan,
        delay_max=nan,
    )


def run_quality(scenarios: Iterable[Scenario], clients: Sequence[str] = CLIENTS) -> list[Outcome]:
    """Every scenario with every client, at the scenario's own limit."""
    out = []
    for scenario in scenarios:
        by_name = drivers(scenario.limit)
        out.extend(run_one(scenario, by_name[name], name) for name in clients)
    return out


def run_sweep(
    base: Scenario,
    batches: Sequence[int],
    budgets: Sequence[int],
    clients: Sequence[str] = CLIENTS,
) -> list[SweepPoint]:
    """``base`` as a batch of each size, under each budget (server limit = client budget)."""
    points = []
    for budget in budgets:
        by_name = drivers(budget)
        for batch in batches:
            scenario = attrs.evolve(
                base, name=f"sweep-{batch}x{budget}", videos=batch, limit=budget
            )
            for name in clients:
                points.append(SweepPoint(batch, budget, run_one(scenario, by_name[name], name)))
    return points
