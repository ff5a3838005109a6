"""The journal: SQLite storage, and batches that resume from it without paying twice.

Both backends, in virtual time, against the in-process simulator. The SQLite journal works
in worker threads, and trio's autojumping clock moves on while a thread works, so the tests
of a batch's timing use :class:`MemoryJournal` (the protocol, in a dict, no threads); the
SQLite ones check what is stored, and outcomes that no clock can change.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import anyio
import httpx
import pytest

from sora2_async import (
    BatchResult,
    InsufficientCreditsError,
    Journal,
    JournalEntry,
    JournalState,
    RateLimit,
    Sora2Client,
    SQLiteJournal,
    TaskState,
    TaskStatus,
    UncertainSubmissionError,
    VideoRequest,
)
from sora2_async._journal import request_key
from sora2_async._journal_codec import status_fields
from sora2_async.testing import RuleTransport, Simulator

pytestmark = pytest.mark.anyio

KEY = "journal-key-0001"


class MemoryJournal:
    """The :class:`Journal` protocol in a dict: what a Redis store would do, minus Redis."""

    def __init__(self) -> None:
        self.rows: dict[str, JournalEntry] = {}

    async def lookup(self, key: str) -> JournalEntry | None:
        return self.rows.get(key)

    async def entries(self) -> list[JournalEntry]:
        return list(self.rows.values())

    def _put(self, key: str, request: VideoRequest, state: JournalState, **kw: object) -> None:
        old = self.rows.get(key)
        task_id = kw.pop("task_id", None) or (old.task_id if old else None)
        self.rows[key] = JournalEntry(
            key,
            request,
            state,
            task_id=task_id,
            updated_at=time.time(),
            **kw,  # type: ignore[arg-type]
        )

    async def record_intent(self, key: str, request: VideoRequest) -> None:
        self._put(key, request, JournalState.INTENT)

    async def record_task(self, key: str, request: VideoRequest, task_id: str) -> None:
        self._put(key, request, JournalState.SUBMITTED, task_id=task_id)

    async def record_rejected(self, key: str, request: VideoRequest, error: str) -> None:
        self._put(key, request, JournalState.REJECTED, error=error)

    async def record_status(self, key: str, status: TaskStatus) -> None:
        state, fields = status_fields(status)
        self._put(key, self.rows[key].request, JournalState(state), **fields)


class DropGenerate(httpx.AsyncBaseTransport):
    """The simulator, except that the generates of ``prompts`` reach it and lose the answer."""

    def __init__(self, sim: Simulator, prompts: set[str]) -> None:
        self._inner = sim.transport()
        self._prompts = prompts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path.endswith("/generate") and any(
            p.encode() in request.content for p in self._prompts
        ):
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response


def client_for(sim: Simulator, transport: httpx.AsyncBaseTransport | None = None) -> Sora2Client:
    return Sora2Client(KEY, transport=transport or sim.transport(), max_retries=0)


def requests(n: int, prefix: str = "journaled") -> list[VideoRequest]:
    return [VideoRequest(f"{prefix} {i}") for i in range(n)]


async def run_batch(
    client: Sora2Client, items: list[VideoRequest], journal: Journal, **kwargs: object
) -> list[BatchResult]:
    async with client.batch(items, journal=journal, **kwargs) as results:  # type: ignore[arg-type]
        return [r async for r in results]


async def test_sqlite_journal_records_each_step_durably(tmp_path: Path) -> None:
    request = VideoRequest("a heron", model_tier="sora2-pro-standard", duration=15)
    key = request_key(request)
    async with SQLiteJournal(tmp_path / "sub" / "j.sqlite") as journal:
        assert isinstance(journal, Journal)
        assert await journal.lookup(key) is None
        await journal.record_intent(key, request)
        entry = await journal.lookup(key)
        assert entry is not None
        assert (entry.state, entry.uncertain, entry.request) == (JournalState.INTENT, True, request)
        await journal.record_task(key, request, "task-1")
        status = TaskStatus("task-1", TaskState.COMPLETED, video_url="https://v/1.mp4")
        await journal.record_status(key, status)
        with pytest.raises(KeyError):
            await journal.record_status("nope", status)
    # A new connection (another process, after a crash) sees everything.
    async with SQLiteJournal(tmp_path / "sub" / "j.sqlite") as journal:
        (entry,) = await journal.entries()
    assert entry.state is JournalState.COMPLETED
    assert entry.task_id == "task-1"
    assert entry.final_status() == status
    with pytest.raises(RuntimeError, match="closed"):
        await journal.lookup(key)


async def test_a_failed_status_keeps_the_error(tmp_path: Path) -> None:
    request = VideoRequest("a storm")
    async with SQLiteJournal(tmp_path / "j.sqlite") as journal:
        await journal.record_task("k", request, "t")
        await journal.record_status("k", TaskStatus("t", TaskState.FAILED, error_code="X"))
        entry = await journal.lookup("k")
    assert entry is not None
    status = entry.final_status()
    assert status is not None
    assert (status.state, status.error_code, status.error) == (
        TaskState.FAILED,
        "X",
        "video generation failed",
    )


def test_request_keys_follow_content_and_copies() -> None:
    a, b = VideoRequest("same"), VideoRequest("same")
    assert request_key(a) == request_key(b) != request_key(a, 1)
    assert request_key(a) != request_key(VideoRequest("same", aspect_ratio="landscape"))


async def test_a_batch_run_again_sends_nothing(tmp_path: Path) -> None:
    sim = Simulator(seed=4, failure_rate=0.25)
    items = [*requests(6), VideoRequest("journaled 0")]  # a duplicate is its own request
    async with SQLiteJournal(tmp_path / "j.sqlite") as journal:
        async with client_for(sim) as client:
            first = await run_batch(client, items, journal)
        sent = sim.stats().total_requests
        async with client_for(sim) as client:
            again = await run_batch(client, items, journal)
        entries = await journal.entries()
    assert sim.stats().total_requests == sent  # every outcome came from the journal
    assert sim.stats().tasks_created == 7
    assert {e.state for e in entries} <= {JournalState.COMPLETED, JournalState.FAILED}
    assert len(entries) == 7

    def outcome(results: list[BatchResult]) -> set[tuple[str | None, bool]]:
        return {(r.task.task_id if r.task else None, r.ok) for r in results}

    assert outcome(first) == outcome(again)
    assert any(not r.ok for r in again)  # failures come back as failures, not re-sent


async def test_submitted_tasks_are_followed_not_resubmitted() -> None:
    sim = Simulator(seed=5)
    items = requests(4)
    journal = MemoryJournal()
    async with client_for(sim) as client:
        # An earlier run that was killed after two tasks were accepted.
        for request in items[:2]:
            task = await client.generate(request)
            await journal.record_task(request_key(request), request, task.task_id)
    async with client_for(sim) as client:
        results = await run_batch(client, items, journal)
    assert all(r.ok for r in results)
    assert sim.stats().tasks_created == 4
    assert sim.stats().duplicate_prompts == 0


async def test_an_unanswered_generate_is_uncertain_and_not_resent() -> None:
    sim = Simulator(seed=6)
    items = requests(3)
    lost = DropGenerate(sim, {"journaled 1"})
    journal = MemoryJournal()
    async with client_for(sim, lost) as client:
        first = await run_batch(client, items, journal)
    assert [r.ok for r in first].count(False) == 1
    entry = await journal.lookup(request_key(items[1]))
    assert entry is not None
    assert entry.uncertain
    async with client_for(sim) as client:
        again = await run_batch(client, items, journal)
    (refused,) = [r for r in again if not r.ok]
    assert isinstance(refused.error, UncertainSubmissionError)
    assert refused.request == items[1]
    assert sim.stats().tasks_created == 3  # the lost answer's task does exist
    async with client_for(sim) as client:
        forced = await run_batch(client, items, journal, resubmit_uncertain=True)
    assert all(r.ok for r in forced)
    assert sim.stats().duplicate_prompts == 1  # what the user asked for, knowingly


async def test_a_refused_generate_is_sent_again_next_time() -> None:
    sim = Simulator(seed=7, api_keys={KEY: 4})  # one sora2 video's worth of credits
    items = requests(2)
    journal = MemoryJournal()
    async with client_for(sim) as client:
        first = await run_batch(client, items, journal)
    assert sum(isinstance(r.error, InsufficientCreditsError) for r in first) == 1
    states = sorted(e.state.value for e in await journal.entries())
    assert states == ["completed", "rejected"]
    sim.add_key(KEY, 100)  # topped up
    async with client_for(sim) as client:
        again = await run_batch(client, items, journal)
    assert all(r.ok for r in again)
    assert sim.stats().tasks_created == 2


async def test_intent_is_recorded_only_once_the_budget_admits() -> None:
    sim = Simulator(seed=8)
    seen: list[JournalState | None] = []
    journal = MemoryJournal()
    record_intent = journal.record_intent

    async def spy(key: str, request: VideoRequest) -> None:
        seen.append(None)  # called: nothing was sent for it yet
        assert sim.stats().tasks_created == len(seen) - 1
        await record_intent(key, request)

    journal.record_intent = spy  # type: ignore[method-assign]
    async with sim.client(KEY, rate_limit=RateLimit(2)) as client:
        # The first video takes the two slots; the second waits for budget and is
        # cancelled while waiting: it never went out, so it must leave no intent.
        with anyio.move_on_after(600):
            await run_batch(client, requests(2), journal)
    entries = {e.request.prompt: e.state for e in await journal.entries()}
    assert entries == {"journaled 0": JournalState.COMPLETED}
    assert len(seen) == 1


async def test_an_attempt_refused_with_a_429_clears_its_intent_until_the_retry() -> None:
    """The intent is written just before each attempt's bytes go out, and cleared by an
    attempt that provably created nothing: a Ctrl-C while the retry waits for budget leaves
    no false "may have been charged"."""
    sim = Simulator(seed=9)
    calls: list[str] = []
    refused_once: set[str] = set()

    def rule(request: httpx.Request) -> httpx.Response | None:
        prompt = json.loads(request.content).get("prompt", "")
        if request.url.path.endswith("/generate") and prompt not in refused_once:
            refused_once.add(prompt)
            body = {
                "success": False,
                "error": "slow down",
                "errorCode": "API_KEY_RATE_LIMIT_EXCEEDED",
            }
            return httpx.Response(429, json=body, headers={"Retry-After": "1"})
        return None

    class Hooks:
        def __init__(self, name: str) -> None:
            self.name = name

        async def before_send(self) -> None:
            calls.append(f"{self.name}: intent")

        async def not_sent(self, reason: str) -> None:
            assert "slow down" in reason
            calls.append(f"{self.name}: cleared")

    async with Sora2Client(KEY, transport=RuleTransport(sim, rule)) as client:
        async with anyio.create_task_group() as tg:
            for name in ("a", "b"):
                tg.start_soon(
                    functools.partial(client._submit, VideoRequest(name), hooks=Hooks(name))
                )
        await client.generate(VideoRequest("no hook"))
    for name in ("a", "b"):
        assert [c for c in calls if c.startswith(name)] == [
            f"{name}: intent",
            f"{name}: cleared",
            f"{name}: intent",
        ]
    assert sim.stats().tasks_created == 3


async def test_a_batch_cancelled_while_a_refused_submission_waits_leaves_nothing_uncertain() -> (
    None
):
    sim = Simulator(seed=9)
    journal = MemoryJournal()

    def rule(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/generate"):
            body = {"success": False, "error": "busy", "errorCode": "API_KEY_RATE_LIMIT_EXCEEDED"}
            return httpx.Response(429, json=body, headers={"Retry-After": "600"})
        return None

    async with Sora2Client(KEY, transport=RuleTransport(sim, rule)) as client:
        with anyio.move_on_after(30):  # Ctrl-C while the retry waits out the Retry-After
            await run_batch(client, requests(1), journal)
    entries = await journal.entries()
    assert [e.state for e in entries] == [JournalState.REJECTED]
    assert not any(e.uncertain for e in entries)
    assert sim.stats().tasks_created == 0


class SlowGenerate(httpx.AsyncBaseTransport):
    """The simulator, with every generate's answer taking ``delay`` seconds."""

    def __init__(self, sim: Simulator, delay: float) -> None:
        self._inner = sim.transport()
        self._delay = delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path.endswith("/generate"):
            await anyio.sleep(self._delay)
        return response


async def test_a_generate_in_flight_when_cancelled_still_records_its_task() -> None:
    sim = Simulator(seed=10)
    journal = MemoryJournal()
    async with client_for(sim, SlowGenerate(sim, 5.0)) as client:
        with anyio.move_on_after(1.0):  # Ctrl-C while the first answer is on its way
            await run_batch(client, requests(3), journal)
    states = [e.state for e in await journal.entries()]
    assert states == [JournalState.SUBMITTED]  # its answer came back: not uncertain
    assert sim.stats().tasks_created == 1  # and nothing was sent after the cancel
