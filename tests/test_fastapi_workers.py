"""The FastAPI example under a real ``uvicorn --workers 4``, on one key, the way it is deployed.

The simulator serves the API over HTTP (in this process, ``SCALE`` times faster than the real
one); the app runs as ``uvicorn fastapi_app:app --workers 4`` in processes of its own, its
workers sharing the SQLite store files of one state folder, or a real ``redis-server``. Half
the POSTs repeat an earlier one's Idempotency-Key; every request goes on a fresh connection,
so that they land on every worker (``tests/apps/worker_app.py`` serves the example with an
``X-Worker`` header that says which answered); one worker is killed with SIGKILL mid-run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from sora2_async._fingerprint import key_fingerprint
from sora2_async.testing import Simulator, serve_in_thread
from tests.fastapi_helpers import api_requests, free_port

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio-real", "trio-real"], indirect=True),
]

SCALE = 240.0  # a sora2 video takes 0.25-0.75 s; the budget's hour, 15 s
KEY = "workers-test-key"
DISTINCT = 60  # videos asked for, each POSTed twice with one Idempotency-Key: the budget binds
WORKERS = 4
APPS = Path(__file__).parent / "apps"  # worker_app: the example, saying which worker answered


def children_of(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (uvicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Records:
    """The app's video records, read straight from its store (what the workers share)."""

    def __init__(self, kind: str, state: Path, base_url: str, redis_url: str | None) -> None:
        self.kind, self.redis_url = kind, redis_url
        fingerprint = key_fingerprint(KEY, base_url)
        self.path = state / "sora2-async" / f"videos-{fingerprint}.sqlite"
        self.hash = f"{{sora2:{fingerprint}:videos:app}}:videos"

    async def all(self) -> list[dict[str, Any]]:
        """Every record as a mapping of its fields (``state``, ``owner``, ...)."""
        if self.kind == "sqlite":
            if not self.path.exists():
                return []
            with sqlite3.connect(self.path) as db:
                db.row_factory = sqlite3.Row
                return [dict(row) for row in db.execute("SELECT * FROM videos")]
        import coredis

        assert self.redis_url is not None
        async with coredis.Redis.from_url(self.redis_url, decode_responses=True) as client:
            rows = await client.hgetall(self.hash)
        return [json.loads(text) for text in rows.values()]


async def fresh(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a connection of its own (``http`` keeps none alive, so the kernel hands
    each to any worker), tried again when it hit the worker being killed."""
    for attempt in range(20):
        try:
            return await http.request(method, path, **kwargs)
        except httpx.TransportError:
            if attempt == 19:
                raise
            await anyio.sleep(0.1)
    raise AssertionError("unreachable")


class Deployment:
    """``uvicorn fastapi_app:app --workers 4`` in front of the simulator: start, stop, kill."""

    def __init__(self, env: dict[str, str], log: Any, records: Records) -> None:
        self.env, self.log, self.records = env, log, records
        self.port = free_port()
        self.process: Any = None
        self.answered: Counter[str] = Counter()  # answers by worker pid

        async def count(response: httpx.Response) -> None:
            self.answered[response.headers.get("x-worker", "?")] += 1

        limits = httpx.Limits(max_keepalive_connections=0)  # a fresh connection each time
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=10,
            limits=limits,
            event_hooks={"response": [count]},
        )

    def workers(self) -> list[int]:
        """The worker processes' pids."""
        return children_of(self.process.pid)

    async def start(self) -> None:
        command = [sys.executable, "-m", "uvicorn", "worker_app:app", "--app-dir"]
        command += [str(APPS), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--workers", str(WORKERS)]
        self.process = await anyio.open_process(
            command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while len(self.workers()) < WORKERS or not _answers(self.port):
            assert self.process.returncode is None, f"uvicorn died starting:\n{self.output()}"
            assert time.monotonic() < deadline, f"uvicorn did not start:\n{self.output()}"
            await anyio.sleep(0.1)

    async def stop(self) -> None:
        """Ctrl-C, and wait (killing it all only if it does not stop)."""
        if self.process is None or self.process.returncode is not None:
            return
        workers = self.workers()
        self.process.send_signal(signal.SIGINT)
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(15):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
                for pid in workers:  # orphans of a uvicorn that would not stop
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    async def kill_everything(self) -> None:
        """SIGKILL uvicorn and every worker at once, at a moment when no generate is on the
        wire (all frozen with SIGSTOP first, then looked at: see :func:`kill_a_worker`)."""
        pids = [self.process.pid, *self.workers()]
        for _ in range(200):
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            await anyio.sleep(0.05)
            if all(r["state"] != "submitting" for r in await self.records.all()):
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                await self.process.wait()
                return
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            await anyio.sleep(0.05)
        raise AssertionError("found no moment to kill the app")

    def output(self) -> str:
        """What uvicorn and its workers wrote so far (read through a handle of its own: theirs
        share the offset of the one they write with)."""
        return Path(self.log.name).read_bytes().decode(errors="replace")


@pytest.fixture(params=["sqlite", "redis"])
async def app(
    request: pytest.FixtureRequest, tmp_path: Path, state_folder: Path
) -> AsyncIterator[tuple[Deployment, Simulator]]:
    """The simulator over HTTP, and the example deployed (started) in front of it."""
    sim = Simulator(seed=41, time_scale=SCALE, failure_rate=0.0)
    redis_url = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_server").url
        import coredis

        async with coredis.Redis.from_url(redis_url) as client:
            await client.flushall()  # a fresh budget and store for this run
    with serve_in_thread(sim) as api_url, (tmp_path / "uvicorn.log").open("w+b") as log:
        env = {
            **os.environ,
            "NANOPHOTO_API_KEY": KEY,
            "NANOPHOTO_BASE_URL": api_url,
            "SORA2_TIME_SCALE": str(SCALE),
            "XDG_STATE_HOME": str(state_folder),
        }
        env.pop("NANOPHOTO_REDIS_URL", None)
        if redis_url:
            env["NANOPHOTO_REDIS_URL"] = redis_url
        records = Records(request.param, state_folder, api_url, redis_url)
        deployment = Deployment(env, log, records)
        try:
            await deployment.start()
            yield deployment, sim
        finally:
            await deployment.http.aclose()
            await deployment.stop()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def kill_a_worker(app: Deployment) -> tuple[int, int]:
    """SIGKILL the worker that holds the most unfinished videos, at a moment when none of its
    generates is on the wire (frozen with SIGSTOP, then looked at): a generate whose answer
    dies with its worker is uncertain by design, and would not be sent again. Returns its pid
    and how many unfinished videos it held."""
    host = socket.gethostname()
    for _ in range(200):
        records = await app.records.all()
        holders: dict[int, int] = {}
        for record in records:
            owner = record.get("owner") or ""
            if record["state"] in ("queued", "processing") and owner.startswith(f"{host}-"):
                pid = int(owner.split("-")[-2])
                holders[pid] = holders.get(pid, 0) + 1
        workers = set(app.workers())
        candidates = sorted((n, pid) for pid, n in holders.items() if pid in workers)
        if candidates:
            victim = candidates[-1][1]
            os.kill(victim, signal.SIGSTOP)
            await anyio.sleep(0.05)  # a write it had begun is committed or not at all
            states = [
                r["state"]
                for r in await app.records.all()
                if (r.get("owner") or "").startswith(f"{host}-{victim}-")
            ]
            if "submitting" not in states:
                os.kill(victim, signal.SIGKILL)
                return victim, len(states)
            os.kill(victim, signal.SIGCONT)
        await anyio.sleep(0.05)
    raise AssertionError("found no moment to kill a worker")


async def test_many_workers_take_videos_at_once_once_each_and_answer_for_all(
    app: tuple[Deployment, Simulator],
) -> None:
    deployment, sim = app
    http = deployment.http
    prompts = [f"workers {i}" for i in range(DISTINCT)]
    ids: dict[int, list[str]] = {i: [] for i in range(DISTINCT)}
    takers: dict[int, list[str]] = {i: [] for i in range(DISTINCT)}  # which worker answered
    slowest = 0.0

    async def post(i: int) -> None:
        nonlocal slowest
        started = time.monotonic()
        body = {"prompt": prompts[i], "model_tier": "sora2"}
        response = await fresh(
            http, "POST", "/videos", json=body, headers={"Idempotency-Key": f"key-{i}"}
        )
        slowest = max(slowest, time.monotonic() - started)
        assert response.status_code == 202, f"{response.text}\n{deployment.output()}"
        ids[i].append(response.json()["id"])
        takers[i].append(response.headers["x-worker"])

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for i in range(DISTINCT):
                group.start_soon(post, i)
        async with anyio.create_task_group() as group:  # the repeats, once the first landed
            for i in range(DISTINCT):
                group.start_soon(post, i)
    # A POST answers at once, never waiting for its generate: the budget binds (120 requests
    # for 100 a window), so the last generates wait for the window to free, 15 s from the
    # first. A third of that is far from both (a loaded CI machine took 1.35 s).
    assert slowest < 3600.0 / SCALE / 3, f"a POST took {slowest:.2f} s"
    assert all(len(set(got)) == 1 for got in ids.values()), ids  # repeats: the same id
    elsewhere = sum(len(set(pair)) == 2 for pair in takers.values())
    assert elsewhere >= 1  # some repeats reached another worker than their first POST
    # A repeat with another body is refused, and changes nothing.
    response = await fresh(
        http, "POST", "/videos", json={"prompt": "else"}, headers={"Idempotency-Key": "key-0"}
    )
    assert response.status_code == 409, response.text

    victim, held = await kill_a_worker(deployment)
    assert held >= 1  # so that the videos it held had to be taken over to complete
    not_found: list[str] = []
    final: dict[str, dict[str, Any]] = {}

    async def follow(video_id: str) -> None:
        while True:
            response = await fresh(http, "GET", f"/videos/{video_id}")
            if response.status_code == 404:
                not_found.append(video_id)
            elif response.status_code == 200 and response.json()["state"] not in (
                "queued",
                "processing",
            ):
                final[video_id] = response.json()
                return
            await anyio.sleep(0.2)

    with anyio.fail_after(90):
        async with anyio.create_task_group() as group:
            for got in ids.values():
                group.start_soon(follow, got[0])
    stats = sim.stats()
    output = deployment.output()
    assert len(set(deployment.answered) - {"?"}) >= WORKERS  # every worker answered some
    assert not_found == [], output
    assert {view["state"] for view in final.values()} == {"completed"}, final
    assert stats.tasks_created == DISTINCT, output
    assert stats.duplicate_prompts == 0
    assert stats.responses_429 == 0, output
    assert stats.max_requests_in_window <= 100
    assert api_requests(stats) > 100  # more than one window's worth: the budget bound
    assert "Traceback" not in output, output
    print(
        f"\n{WORKERS} workers, {2 * DISTINCT} POSTs (slowest {slowest * 1000:.0f} ms), "
        f"{DISTINCT} tasks, {api_requests(stats)} API requests (at most "
        f"{stats.max_requests_in_window} in a window), worker {victim} killed holding {held}; "
        f"answers by worker: {sorted(deployment.answered.values())}; {elsewhere} repeats "
        "answered by another worker than the first"
    )


async def test_a_restart_resumes_every_video_the_app_had_taken(
    app: tuple[Deployment, Simulator],
) -> None:
    deployment, sim = app
    count = 20
    ids = []
    for i in range(count):
        response = await fresh(deployment.http, "POST", "/videos", json={"prompt": f"again {i}"})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    with anyio.fail_after(30):  # mid-run: some submitted, the rest still to come
        while sim.stats().tasks_created < 3:  # noqa: ASYNC110 (another process)
            await anyio.sleep(0.02)
    await deployment.kill_everything()
    unfinished = [
        r for r in await deployment.records.all() if r["state"] in ("queued", "processing")
    ]
    assert unfinished  # the crash left work behind
    await deployment.start()  # the leases of the dead have lapsed, or will
    final: dict[str, str] = {}
    with anyio.fail_after(60):
        while len(final) < count:
            for video_id in ids:
                response = await fresh(deployment.http, "GET", f"/videos/{video_id}")
                assert response.status_code == 200, response.text
                if response.json()["state"] not in ("queued", "processing"):
                    final[video_id] = response.json()["state"]
            await anyio.sleep(0.2)
    stats = sim.stats()
    assert set(final.values()) == {"completed"}, final
    assert stats.tasks_created == count
    assert stats.duplicate_prompts == 0
    assert stats.responses_429 == 0, deployment.output()
    print(f"\nrestarted with {len(unfinished)} of {count} unfinished: all completed, once each")


@pytest.mark.parametrize(("workers", "warned"), [(2, True), (1, False)])
async def test_a_memory_store_under_several_workers_is_warned_of(
    tmp_path: Path, workers: int, warned: bool
) -> None:
    port = free_port()
    env = {**os.environ, "NANOPHOTO_API_KEY": KEY}
    command = [sys.executable, "-m", "uvicorn", "memory_app:app", "--app-dir", str(APPS)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    path = tmp_path / "uvicorn.log"
    with path.open("wb") as log:
        process = await anyio.open_process(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with anyio.fail_after(30):
                while log_text(path).count("Application startup complete") < workers:
                    assert process.returncode is None, log_text(path)
                    await anyio.sleep(0.1)
        finally:
            process.send_signal(signal.SIGINT)
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
    output = log_text(path)
    assert output.count("several workers") == (workers if warned else 0), output


def log_text(path: Path) -> str:
    """What a server wrote so far (read through a handle of its own: the server's shares
    the offset of the one it writes with)."""
    return path.read_bytes().decode(errors="replace")
