"""``sora2 batch --redis``: one batch's journal in Redis, shared by runs on several "hosts".

Each run is a real ``sora2`` process with an output folder and a state folder of its own
(no file on this machine is shared between them: only Redis is), against the simulator
served over HTTP by uvicorn in this process, whose stats are the server's view of the key.
Time is compressed (``--time-scale``). Every child is stopped, every wait bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from sora2_async import JournalEntry, JournalState
from sora2_async.redis import RedisJournal
from sora2_async.testing import RateLimitPolicy, Simulator, serve_in_thread
from tests.cli_helpers import env, finish, start_batch, write_prompts

SCALE = 60.0  # a sora2 video (1-3 min) takes 1-3 s; the budget's hour, 60 s
PROMPTS = 16


def hosts(tmp_path: Path, count: int) -> list[Path]:
    """``count`` "hosts", each with its state folder and the same input file."""
    folders = []
    for i in range(count):
        folder = tmp_path / f"host{i}"
        (folder / "state").mkdir(parents=True)
        write_prompts(folder / "prompts.txt", PROMPTS, prefix="shared")
        folders.append(folder)
    return folders


def start(base_url: str, folder: Path, redis_url: str, *extra: str) -> subprocess.Popen[str]:
    return start_batch(
        base_url,
        folder,
        SCALE,
        "--redis",
        redis_url,
        "--rate-limit",
        "400",
        *extra,
        to_files=True,
        extra_env={"XDG_STATE_HOME": str(folder / "state")},
    )


def sora2(
    *args: str, cwd: Path, timeout: float = 60, **more: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sora2_async.cli", *args],
        cwd=cwd,
        env={**env(), "XDG_STATE_HOME": str(cwd / "state"), **more},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def manifest(out: Path) -> list[dict[str, Any]]:
    text = (out / "manifest.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def record(out: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((out / ".sora2-journal.json").read_text(encoding="utf-8"))
    return data


async def entries_of(redis_url: str, out: Path) -> list[JournalEntry]:
    rec = record(out)
    async with RedisJournal.from_url(
        redis_url, name=rec["name"], namespace=rec["key_fingerprint"]
    ) as journal:
        return await journal.entries()


def journal_entries(redis_url: str, out: Path) -> list[JournalEntry]:
    return anyio.run(entries_of, redis_url, out)


def check_folder(folder: Path, entries: list[JournalEntry], base_url: str) -> None:
    """Every video saved, and the manifest and ``sora2 status DIR`` say what the journal says."""
    out = folder / "out"
    assert len(list(out.glob("*.mp4"))) == PROMPTS
    rows = manifest(out)
    assert len(rows) == PROMPTS
    assert {row["status"] for row in rows} == {"completed"}
    assert {row["task_id"] for row in rows} == {e.task_id for e in entries}
    shown = sora2("status", "out", "--json", "--base-url", base_url, cwd=folder)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["counts"]["completed"] == PROMPTS
    assert status["key_matches"] is True


def test_two_hosts_share_one_journal_and_submit_each_request_once(
    tmp_path: Path, redis_server: Any
) -> None:
    sim = Simulator(seed="two-hosts", time_scale=SCALE, rate_limit=RateLimitPolicy(400))
    folders = hosts(tmp_path, 2)
    with serve_in_thread(sim) as base_url:
        procs = [start(base_url, folder, redis_server.url) for folder in folders]
        codes = finish(procs, timeout=120)
        for folder, code in zip(folders, codes, strict=True):
            assert code == 0, (folder / "stderr.txt").read_text()
    stats = sim.stats()
    assert stats.tasks_created == PROMPTS  # across both hosts
    assert stats.duplicate_prompts == 0
    # Both folders found one journal by the input's digest, and recorded it (no password).
    assert record(folders[0] / "out") == record(folders[1] / "out")
    assert record(folders[0] / "out")["name"].startswith("batch-")
    entries = journal_entries(redis_server.url, folders[0] / "out")
    assert len(entries) == PROMPTS
    assert {e.state for e in entries} == {JournalState.COMPLETED}
    for folder in folders:
        check_folder(folder, entries, base_url)


async def _leased_by(redis_url: str, out: Path, pid: int) -> set[str]:
    import coredis

    rec = record(out)
    tag = f"{{sora2:{rec['key_fingerprint']}:journal:{rec['name']}}}"
    async with coredis.Redis.from_url(redis_url, decode_responses=True) as client:
        owners = await client.hgetall(f"{tag}:owners")
    return {key for key, owner in owners.items() if f"-{pid}-" in owner}


def leased_by(redis_url: str, out: Path, pid: int) -> set[str]:
    """The keys whose lease the process ``pid`` holds (its owner id names its pid)."""
    return anyio.run(_leased_by, redis_url, out, pid)


def wait_for_task_ids(redis_url: str, folder: Path, proc: subprocess.Popen[str], n: int) -> None:
    """Wait until ``n`` requests have their task id in the journal of ``folder``'s batch."""
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the batch did not submit that much"
        assert proc.poll() is None, (folder / "stderr.txt").read_text()
        if (folder / "out" / ".sora2-journal.json").exists():
            entries = journal_entries(redis_url, folder / "out")
            if sum(e.task_id is not None for e in entries) >= n:
                return
        time.sleep(0.02)


def test_a_killed_hosts_tasks_are_adopted_by_the_other_and_nothing_is_paid_twice(
    tmp_path: Path, redis_server: Any
) -> None:
    sim = Simulator(seed="killed-host", time_scale=SCALE, rate_limit=RateLimitPolicy(400))
    folders = hosts(tmp_path, 2)
    name = ("--batch-name", f"killed-{time.monotonic_ns()}")
    procs: list[subprocess.Popen[str]] = []
    with serve_in_thread(sim) as base_url:
        try:
            victim = start(base_url, folders[0], redis_server.url, *name)
            procs.append(victim)
            wait_for_task_ids(redis_server.url, folders[0], victim, 3)  # it has a head start
            other = start(base_url, folders[1], redis_server.url, *name)
            procs.append(other)
            # Killed once every request has its task id in the journal (a kill between a
            # generate's answer and its id would leave an uncertain intent), while videos
            # it follows are still running.
            wait_for_task_ids(redis_server.url, folders[0], victim, PROMPTS)
            victim.kill()  # SIGKILL: its leases are not released, nothing more recorded
            victim.wait(timeout=10)
            orphans = leased_by(redis_server.url, folders[0] / "out", victim.pid)
            running = journal_entries(redis_server.url, folders[0] / "out")
            assert orphans & {e.key for e in running if e.state is JournalState.SUBMITTED}
            assert finish([other], timeout=120) == [0], (folders[1] / "stderr.txt").read_text()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
        assert victim.returncode == -9
        # The killed host's folder, run again: everything ended, only its files are fetched.
        again = finish([start(base_url, folders[0], redis_server.url, *name)], timeout=60)
        assert again == [0], (folders[0] / "stderr.txt").read_text()
    stats = sim.stats()
    assert stats.tasks_created == PROMPTS
    assert stats.duplicate_prompts == 0
    entries = journal_entries(redis_server.url, folders[0] / "out")
    assert {e.state for e in entries} == {JournalState.COMPLETED}
    for folder in folders:
        check_folder(folder, entries, base_url)


def test_status_of_a_redis_folder_reads_redis_and_says_when_it_cannot(
    tmp_path: Path, redis_server: Any
) -> None:
    sim = Simulator(seed="status", time_scale=SCALE, rate_limit=RateLimitPolicy(400))
    (folder,) = hosts(tmp_path, 1)
    with serve_in_thread(sim) as base_url:
        assert finish([start(base_url, folder, redis_server.url)], timeout=60) == [0]
    seen = sim.stats().total_requests
    # Without --redis: the URL the folder recorded; no key needed (the record names it).
    shown = sora2("status", "out", cwd=folder, NANOPHOTO_API_KEY="")
    assert shown.returncode == 0, shown.stderr
    assert f"completed {PROMPTS}" in shown.stdout
    # A Redis that is not there: a clear line, no traceback, in a few seconds.
    began = time.monotonic()
    gone = sora2("status", "out", "--redis", "redis://127.0.0.1:9/0", cwd=folder)
    assert time.monotonic() - began < 30
    assert gone.returncode == 2
    assert "Traceback" not in gone.stderr
    assert "cannot read out's journal" in gone.stderr
    assert "unreachable" in gone.stderr
    # Another database of that server: no such journal there (its data lost, say).
    other = redis_server.url.rsplit("/", 1)[0] + "/3"
    lost = sora2("status", "out", "--redis", other, cwd=folder)
    assert lost.returncode == 2
    assert "not out's" in lost.stderr
    assert "Traceback" not in lost.stderr
    assert sim.stats().total_requests == seen  # status sent nothing to the API


# -- a folder's journal is of one kind, one name, one key, one server ---------------------------


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 2, one clear line (no traceback) holding ``words``, nothing sent."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Nothing was sent" in result.stderr or "needs --redis" in result.stderr
    for word in words:
        assert word in result.stderr


def test_a_folder_is_never_given_a_second_journal(tmp_path: Path, redis_server: Any) -> None:
    sim = Simulator(seed="mismatch", time_scale=SCALE, rate_limit=RateLimitPolicy(400))
    sqlite_host, redis_host = hosts(tmp_path, 2)
    with serve_in_thread(sim) as base_url:
        api = ("--base-url", base_url, "--time-scale", f"{SCALE:g}", "--yes")
        batch = ("batch", "prompts.txt", "--out", "out", *api)
        url = ("--redis", redis_server.url)
        assert sora2(*batch, cwd=sqlite_host).returncode == 0  # a SQLite journal
        assert finish([start(base_url, redis_host, redis_server.url)], timeout=60) == [0]
        sent = sim.stats().total_requests
        # A SQLite folder run with --redis (or $NANOPHOTO_REDIS_URL): refused, saying how.
        refused(sora2(*batch, *url, cwd=sqlite_host), "--journal", "SQLite")
        from_env = sora2(*batch, cwd=sqlite_host, NANOPHOTO_REDIS_URL=redis_server.url)
        refused(from_env, "--journal")
        # A Redis folder run without it, with --journal, with another name, key or server.
        refused(sora2(*batch, cwd=redis_host), "--redis URL")
        refused(sora2(*batch, *url, "--journal", "j.sqlite", cwd=redis_host), "drop --journal")
        refused(sora2(*batch, *url, "--batch-name", "other", cwd=redis_host), "--batch-name")
        other_key = sora2(*batch, *url, cwd=redis_host, NANOPHOTO_API_KEY="another-key")
        refused(other_key, "another API key")
        other_db = redis_server.url.rsplit("/", 1)[0] + "/4"
        refused(sora2(*batch, "--redis", other_db, cwd=redis_host), "data was lost")
        # --batch-name names a journal in Redis: alone it means nothing.
        refused(sora2(*batch, "--batch-name", "x", cwd=sqlite_host), "--redis")
        assert sim.stats().total_requests == sent  # every refusal came before any request
        # The documented choice: keep the folder's SQLite journal, the budget in Redis.
        kept = sora2(*batch, *url, "--journal", "out/.sora2-journal.sqlite", cwd=sqlite_host)
        assert kept.returncode == 0, kept.stderr
    assert sim.stats().tasks_created == 2 * PROMPTS
    assert sim.stats().duplicate_prompts == PROMPTS  # the two folders' batches, once each
    assert not (sqlite_host / "out" / ".sora2-journal.json").exists()


def test_the_folder_records_the_redis_url_without_its_password(
    tmp_path: Path, redis_server: Any
) -> None:
    user = f"u{time.monotonic_ns()}"
    acl = ["ACL", "SETUSER", user, "on", ">s3cret-pass", "~*", "&*", "+@all"]
    subprocess.run(["redis-cli", "-p", str(redis_server.port), *acl], check=True, timeout=10)
    url = redis_server.url.replace("redis://", f"redis://{user}:s3cret-pass@")
    sim = Simulator(seed="password", time_scale=SCALE, rate_limit=RateLimitPolicy(400))
    (folder,) = hosts(tmp_path, 1)
    with serve_in_thread(sim) as base_url:
        assert finish([start(base_url, folder, url)], timeout=60) == [0]
    files = [p for p in (folder / "out").iterdir() if p.suffix != ".mp4"]
    assert all("s3cret" not in p.read_text(encoding="utf-8") for p in files)
    assert record(folder / "out")["redis"] == redis_server.url.replace("//", f"//{user}@")
    # Its status: the recorded URL lacks the password, so Redis refuses; --redis has it.
    refused_status = sora2("status", "out", cwd=folder)
    assert refused_status.returncode == 2
    assert "--redis URL, with its password" in refused_status.stderr
    assert "s3cret" not in refused_status.stderr
    shown = sora2("status", "out", "--redis", url, cwd=folder)
    assert shown.returncode == 0, shown.stderr
    assert "s3cret" not in shown.stdout + shown.stderr
