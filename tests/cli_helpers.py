"""Running ``sora2`` as a real process against the simulator served over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KEY = "cli-test-key-01"


def env(key: str | None = KEY) -> dict[str, str]:
    """This process's environment without NANOPHOTO_*, with ``key`` as the API key."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NANOPHOTO_")}
    if key is not None:
        environ["NANOPHOTO_API_KEY"] = key
    environ["COLUMNS"] = "200"
    return environ


def write_prompts(path: Path, n: int, prefix: str = "a video of") -> Path:
    """``n`` distinct one-line prompts in a text file."""
    path.write_text("".join(f"{prefix} thing {i}\n" for i in range(n)), encoding="utf-8")
    return path


def start_batch(
    base_url: str,
    cwd: Path,
    scale: float,
    *extra: str,
    to_files: bool = False,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """``sora2 batch prompts.txt --out out --yes --json`` in ``cwd``, as a child process.

    With ``to_files`` its output goes to ``cwd/stdout.txt`` and ``cwd/stderr.txt`` (for
    children that run side by side: a full pipe would stall one), else to pipes.
    """
    args = ["batch", "prompts.txt", "--out", "out", "--yes", "--json"]
    args += ["--time-scale", f"{scale:g}", "--base-url", base_url, *extra]
    out: Any = subprocess.PIPE
    err: Any = subprocess.PIPE
    if to_files:
        out = (cwd / "stdout.txt").open("w", encoding="utf-8")
        err = (cwd / "stderr.txt").open("w", encoding="utf-8")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "sora2_async.cli", *args],
            cwd=cwd,
            env={**env(), **(extra_env or {})},
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    finally:
        if to_files:
            out.close()
            err.close()


def read_until(proc: subprocess.Popen[str], done: int, timeout: float = 30) -> None:
    """Read the child's JSON events until ``done`` videos are saved."""
    assert proc.stdout is not None
    saved = 0
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "result" and event["status"] == "completed":
            saved += 1
            if saved >= done:
                return
        assert time.monotonic() < deadline, "the batch did not get that far"
    raise AssertionError(f"the batch ended before {done} videos")


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[int]:
    """Wait for every child (killing them all when time runs out); their exit codes."""
    deadline = time.monotonic() + timeout
    codes: list[int] = []
    try:
        for proc in procs:
            proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            codes.append(proc.returncode)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return codes
