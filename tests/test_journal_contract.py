"""The journal contract: every journal (memory, SQLite, Redis) records alike, on asyncio and trio.

Each test runs against each kind (the ``journals`` fixture) on each backend, in virtual time,
and looks only at what the protocol shows: ``lookup``, ``entries`` and what a batch run
against the simulator does with the journal. The Redis journal runs on a real
``redis-server``, reading the test's virtual clock (see ``tests/journal_helpers.py``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sora2_async import (
    BatchResult,
    Journal,
    JournalState,
    Sora2Client,
    TaskState,
    TaskStatus,
    UncertainSubmissionError,
    VideoRequest,
)
from sora2_async._journal import FollowerLeases, request_key
from sora2_async.testing import Simulator
from tests.journal_helpers import JOURNAL_KINDS, Journals, journals_of

pytestmark = pytest.mark.anyio

KEY = "journal-contract-key"
HERON = VideoRequest(
    "a heron — über the fjord, 夜",
    model_tier="sora2-pro-standard",
    aspect_ratio="landscape",
    duration=15,
)
PICTURE = VideoRequest("this picture, moving", image_urls=("https://example.com/a.png",))


@pytest.fixture(params=JOURNAL_KINDS)
async def journals(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journals]:
    async with journals_of(request.param, request, tmp_path) as made:
        yield made


async def test_nothing_recorded_is_none(journals: Journals) -> None:
    journal = journals.make()
    assert isinstance(journal, Journal)
    assert isinstance(journal, FollowerLeases) is (journals.kind == "redis")
    assert await journal.lookup(request_key(HERON)) is None
    assert await journal.entries() == []


@pytest.mark.parametrize("request_", [HERON, PICTURE], ids=["pro", "image"])
async def test_each_step_is_recorded_and_seen_by_another_owner(
    journals: Journals, request_: VideoRequest
) -> None:
    journal = journals.make()
    key = request_key(request_)
    before = time.time()
    await journal.record_intent(key, request_)
    entry = await journal.lookup(key)
    assert entry is not None
    assert (entry.key, entry.state, entry.uncertain) == (key, JournalState.INTENT, True)
    assert entry.request == request_
    assert entry.task_id is None
    assert entry.final_status() is None
    assert before <= entry.updated_at <= time.time()  # wall-clock time of the change

    await journal.record_task(key, request_, "task-1")
    entry = await journals.other(journal).lookup(key)
    assert entry is not None
    assert (entry.state, entry.task_id, entry.uncertain) == (
        JournalState.SUBMITTED,
        "task-1",
        False,
    )

    status = TaskStatus(
        "task-1",
        TaskState.COMPLETED,
        video_url="https://v/1.mp4",
        generation_time=123.5,
        credits_used=12,
    )
    await journal.record_status(key, status)
    (entry,) = await journals.other(journal).entries()
    assert entry.state is JournalState.COMPLETED
    assert entry.request == request_
    assert entry.final_status() == status
    assert (entry.generation_time, entry.credits_used) == (123.5, 12)


async def test_a_failure_keeps_its_error_and_a_default_message(journals: Journals) -> None:
    journal = journals.make()
    await journal.record_task("a", HERON, "t-a")
    await journal.record_task("b", HERON, "t-b")
    await journal.record_status("a", TaskStatus("t-a", TaskState.FAILED, error_code="X"))
    await journal.record_status(
        "b", TaskStatus("t-b", TaskState.FAILED, error="policy", error_code="CONTENT")
    )
    a, b = await journal.entries()
    assert (a.state, a.error, a.error_code, a.video_url) == (
        JournalState.FAILED,
        "video generation failed",
        "X",
        None,
    )
    status = b.final_status()
    assert status is not None
    assert (status.state, status.error, status.error_code) == (
        TaskState.FAILED,
        "policy",
        "CONTENT",
    )


async def test_a_status_for_nothing_recorded_is_a_key_error(journals: Journals) -> None:
    journal = journals.make()
    with pytest.raises(KeyError):
        await journal.record_status("nope", TaskStatus("t", TaskState.COMPLETED, video_url="u"))
    assert await journal.entries() == []


async def test_a_rejection_or_a_late_intent_keeps_the_task_id(journals: Journals) -> None:
    journal = journals.make()
    await journal.record_intent("k", HERON)
    await journal.record_rejected("k", HERON, "not sent: 429")
    entry = await journal.lookup("k")
    assert entry is not None
    assert (entry.state, entry.error, entry.task_id) == (
        JournalState.REJECTED,
        "not sent: 429",
        None,
    )
    await journal.record_task("k", HERON, "t-1")
    await journal.record_intent("k", HERON)  # a later write without a task id erases none
    entry = await journal.lookup("k")
    assert entry is not None
    assert (entry.state, entry.task_id, entry.error) == (JournalState.INTENT, "t-1", None)


async def test_entries_come_oldest_first_whatever_changes_later(journals: Journals) -> None:
    journal = journals.make()
    keys = [f"key-{i}" for i in (3, 1, 2, 0)]
    for key in keys:
        await journal.record_intent(key, VideoRequest(key))
    await journal.record_task(keys[0], VideoRequest(keys[0]), "t-0")
    await journal.record_status(keys[0], TaskStatus("t-0", TaskState.COMPLETED, video_url="u"))
    await journal.record_rejected(keys[2], VideoRequest(keys[2]), "refused")
    entries = await journals.other(journal).entries()
    assert [e.key for e in entries] == keys
    assert [e.request.prompt for e in entries] == keys
    assert [e.state for e in entries] == [
        JournalState.COMPLETED,
        JournalState.INTENT,
        JournalState.REJECTED,
        JournalState.INTENT,
    ]


# -- what a batch makes of it ----------------------------------------------------------------


def client_for(sim: Simulator) -> Sora2Client:
    return Sora2Client(KEY, transport=sim.transport(), max_retries=0)


async def run_batch(
    client: Sora2Client, items: list[VideoRequest], journal: Journal
) -> list[BatchResult]:
    async with client.batch(items, journal=journal) as results:
        return [r async for r in results]


async def test_a_batch_run_again_sends_nothing(journals: Journals) -> None:
    sim = Simulator(seed=4, failure_rate=0.25)
    items = [VideoRequest(f"contract {i}") for i in range(5)] + [VideoRequest("contract 0")]
    journal = journals.make()
    async with client_for(sim) as client:
        first = await run_batch(client, items, journal)
    sent = sim.stats().total_requests
    async with client_for(sim) as client:
        again = await run_batch(client, items, journals.other(journal))
    assert sim.stats().total_requests == sent  # every outcome came from the journal
    assert sim.stats().tasks_created == 6

    def outcome(results: list[BatchResult]) -> set[tuple[str | None, bool]]:
        return {(r.task.task_id if r.task else None, r.ok) for r in results}

    assert outcome(first) == outcome(again)
    entries = await journal.entries()
    assert len(entries) == 6
    assert {e.state for e in entries} <= {JournalState.COMPLETED, JournalState.FAILED}


async def test_a_batch_follows_submitted_tasks_and_refuses_uncertain_ones(
    journals: Journals,
) -> None:
    sim = Simulator(seed=5)
    items = [VideoRequest(f"resumed {i}") for i in range(4)]
    journal = journals.make()
    async with client_for(sim) as client:  # an earlier run, killed after two were accepted
        for request in items[:2]:
            task = await client.generate(request)
            await journal.record_task(request_key(request), request, task.task_id)
        await journal.record_intent(request_key(items[2]), items[2])  # its answer was lost
    async with client_for(sim) as client:
        results = await run_batch(client, items, journals.other(journal))
    by_prompt = {r.request.prompt: r for r in results if r.request is not None}
    assert isinstance(by_prompt["resumed 2"].error, UncertainSubmissionError)
    assert all(by_prompt[f"resumed {i}"].ok for i in (0, 1, 3))
    assert sim.stats().tasks_created == 3
    states = {e.request.prompt: e.state for e in await journal.entries()}
    assert states == {
        "resumed 0": JournalState.COMPLETED,
        "resumed 1": JournalState.COMPLETED,
        "resumed 2": JournalState.INTENT,
        "resumed 3": JournalState.COMPLETED,
    }
