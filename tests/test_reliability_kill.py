"""A kill loop: 20 random SIGKILLs of ``sora2 batch`` against the HTTP simulator, each followed
by a resume, then one run to the end.

Real processes, a real server (uvicorn in a thread), a high time scale. Each kill lands at a
random moment once no generate is between its send and its answer (a kill there rightly leaves
its request uncertain, which the CLI tests cover): during polls, downloads, journal and
manifest writes. Asserted at the end: tasks created = prompts, no prompt submitted twice, every
video on disk and whole, no part file left. Every process is bounded in time and stopped.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sora2_async.testing import RateLimitPolicy, Simulator, serve_in_thread

KEY = "kill-loop-key-0001"
SCALE = 300.0  # a sora2 video (1-3 min) takes 0.2-0.6 s
PROMPTS = 60
KILLS = 20
JOURNAL = ".sora2-journal.sqlite"


def _start(base_url: str, cwd: Path) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NANOPHOTO_")}
    environ["NANOPHOTO_API_KEY"] = KEY
    args = ["batch", "prompts.txt", "--out", "out", "--yes", "--json", "--base-url", base_url]
    args += ["--time-scale", f"{SCALE:g}", "--rate-limit", "4000", "--max-in-flight", "3"]
    return subprocess.Popen(
        [sys.executable, "-m", "sora2_async.cli", *args],
        cwd=cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _intents(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1.0) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM entries WHERE state = 'intent'").fetchone()
        return int(count)
    except sqlite3.OperationalError:  # no table yet
        return 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_twenty_random_kills_then_a_resume_lose_nothing_and_pay_nothing_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random(20240612)
    (tmp_path / "prompts.txt").write_text("".join(f"a glacier, take {i}\n" for i in range(PROMPTS)))
    journal = tmp_path / "out" / JOURNAL
    sim = Simulator(seed="kill-loop", time_scale=SCALE, rate_limit=RateLimitPolicy(4000))
    started = time.monotonic()
    killed_alive = 0
    with serve_in_thread(sim) as base_url:
        for _ in range(KILLS):
            proc = _start(base_url, tmp_path)
            try:
                time.sleep(rng.uniform(0.6, 1.8))
                deadline = time.monotonic() + 10
                while _intents(journal) and proc.poll() is None:
                    assert time.monotonic() < deadline, "a generate never got its answer"
                    time.sleep(0.002)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed_alive += 1
            finally:
                _stop(proc)
        final = _start(base_url, tmp_path)
        try:
            assert final.wait(timeout=60) == 0
        finally:
            _stop(final)
    stats = sim.stats()

    # Kills hit live runs (on a loaded machine the batch may finish within fewer rounds).
    assert killed_alive >= KILLS // 4
    assert stats.tasks_created == PROMPTS
    assert stats.duplicate_prompts == 0
    assert max(stats.tasks_by_prompt.values()) == 1
    out = tmp_path / "out"
    saved = sorted(out.glob("*.mp4"))
    assert len(saved) == PROMPTS
    assert all(path.read_bytes()[4:8] == b"ftyp" for path in saved)
    assert not list(out.glob(".*.part"))
    assert time.monotonic() - started < 120
