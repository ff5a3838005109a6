"""``sora2 batch`` and local files: a bad journal or folder is refused, local errors are one line.

Against the simulator served over HTTP (uvicorn in a thread). Refusals run ``sora2`` as a real
process (no traceback may reach stderr). Local failures a root-run test cannot make with
``chmod`` (a full disk, a denied write, a failing journal) are injected in-process, and
``sora2`` runs in-process with ``app.run`` so that the injection reaches it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from sora2_async import SQLiteJournal
from sora2_async._cli import app
from sora2_async.testing import RateLimitPolicy, Simulator, serve_in_thread

KEY = "cli-reliability-key"
SCALE = 120.0  # a sora2 video (1-3 min) takes 0.5-1.5 s
PROMPTS = 4
JOURNAL = ".sora2-journal.sqlite"


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed="cli-reliability", time_scale=SCALE, rate_limit=RateLimitPolicy(400))


@pytest.fixture
def base_url(sim: Simulator) -> Iterator[str]:
    with serve_in_thread(sim) as url:
        yield url


def batch_args(base_url: str, out: str = "out", *extra: str) -> list[str]:
    return [
        "batch",
        "prompts.txt",
        "--out",
        out,
        "--yes",
        "--json",
        "--base-url",
        base_url,
        "--time-scale",
        f"{SCALE:g}",
        "--rate-limit",
        "400",
        *extra,
    ]


def run_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NANOPHOTO_")}
    environ["NANOPHOTO_API_KEY"] = KEY
    return subprocess.run(
        [sys.executable, "-m", "sora2_async.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def run_here(
    args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """``sora2`` in this process (so that injected failures reach it): status and stderr."""
    monkeypatch.setenv("NANOPHOTO_API_KEY", KEY)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = app.run(args)
    return code, capsys.readouterr().err


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("sora2: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def states(journal: Path) -> list[str]:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        return sorted(row[0] for row in db.execute("SELECT state FROM entries"))


def videos(out: Path) -> list[Path]:
    return sorted(out.glob("*.mp4"))


@pytest.fixture
def finished(sim: Simulator, base_url: str, tmp_path: Path) -> Path:
    """A folder whose batch of PROMPTS videos finished: journal, manifest, videos."""
    (tmp_path / "prompts.txt").write_text("".join(f"a kite, take {i}\n" for i in range(PROMPTS)))
    done = run_process(batch_args(base_url), tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(videos(tmp_path / "out")) == PROMPTS
    assert sim.stats().tasks_created == PROMPTS
    return tmp_path


# -- a journal that is no journal is refused: nothing sent, nothing overwritten -----------------


def _wipe(journal: Path) -> None:
    journal.write_bytes(b"")


def _garbage(journal: Path) -> None:
    journal.write_bytes(b"this is not a database\n" * 200)


def _truncate(journal: Path) -> None:
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) // 2 + 100])


def _folder(journal: Path) -> None:
    journal.unlink()
    journal.mkdir()


def _stranger(journal: Path) -> None:
    journal.unlink()
    with sqlite3.connect(journal) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")
    db.close()


def _deleted(journal: Path) -> None:
    journal.unlink()


def _another_folders(journal: Path) -> None:
    journal.unlink()

    async def record() -> None:
        async with SQLiteJournal(journal) as other:
            from sora2_async import VideoRequest

            await other.record_task("k-0", VideoRequest("something else"), "task_elsewhere")

    anyio.run(record)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_wipe, "empty (0 bytes)"),
        (_garbage, "not a readable SQLite database"),
        (_truncate, "journal"),
        (_folder, "is a folder"),
        (_stranger, "not a sora2 journal"),
        (_deleted, "journal"),
        (_another_folders, "does not know"),
    ],
)
def test_a_bad_journal_is_refused_before_anything_is_sent(
    finished: Path, sim: Simulator, base_url: str, damage: Any, words: str
) -> None:
    out = finished / "out"
    journal = out / JOURNAL
    damage(journal)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    requests = sim.stats().total_requests
    again = run_process(batch_args(base_url), finished)
    assert again.returncode == 2, again.stderr
    line = one_error_line(again.stderr)
    assert words in line
    assert "Nothing was sent" in line or "nothing was sent" in line
    assert sim.stats().total_requests == requests  # not one request
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # nothing overwritten, nothing created


# -- local errors: one line, rc != 0, the journal intact, paid videos saved on the next run -----


@pytest.mark.parametrize(
    "failure",
    [
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_a_video_that_cannot_be_saved_stays_paid_and_is_saved_on_the_next_run(
    sim: Simulator,
    base_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failure: OSError,
) -> None:
    (tmp_path / "prompts.txt").write_text("".join(f"a dune, take {i}\n" for i in range(PROMPTS)))

    async def full_disk(self: anyio.AsyncFile[bytes], data: bytes) -> int:
        raise failure

    with monkeypatch.context() as patch:
        patch.setattr(anyio.AsyncFile, "write", full_disk)
        code, stderr = run_here(batch_args(base_url), tmp_path, monkeypatch, capsys)
    assert code == 1
    line = one_error_line(stderr)
    assert "could not save" in line
    assert failure.strerror in line
    assert "run again" in line or "runs again" in line
    out = tmp_path / "out"
    assert states(out / JOURNAL) == ["completed"] * PROMPTS  # paid, recorded
    assert videos(out) == []
    assert not list(out.glob(".*.part"))
    assert all(row["file"] is None for row in manifest(out))

    code, stderr = run_here(batch_args(base_url), tmp_path, monkeypatch, capsys)
    assert code == 0, stderr
    assert len(videos(out)) == PROMPTS
    stats = sim.stats()
    assert stats.tasks_created == PROMPTS  # saving again cost nothing
    assert stats.duplicate_prompts == 0


def test_a_journal_that_cannot_be_written_is_one_line_and_the_tasks_are_followed_later(
    sim: Simulator,
    base_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "prompts.txt").write_text("".join(f"a reef, take {i}\n" for i in range(PROMPTS)))
    original = SQLiteJournal.record_status

    async def disk_full(self: SQLiteJournal, key: str, status: Any) -> None:
        def fail(db: sqlite3.Connection) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        await self._run(fail)  # the real error path of a real write

    with monkeypatch.context() as patch:
        patch.setattr(SQLiteJournal, "record_status", disk_full)
        code, stderr = run_here(batch_args(base_url), tmp_path, monkeypatch, capsys)
    assert SQLiteJournal.record_status is original
    assert code == 1
    line = one_error_line(stderr)
    assert "database or disk is full" in line
    out = tmp_path / "out"
    assert states(out / JOURNAL) == ["submitted"] * PROMPTS  # intact: every task id is there
    assert sim.stats().tasks_created == PROMPTS

    code, stderr = run_here(batch_args(base_url), tmp_path, monkeypatch, capsys)
    assert code == 0, stderr
    assert len(videos(out)) == PROMPTS
    assert states(out / JOURNAL) == ["completed"] * PROMPTS
    stats = sim.stats()
    assert stats.tasks_created == PROMPTS
    assert stats.requests_by_endpoint["generate"] == PROMPTS


@pytest.mark.parametrize("where", ["--out", "--journal"])
def test_an_unwritable_folder_is_one_line_and_nothing_is_sent(
    sim: Simulator, base_url: str, tmp_path: Path, where: str
) -> None:
    (tmp_path / "prompts.txt").write_text("a lake\n")
    (tmp_path / "a-file").write_text("not a folder")
    # Root ignores permission bits: a path under a file is unwritable for everyone.
    extra = ("--journal", "a-file/journal.sqlite") if where == "--journal" else ()
    out = "a-file/out" if where == "--out" else "out"
    done = run_process(batch_args(base_url, out, *extra), tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "a-file" in line
    assert sim.stats().total_requests == 0


def test_part_files_of_a_killed_run_are_removed(finished: Path, base_url: str) -> None:
    out = finished / "out"
    leftovers = [
        out / ".a-kite-take-0-task_x.mp4.0123456789ab.part",
        out / ".manifest.k2j3h4.part",
    ]
    mine = out / ".notes.part"  # not ours: left alone
    for path in [*leftovers, mine]:
        path.write_bytes(b"half a video")
    again = run_process(batch_args(base_url), finished)
    assert again.returncode == 0, again.stderr
    assert not any(path.exists() for path in leftovers)
    assert mine.exists()
    assert "removed 2 part file(s)" in again.stdout + again.stderr


def test_a_resumed_folder_is_moved_whole(finished: Path, sim: Simulator, base_url: str) -> None:
    # The checks refuse what disagrees, not what merely moved: a folder copied elsewhere runs.
    shutil.copytree(finished / "out", finished / "moved")
    again = run_process(batch_args(base_url, "moved"), finished)
    assert again.returncode == 0, again.stderr
    assert sim.stats().tasks_created == PROMPTS
