"""``sora2`` end to end: the command as a subprocess against the simulator served over HTTP.

The simulator runs in this process (uvicorn in a thread, :func:`serve_in_thread`), so its
stats are read directly; client and server share a ``--time-scale``, so a minute-long video
takes a second. The runs: a batch killed with SIGKILL halfway and run again (every video
present, no prompt submitted twice), Ctrl-C (a clean exit, the journal intact, a resume that
sends only what was never sent), a bad JSONL line, a ``--max-credits`` refusal, uncertain
requests, and the demo.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sora2_async import JournalState
from sora2_async.testing import RateLimitPolicy, Simulator, serve_in_thread
from tests import cli_helpers
from tests.cli_helpers import KEY, env, read_until, write_prompts

SCALE = 60.0  # a sora2 video (1-3 min) takes 0.5-1.5 s; the budget's hour, 30 s


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed="cli", time_scale=SCALE)


@pytest.fixture
def base_url(sim: Simulator) -> Iterator[str]:
    with serve_in_thread(sim) as url:
        yield url


def run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sora2_async.cli", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def journal_states(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT state, COUNT(*) FROM entries GROUP BY state").fetchall()
    return dict(rows)


def manifest(out: Path) -> list[dict[str, object]]:
    text = (out / "manifest.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def start_batch(base_url: str, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return cli_helpers.start_batch(base_url, tmp_path, SCALE, *extra)


def test_a_batch_killed_halfway_resumes_without_paying_twice(tmp_path: Path) -> None:
    # A roomy budget: a killed run's spend is unknown to the next one, whose first 429 would
    # cost a whole (scaled) window of waiting. That is the budget's business, not the
    # journal's, and it is tested elsewhere.
    roomy = ("--rate-limit", "400")
    sim = Simulator(seed="cli-kill", time_scale=SCALE, rate_limit=RateLimitPolicy(400))
    with serve_in_thread(sim) as base_url:
        run_killed_then_resumed(sim, base_url, tmp_path, roomy)


def run_killed_then_resumed(
    sim: Simulator, base_url: str, tmp_path: Path, roomy: tuple[str, str]
) -> None:
    write_prompts(tmp_path / "prompts.txt", 30)
    journal = tmp_path / "out" / ".sora2-journal.sqlite"
    proc = start_batch(base_url, tmp_path, *roomy)
    try:
        read_until(proc, 10)
        # Kill it once every request has its task id: SIGKILL in the instant between a
        # generate and its answer would (rightly) leave that request uncertain.
        deadline = time.monotonic() + 20
        while journal_states(journal).get(JournalState.INTENT.value, 0) or (
            sum(journal_states(journal).values()) < 30
        ):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    killed = journal_states(journal)
    assert killed.get("completed", 0) >= 10
    assert killed.get("submitted", 0) > 0, killed  # some were still running

    again = run(
        "batch",
        "prompts.txt",
        "--out",
        "out",
        "--yes",
        "--base-url",
        base_url,
        "--time-scale",
        f"{SCALE:g}",
        *roomy,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert "still running (followed, not re-sent)" in again.stdout
    rows = manifest(tmp_path / "out")
    assert [r["status"] for r in rows] == ["completed"] * 30
    for row in rows:
        assert isinstance(row["file"], str)
        assert (tmp_path / row["file"]).read_bytes()[4:8] == b"ftyp"
    stats = sim.stats()
    assert stats.duplicate_prompts == 0
    assert stats.tasks_created == 30
    assert stats.requests_by_endpoint["generate"] == 30


def test_ctrl_c_exits_cleanly_and_the_resume_sends_the_rest(
    sim: Simulator, base_url: str, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.txt", 12)
    proc = start_batch(base_url, tmp_path, "--max-in-flight", "3")
    try:
        read_until(proc, 2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("sora2: error: interrupted: the journal")
    assert json.loads(out.splitlines()[-1])["interrupted"] is True
    states = journal_states(tmp_path / "out" / ".sora2-journal.sqlite")
    assert states.get("intent", 0) == 0  # an answer in flight was waited for, not lost
    rows = manifest(tmp_path / "out")
    assert len(rows) == 12
    assert {r["status"] for r in rows} >= {"completed", "not_submitted"}
    sent_before = sim.stats().tasks_created
    assert sent_before < 12

    again = run(
        "batch",
        "prompts.txt",
        "--out",
        "out",
        "--yes",
        "--base-url",
        base_url,
        "--time-scale",
        f"{SCALE:g}",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in manifest(tmp_path / "out")] == ["completed"] * 12
    assert sim.stats().tasks_created == 12
    assert sim.stats().duplicate_prompts == 0


def test_a_bad_line_stops_everything_before_a_request(
    sim: Simulator, base_url: str, tmp_path: Path
) -> None:
    lines = ['{"prompt": "fine"}', '{"prompt": "bad", "duration": 20}', '{"prompt": "ok"}']
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = run("batch", "p.jsonl", "--out", "out", "--yes", "--base-url", base_url, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("sora2: error: p.jsonl:2: duration must be 10 or 15 seconds, not 20")
    assert line.endswith("(nothing was submitted)")
    assert sim.stats().total_requests == 0
    assert not (tmp_path / "out").exists()


def test_max_credits_refuses_a_dearer_batch(sim: Simulator, base_url: str, tmp_path: Path) -> None:
    rows = [{"prompt": "pro", "model_tier": "sora2-pro-high"}, {"prompt": "cheap"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    done = run(
        "batch",
        "p.jsonl",
        "--out",
        "out",
        "--max-credits",
        "100",
        "--yes",
        "--base-url",
        base_url,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "would cost 124 credits, more than --max-credits 100" in line
    assert sim.stats().total_requests == 0


def test_without_yes_and_a_terminal_nothing_is_spent(
    sim: Simulator, base_url: str, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "p.txt", 3)
    done = run("batch", "p.txt", "--out", "out", "--base-url", base_url, cwd=tmp_path)
    assert done.returncode == 2
    assert "3 video(s) to submit, 12 credits" in done.stderr
    assert "--yes" in done.stderr
    assert sim.stats().total_requests == 0


def test_uncertain_requests_are_listed_and_sent_only_when_asked(
    sim: Simulator, base_url: str, tmp_path: Path
) -> None:
    import anyio

    from sora2_async import SQLiteJournal, VideoRequest
    from sora2_async._journal import request_key

    write_prompts(tmp_path / "p.txt", 2)
    lost = VideoRequest("a video of thing 1")

    async def an_earlier_run_lost_an_answer() -> None:
        async with SQLiteJournal(tmp_path / "out" / ".sora2-journal.sqlite") as journal:
            await journal.record_intent(request_key(lost), lost)

    anyio.run(an_earlier_run_lost_an_answer)
    args = (
        "batch",
        "p.txt",
        "--out",
        "out",
        "--yes",
        "--base-url",
        base_url,
        "--time-scale",
        f"{SCALE:g}",
    )
    first = run(*args, cwd=tmp_path)
    assert first.returncode == 1
    assert "1 request(s) (line 2) went out in an earlier run" in first.stdout
    assert [r["status"] for r in manifest(tmp_path / "out")] == ["completed", "uncertain"]
    assert sim.stats().tasks_created == 1
    forced = run(*args, "--resubmit-uncertain", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert sim.stats().tasks_created == 2


def test_insufficient_credits_is_one_clear_line(tmp_path: Path) -> None:
    sim = Simulator(seed="poor", time_scale=SCALE, api_keys={KEY: 4})
    write_prompts(tmp_path / "p.txt", 2)
    with serve_in_thread(sim) as url:
        done = run(
            "batch",
            "p.txt",
            "--out",
            "out",
            "--yes",
            "--base-url",
            url,
            "--time-scale",
            f"{SCALE:g}",
            cwd=tmp_path,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("sora2: error: insufficient credits")
    assert [r["status"] for r in manifest(tmp_path / "out")] == ["completed", "rejected"]


def test_generate_status_and_wait(sim: Simulator, base_url: str, tmp_path: Path) -> None:
    common = ("--base-url", base_url, "--time-scale", f"{SCALE:g}")
    made = run("generate", "a single corgi", "--ratio", "landscape", *common, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    task_id = made.stdout.split()[1]
    assert made.stdout.startswith(f"submitted {task_id} (4 credits)")
    looked = run("status", task_id, *common, cwd=tmp_path)
    assert looked.stdout.startswith(f"{task_id}: ")
    waited = run("wait", task_id, "--out", "corgi.mp4", *common, cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr
    assert (tmp_path / "corgi.mp4").read_bytes()[4:8] == b"ftyp"
    missing = run("status", "task_nope", *common, cwd=tmp_path)
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1


def test_the_demo_needs_no_key_and_finishes_quickly(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sora2_async.cli", "demo"],
        cwd=tmp_path,
        env=env(key=None),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 60
    rows = manifest(tmp_path / "sora2-demo")
    assert len(rows) == 12
    assert {r["status"] for r in rows} == {"completed"}
    assert len(list((tmp_path / "sora2-demo").glob("*.mp4"))) == 12
    assert "sora2 batch prompts.jsonl --out videos/" in done.stdout  # how to run it for real
    again = subprocess.run(  # a second demo starts afresh
        [sys.executable, "-m", "sora2_async.cli", "demo", "--json"],
        cwd=tmp_path,
        env=env(key=None),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.splitlines()[-2])
    assert summary["event"] == "summary"
    assert summary["completed"] == 12


def test_the_readme_runs_the_demo_first_and_the_tests_second() -> None:
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    first, second = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)[:2]
    assert first.strip().startswith("python3 -m venv .venv")
    assert first.strip().endswith("pip install -e '.[dev]' && sora2 demo")
    assert second.strip() == "pytest"


def test_the_simulator_command_serves_the_api(tmp_path: Path) -> None:
    import socket

    import httpx

    with socket.socket() as probe:  # a free port, for the server to take right after
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sora2_async.cli",
            "simulator",
            "--port",
            str(port),
            "--time-scale",
            "60",
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                stats = httpx.get(f"http://127.0.0.1:{port}/_simulator/stats", timeout=1).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert stats["tasks_created"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
