"""The quick benchmark suite's correctness part, in-process (``python -m benchmarks --quick``).

Every scenario, run by the SDK and by the two plain clients in virtual time, and the quick
sweep: each completes, delivers every video exactly once, and sees no 429 where none is
allowed. Plus: the checks catch a client that breaks those rules, and the report renders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx
import pytest

from benchmarks.__main__ import main
from benchmarks.checks import problems
from benchmarks.quality import Outcome, SweepPoint, drivers, run_one
from benchmarks.report import markdown, write_json
from benchmarks.scenarios import SCENARIOS, Arrival, Deliver, Scenario
from benchmarks.suite import QUICK, run_checks

Quick = tuple[list[Outcome], list[SweepPoint], list[str]]


@pytest.fixture(scope="module")
def quick() -> Quick:
    return run_checks(QUICK)


def test_every_quick_run_is_correct(quick: Quick) -> None:
    outcomes, sweep, found = quick
    assert found == []
    assert {(o.report.scenario, o.report.client) for o in outcomes} == {
        (s, c) for s in SCENARIOS for c in ("sdk", "every-5s", "fixed-120-20")
    }
    assert len(sweep) == 3 * len(QUICK.sweep_batches) * len(QUICK.sweep_budgets)


def test_runs_are_deterministic() -> None:
    scenario = SCENARIOS["shared"]  # 429s and two clients on one key: the most to vary
    first = run_one(scenario, drivers()["sdk"], "sdk").report
    assert run_one(scenario, drivers()["sdk"], "sdk").report == first


def test_checks_catch_a_client_that_delivers_twice_or_not_at_all() -> None:
    async def sloppy(
        arrivals: Sequence[Arrival], http: httpx.AsyncClient, deliver: Deliver
    ) -> None:
        await anyio.sleep(1.0)
        deliver(arrivals[0].request, None, None)
        deliver(arrivals[0].request, None, None)  # twice; the others never

    outcome = run_one(Scenario("sloppy", videos=3), sloppy, "sloppy")
    found = problems([outcome])
    assert any("never delivered" in p for p in found), found
    assert any("more than once" in p for p in found), found


def test_a_run_that_never_ends_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    async def stuck(arrivals: Sequence[Arrival], http: httpx.AsyncClient, deliver: Deliver) -> None:
        await anyio.sleep_forever()

    monkeypatch.setattr("benchmarks.quality.VIRTUAL_DEADLINE", 60.0)
    found = problems([run_one(Scenario("stuck", videos=1), stuck, "stuck")])
    assert found == ["stuck/stuck: did not complete within the virtual deadline"]


def test_cli_quick_writes_strict_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path
    assert main(["--quick", "--out", str(out)]) == 0
    results = json.loads((out / "quick.json").read_text())  # strict: no NaN
    assert results["schema"] == 1
    assert results["quality"]["problems"] == []
    assert results["overhead"] is None
    text = (out / "quick.md").read_text()
    assert "| bulk | sdk |" in text
    assert markdown(results) == text
    write_json(results, out / "again.json")
    assert json.loads((out / "again.json").read_text()) == results
