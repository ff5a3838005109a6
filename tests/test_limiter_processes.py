"""One key's budget across real OS processes, on the SQLite store, against the HTTP simulator.

Each test starts real ``sora2 batch`` processes (or a small Python child holding leases)
against the simulator served over HTTP by uvicorn in this process, whose stats are the
server's own view: 429s, the most requests of one key in any rolling window, tasks created
per prompt. Time is compressed (``--time-scale``), so the budget's hour is a few seconds.
Every child is stopped when its test ends, and every wait is bounded.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from sora2_async import JournalState, RateLimit, SQLiteLimiter
from sora2_async.testing import RateLimitPolicy, Simulator, serve_in_thread
from tests.cli_helpers import finish, read_until, start_batch, write_prompts

SCALE = 720.0  # the budget's hour is 5 s; a sora2 video (1-3 min) takes 0.08-0.25 s


def journal_entries(out: Path) -> list[tuple[str, str]]:
    path = out / ".sora2-journal.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT state, request FROM entries").fetchall()


def videos_on_disk(out: Path) -> int:
    return len(list(out.glob("*.mp4")))


def run_four(tmp_path: Path, sim: Simulator, base_url: str, *extra: str) -> list[Path]:
    folders = []
    for i in range(4):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        write_prompts(folder / "prompts.txt", 40, prefix=f"run {i}:")
        folders.append(folder)
    procs = [start_batch(base_url, f, SCALE, *extra, to_files=True) for f in folders]
    codes = finish(procs, timeout=150)
    for folder, code in zip(folders, codes, strict=True):
        assert code == 0, (folder / "stderr.txt").read_text()
    return folders


def test_four_processes_on_one_key_share_one_budget_by_default(tmp_path: Path) -> None:
    """The default store (one file per key in the state folder) is shared: 160 videos from
    four folders at once, and the server never counts more than the limit."""
    sim = Simulator(seed="four", time_scale=SCALE, rate_limit=RateLimitPolicy(100))
    with serve_in_thread(sim) as base_url:
        folders = run_four(tmp_path, sim, base_url)
    stats = sim.stats()
    assert stats.responses_429 == 0
    assert stats.max_requests_in_window <= 100
    assert stats.tasks_created == 160
    assert stats.duplicate_prompts == 0
    assert all(videos_on_disk(f / "out") == 40 for f in folders)


def test_four_processes_each_with_a_budget_of_its_own_get_429s(tmp_path: Path) -> None:
    """The same four with ``--budget memory``: each believes it has the whole key, and the
    server says otherwise. This is why the store exists."""
    sim = Simulator(seed="four", time_scale=SCALE, rate_limit=RateLimitPolicy(100))
    with serve_in_thread(sim) as base_url:
        run_four(tmp_path, sim, base_url, "--budget", "memory")
    stats = sim.stats()
    assert stats.responses_429 > 0
    assert stats.max_requests_in_window > 100


def test_a_batch_killed_and_restarted_at_once_gets_no_429_and_pays_nothing_twice(
    tmp_path: Path,
) -> None:
    """The restarted run reads what the killed one spent from the store: no 429 for it,
    no prompt submitted twice, and nothing lost but the generates the kill left uncertain.

    An intent is written just before a generate's bytes go out, so a kill that lands between
    the two leaves an uncertain prompt the server never saw: rare, and safe by design (it is
    not sent again unless asked), so it is counted here rather than refused."""
    sim = Simulator(seed="restart", time_scale=SCALE, rate_limit=RateLimitPolicy(30))
    write_prompts(tmp_path / "prompts.txt", 40)
    limit = ("--rate-limit", "30", "--budget", str(tmp_path / "budget.sqlite"))
    with serve_in_thread(sim) as base_url:
        first = start_batch(base_url, tmp_path, SCALE, *limit)
        try:
            read_until(first, 8)  # the budget binds from about the 15th video on
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=10)
        uncertain = [
            json.loads(request)["prompt"]
            for state, request in journal_entries(tmp_path / "out")
            if state == JournalState.INTENT.value
        ]
        seen = sim.stats().tasks_by_prompt
        assert all(seen.get(prompt, 0) <= 1 for prompt in uncertain)
        never_sent = [prompt for prompt in uncertain if prompt not in seen]
        # A batch submits one request at a time: one intent at most can be caught before
        # its bytes (an intent written at admission, or earlier, would leave more).
        assert len(never_sent) <= 1, never_sent
        again = start_batch(base_url, tmp_path, SCALE, *limit)
        codes = finish([again], timeout=120)
        assert uncertain or codes == [0]
    stats = sim.stats()
    assert stats.responses_429 == 0
    assert stats.max_requests_in_window <= 30
    assert stats.duplicate_prompts == 0
    assert stats.tasks_created == 40 - len(never_sent)  # uncertain ones are not sent again
    assert videos_on_disk(tmp_path / "out") == 40 - len(uncertain)


_HOLDER = """
import sys, time, anyio
from sora2_async import RateLimit, RequestKind, SQLiteLimiter

async def main():
    store = SQLiteLimiter(sys.argv[1], rate_limit=RateLimit(10, per=30.0), lease_ttl=1.5,
                          flight_ttl=2.0, margin=0.0)
    for _ in range(3):
        await store.promise(60.0)
    permit = store.permit(RequestKind.POLL)
    await permit.__aenter__()  # a request on the wire when the process dies
    print("holding", flush=True)
    await anyio.sleep(3600)

anyio.run(main)
"""


@pytest.mark.parametrize("anyio_backend", ["asyncio-real", "trio-real"], indirect=True)
@pytest.mark.anyio
async def test_a_killed_processs_leases_lapse_and_its_requests_count_as_spent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "budget.sqlite"
    async with await anyio.open_process(
        [sys.executable, "-c", textwrap.dedent(_HOLDER), str(path)]
    ) as child:
        try:
            assert child.stdout is not None
            with anyio.fail_after(20):
                line = await child.stdout.receive()
            assert line.strip() == b"holding"
            store = SQLiteLimiter(path, rate_limit=RateLimit(10, per=30.0), margin=0.0)
            try:
                before = await store.snapshot()
                assert (before.reserved, before.used) == (3, 1)
                child.kill()
                await child.wait()
                killed_at = time.time()
                with anyio.fail_after(10):
                    # Another process's state: nothing announces it, so look now and then.
                    while (await store.snapshot()).reserved:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                assert time.time() - killed_at <= 1.5 + 0.5  # within the lease's expiry
                after = await store.snapshot()
                assert after.used == 1  # its request in flight still counts: it may have gone
            finally:
                await store.aclose()
        finally:
            if child.returncode is None:
                child.kill()
