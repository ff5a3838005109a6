"""The README cannot rot: its quickstart runs against the simulator, and CI runs its commands."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import httpx
import pytest

import sora2_async
from sora2_async.testing import Simulator

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


@pytest.mark.anyio
async def test_quickstart_runs_against_the_simulator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (quickstart,) = [block for block in code_blocks("python") if "async def main" in block]
    sim = Simulator(seed=3)
    monkeypatch.setenv("NANOPHOTO_API_KEY", "readme-key-0123")
    monkeypatch.chdir(tmp_path)
    # The README's client, given the simulator's transport instead of the network.
    wired = functools.partial(
        sora2_async.Sora2Client, http_client=httpx.AsyncClient(transport=sim.transport())
    )
    monkeypatch.setattr(sora2_async, "Sora2Client", wired)
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(quickstart, "README.md", "exec"), namespace)
    await namespace["main"]()  # type: ignore[operator]
    out = capsys.readouterr().out
    assert (tmp_path / "corgi.mp4").read_bytes()[4:8] == b"ftyp"
    assert out.count("->") == 11
    assert sim.stats().tasks_created == 11
    assert sim.stats().responses_429 == 0


def test_ci_runs_exactly_the_readme_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    section = ci.split("# --- README: install ---")[1].split("# --- end of README commands ---")[0]
    install, test = section.split("# --- README: test ---")
    bash = "\n".join(code_blocks("bash"))
    for command in (*install.strip().splitlines(), *test.strip().splitlines()):
        assert command in bash, f"{command!r} is in .ci/run but not in the README"
