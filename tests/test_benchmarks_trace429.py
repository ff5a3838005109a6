"""``python -m benchmarks.trace429``: one grid cell's 429s, one line each."""

from __future__ import annotations

import re

import pytest

from benchmarks.trace429 import main
from sora2_async import _ceiling


def test_it_prints_one_line_per_429_of_ours_beside_a_raw_neighbour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A raw neighbour has no ceiling, so every line is one of our 429s (as the cell counts
    them), and the limit only goes down at each."""
    assert main(["10", "1", "priors", "batch", "60"]) == 0
    out = capsys.readouterr().out.splitlines()
    result, lines = out[0], out[1:]
    match = re.search(r"responses_429=(\d+)", result)
    assert match is not None
    assert len(lines) == int(match.group(1)) > 0
    for line in lines:
        limits = re.search(r"limit (\d+) -> (\d+)", line)
        assert limits is not None
        assert int(limits.group(2)) < int(limits.group(1))
        assert line.startswith("ceiling 0: ")
    assert _ceiling.Ceiling.lower.__name__ == "lower"  # put back


def test_it_says_how_to_call_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["10", "1"]) == 2
    assert "python -m benchmarks.trace429" in capsys.readouterr().err
