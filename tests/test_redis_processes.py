"""One key's budget across "hosts" in Redis: real processes, a real redis-server.

Each ``sora2 batch`` runs as a real process with a state folder of its own, so no file on
this machine is shared between them: only Redis is. The simulator is served over HTTP by
uvicorn in this process; its stats are the server's view of the key. Time is compressed
(``--time-scale``). Every child and every Redis started here is stopped, every wait bounded.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from sora2_async import RateLimit, RequestKind
from sora2_async.testing import RateLimitPolicy, Simulator, serve_in_thread
from tests.cli_helpers import finish, read_until, start_batch, write_prompts
from tests.helpers import RedisServer

SCALE = 720.0  # the budget's hour is 5 s


def hosts(tmp_path: Path, count: int, prompts: int) -> list[Path]:
    folders = []
    for i in range(count):
        folder = tmp_path / f"host{i}"
        (folder / "state").mkdir(parents=True)
        write_prompts(folder / "prompts.txt", prompts, prefix=f"host {i}:")
        folders.append(folder)
    return folders


def run_hosts(base_url: str, folders: list[Path], *extra: str) -> None:
    procs = [
        start_batch(
            base_url,
            folder,
            SCALE,
            *extra,
            to_files=True,
            extra_env={"XDG_STATE_HOME": str(folder / "state")},
        )
        for folder in folders
    ]
    codes = finish(procs, timeout=150)
    for folder, code in zip(folders, codes, strict=True):
        assert code == 0, (folder / "stderr.txt").read_text()


def test_four_hosts_share_one_budget_in_redis(tmp_path: Path, redis_server: Any) -> None:
    sim = Simulator(seed="hosts", time_scale=SCALE, rate_limit=RateLimitPolicy(100))
    folders = hosts(tmp_path, 4, 35)
    with serve_in_thread(sim) as base_url:
        run_hosts(base_url, folders, "--redis", redis_server.url)
    stats = sim.stats()
    assert stats.responses_429 == 0
    assert stats.max_requests_in_window <= 100
    assert stats.tasks_created == 140
    assert stats.duplicate_prompts == 0
    assert all(len(list((f / "out").glob("*.mp4"))) == 35 for f in folders)


def test_four_hosts_without_redis_get_429s(tmp_path: Path) -> None:
    """The same four, each with only its own state folder's store: the key is overspent."""
    sim = Simulator(seed="hosts", time_scale=SCALE, rate_limit=RateLimitPolicy(100))
    folders = hosts(tmp_path, 4, 35)
    with serve_in_thread(sim) as base_url:
        run_hosts(base_url, folders)
    assert sim.stats().responses_429 > 0
    assert sim.stats().max_requests_in_window > 100


def test_redis_restarted_mid_batch_without_its_data(tmp_path: Path) -> None:
    """The batch waits while Redis is down, writes back what it spent when Redis is back,
    and goes on: nothing lost, nothing sent twice, no 429 (none was on the wire)."""
    server = RedisServer()
    try:
        sim = Simulator(seed="restart", time_scale=SCALE, rate_limit=RateLimitPolicy(30))
        write_prompts(tmp_path / "prompts.txt", 40)
        with serve_in_thread(sim) as base_url:
            # The budget's restart: the journal stays in a file (a journal in a Redis without
            # persistence is lost with its data; the folder then refuses to resume from it).
            journal = ("--journal", "out/.sora2-journal.sqlite")
            proc = start_batch(
                base_url, tmp_path, SCALE, "--rate-limit", "30", "--redis", server.url, *journal
            )
            try:
                read_until(proc, 10)  # the budget binds by now
                server.stop()
                time.sleep(1.0)  # down for a fifth of the window
                server.start()
                codes = finish([proc], timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        assert codes == [0]
    finally:
        server.stop()
    stats = sim.stats()
    assert stats.tasks_created == 40
    assert stats.duplicate_prompts == 0
    assert stats.responses_429 <= 2  # at most what was on the wire when the data went
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 40


@pytest.mark.parametrize("anyio_backend", ["asyncio-real", "trio-real"], indirect=True)
@pytest.mark.anyio
async def test_a_process_whose_clock_is_ten_minutes_off_changes_nothing(
    redis_server: Any,
) -> None:
    """Two owners of one key, one with its local clock shifted by ten minutes: the window
    holds across both, and polls still go before submissions, because every time the store
    keeps and compares is the server's."""
    import uuid

    from sora2_async.redis import RedisLimiter

    namespace = f"clock-{uuid.uuid4().hex}"
    knobs: dict[str, Any] = {
        "rate_limit": RateLimit(4, per=1.0),
        "margin": 0.0,
        "starve_after": 1e9,  # no submission starves here: polls go first
    }
    import coredis

    async with coredis.Redis.from_url(redis_server.url, decode_responses=False) as client:
        right = RedisLimiter(client, namespace=namespace, recheck=0.02, **knobs)
        # It never looks again by itself: each of its waits is the script's answer on the
        # server's clock, turned into a sleep on its own shifted one.
        shifted = RedisLimiter(
            client,
            namespace=namespace,
            local_clock=lambda: anyio.current_time() + 600.0,
            recheck=math.inf,
            **knobs,
        )
        stamps: list[tuple[str, float, float]] = []

        async def request(lim: RedisLimiter, name: str, kind: RequestKind) -> None:
            async with lim.permit(kind):
                admitted = time.monotonic()
                await anyio.sleep(0.01)
            stamps.append((name, admitted, time.monotonic()))

        try:
            with anyio.fail_after(20):
                for _ in range(4):  # fill the window
                    await request(right, "fill", RequestKind.POLL)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(request, right, "submission", RequestKind.GENERATE)
                    await anyio.sleep(0.1)
                    tg.start_soon(request, shifted, "poll", RequestKind.POLL)
                async with anyio.create_task_group() as tg:
                    for i in range(12):
                        lim = shifted if i % 2 else right
                        tg.start_soon(request, lim, f"load {i}", RequestKind.POLL)
        finally:
            await right.aclose()
            await shifted.aclose()
    order = [name for name, _, _ in sorted(stamps, key=lambda s: s[1])]
    assert order.index("poll") < order.index("submission")
    # No rolling second ever held more than 4 (each counted from admission to answer + 1 s).
    # The stamps here are taken after the store recorded each answer, a round trip late
    # (milliseconds on a busy machine): an answer counts until 1 s after it, less that slack.
    slack = 0.01
    for _, start, _ in stamps:
        held = [s for s in stamps if s[1] <= start + 1e-3 and s[2] + 1.0 - slack > start]
        assert len(held) <= 4
