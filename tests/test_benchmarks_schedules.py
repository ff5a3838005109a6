"""``python -m benchmarks.schedules``: one grid cell over many of trio's orders."""

from __future__ import annotations

import re

import pytest

from benchmarks.grid import Cell
from benchmarks.schedules import main, run_schedules


def test_each_seed_gives_the_same_run_again_and_seeds_differ() -> None:
    """A cell whose 429s depend on the order (2 or 3 here): each seed's run is repeatable,
    and two seeds give two different runs."""
    cell = Cell(100, 1, "priors", "batch", "60", max_videos=1000)
    first = run_schedules(cell, [1, 2])
    again = run_schedules(cell, [1, 2])
    assert [s for s, _ in first] == [1, 2]
    assert [r for _, r in first] == [r for _, r in again]
    assert first[0][1].responses_429 != first[1][1].responses_429
    for _, r in first:
        assert (r.lost, r.duplicates, r.delivered_twice) == (0, 0, 0), r
        assert r.delivered == r.videos


def test_it_prints_a_line_per_run_and_the_spread(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["10", "1", "priors", "batch", "60", "--runs", "2", "--first", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("10/1x/priors/batch/60 over 2 orders")
    assert [line.split(":")[0] for line in out[1:3]] == ["seed    5", "seed    6"]
    refused = [int(m.group(1)) for m in map(re.compile(r"responses_429=(\d+)").search, out) if m]
    assert len(refused) == 2
    assert f"responses_429: min {min(refused)}," in "\n".join(out)
    assert "LOST" not in "\n".join(out)


def test_it_refuses_no_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["10", "1", "priors", "batch", "60", "--runs", "0"])
    assert "--runs must be at least 1" in capsys.readouterr().err
