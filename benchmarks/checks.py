"""What the runs must show: correctness (asserted, also by ``--quick``) and the SDK's targets.

Correctness is not a matter of timing, so it holds on any machine: every run completes,
every video asked for reaches its caller exactly once (none lost, none twice, none paid
twice), and nobody gets a 429 where none is allowed. The targets of the scheduler issue are
reported beside the numbers, never asserted here (the tests do that).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .quality import Outcome

__all__ = ["TARGETS", "allowed_429s", "problems", "targets"]

SHARED = "shared"


def allowed_429s(scenario: str, client: str) -> int | None:
    """How many 429s a run may see; ``None``: any (it cannot know of the key's other user)."""
    if scenario == SHARED:
        return 3 if client == "sdk" else None
    return 0  # alone on the key, a client that counts its requests is never refused


def problems(outcomes: Iterable[Outcome]) -> list[str]:
    """Everything wrong with ``outcomes``, one line each; empty when all is well."""
    found = []
    for o in outcomes:
        r = o.report
        name = f"{r.scenario}/{r.client}"
        if not o.completed:
            found.append(f"{name}: did not complete within the virtual deadline")
            continue
        if r.lost or o.never_delivered:
            found.append(f"{name}: {max(r.lost, o.never_delivered)} videos never delivered")
        if o.delivered_twice:
            found.append(f"{name}: {o.delivered_twice} videos delivered more than once")
        if r.duplicates:
            found.append(f"{name}: {r.duplicates} videos submitted (and paid for) twice")
        if r.delivered + r.failed != r.videos:
            found.append(f"{name}: {r.delivered} + {r.failed} failed != {r.videos} videos")
        allowed = allowed_429s(r.scenario, r.client)
        if allowed is not None and r.responses_429 > allowed:
            found.append(f"{name}: {r.responses_429} responses 429 (allowed: {allowed})")
    return found


#: The scheduler issue's targets per scenario: (what, report field, the most it may be).
TARGETS: dict[str, list[tuple[str, str, float]]] = {
    "bulk": [
        ("requests/video <= 2.05", "requests_per_video", 2.05),
        ("makespan <= 1.05 x floor", "makespan_over_floor", 1.05),
        ("mean delivery <= 0.6 x makespan", "mean_delivery_over_makespan", 0.6),
        ("no 429", "responses_429", 0),
    ],
    "few": [
        ("p95 delay <= 10 s", "delay_p95", 10.0),
        ("requests/video <= 10", "requests_per_video", 10.0),
    ],
    "pro": [
        ("makespan <= 1.1 x longest task", "makespan_over_floor", 1.1),
        ("makespan <= 3600 s", "makespan", 3600.0),
    ],
    "shared": [("429s <= 3", "responses_429", 3), ("nothing lost", "lost", 0)],
    "service": [("p95 delay <= 35 s", "delay_p95", 35.0), ("no 429", "responses_429", 0)],
    "failures": [("nothing lost", "lost", 0), ("no 429", "responses_429", 0)],
}


def targets(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """The targets of every scenario, for every client: the value and whether it is met.

    The targets are the SDK's; the plain clients are held to them too, for comparison.
    """
    rows = []
    for o in outcomes:
        r = o.report
        for what, field, limit in TARGETS.get(r.scenario, ()):
            value = getattr(r, field)
            rows.append(
                {
                    "scenario": r.scenario,
                    "client": r.client,
                    "target": what,
                    "value": value,
                    "met": bool(value <= limit),  # NaN (never finished) is not met
                }
            )
    return rows
