"""Odd answers never lose a paid video: strict about what identifies it, lenient about the rest.

The simulator serves the tasks in-process (virtual time, both backends); a transport between
it and the client rewrites the completed answers the way the adversarial run did.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sora2_async import (
    JournalState,
    ResponseValidationError,
    Sora2Client,
    SQLiteJournal,
    Task,
    VideoRequest,
)
from sora2_async.testing import Simulator

pytestmark = pytest.mark.anyio

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


class Rewriting(httpx.AsyncBaseTransport):
    """The simulator's transport, with each completed check-status answer passed through
    ``rewrite`` (while it is set)."""

    def __init__(self, sim: Simulator, rewrite: Rewrite | None) -> None:
        self.inner = sim.transport()
        self.rewrite = rewrite
        self.rewritten = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.rewrite is None or not request.url.path.endswith("/check-status"):
            return response
        body = json.loads(await response.aread())
        if body.get("status") != "completed":
            return httpx.Response(response.status_code, json=body)
        self.rewritten += 1
        return httpx.Response(response.status_code, json=self.rewrite(body))


def client_of(transport: httpx.AsyncBaseTransport) -> Sora2Client:
    return Sora2Client("answers-key", http_client=httpx.AsyncClient(transport=transport))


ODD_OPTIONAL_FIELDS: list[dict[str, Any]] = [
    {"progress": 100},
    {"generationTime": "2 min"},
    {"creditsUsed": "4 credits"},
    {"error": {}},
    {"error": {"detail": None}, "progress": ["done"], "message": 7},
    {"generationTime": -3, "creditsUsed": 4.5},
    {"progress": 100, "generationTime": "2 min", "creditsUsed": "4 credits", "error": {}},
]


@pytest.mark.parametrize("odd", ODD_OPTIONAL_FIELDS)
async def test_a_completed_answer_with_odd_optional_fields_is_the_video(
    odd: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    sim = Simulator(seed="odd")
    transport = Rewriting(sim, lambda body: {**body, **odd})
    caplog.set_level(logging.WARNING, logger="sora2_async")
    async with client_of(transport) as client:
        task = await client.generate("a corgi surfing")
        video = await client.wait(task)
        status = client.known_status(task)
    assert video.url == sim.video_url(task.task_id)
    assert transport.rewritten == 1  # the first completed answer was taken: no poll wasted
    assert status is not None
    assert status.raw is not None
    for field, value in odd.items():
        assert status.raw[field] == value  # the raw value is kept
        assert any(repr(field) in r.getMessage() for r in caplog.records), field
    assert all(r.levelname == "WARNING" for r in caplog.records)
    assert task.task_id in caplog.text


async def test_a_journaled_batch_records_the_video_despite_odd_fields(tmp_path: Path) -> None:
    sim = Simulator(seed="odd-batch")
    odd = ODD_OPTIONAL_FIELDS[-1]
    prompts = [f"a paper boat, take {i}" for i in range(6)]
    async with (
        client_of(Rewriting(sim, lambda body: {**body, **odd})) as client,
        SQLiteJournal(tmp_path / "journal.sqlite") as journal,
    ):
        async with client.batch(prompts, journal=journal) as results:
            got = [result async for result in results]
        entries = await journal.entries()
    assert all(result.ok for result in got)
    assert [e.state for e in entries] == [JournalState.COMPLETED] * 6
    assert all(e.video_url == sim.video_url(e.task_id or "") for e in entries)
    assert sim.stats().tasks_created == 6


BAD_VIDEO_URLS = [
    "/sora/task.mp4",
    "sora/task.mp4",
    "//video.nanophoto.ai/sora/task.mp4",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "data:video/mp4;base64,AAAA",
    "ftp://video.nanophoto.ai/task.mp4",
    "https://",
    "https://video.nanophoto.ai/a b.mp4",
    "https://video.nanophoto.ai/\x00.mp4",
    "http://[::1/task.mp4",
]


@pytest.mark.parametrize("url", BAD_VIDEO_URLS)
async def test_a_bad_video_url_is_a_validation_error_and_the_task_stays_followable(
    url: str,
) -> None:
    sim = Simulator(seed="bad-url")
    transport = Rewriting(sim, lambda body: {**body, "videoUrl": url})
    async with client_of(transport) as client:
        task = await client.generate("a corgi surfing")
        with pytest.raises(ResponseValidationError) as info:
            await client.wait(task)
        assert info.value.field == "videoUrl"
        assert client.known_status(task) is None or not client.known_status(task).done  # type: ignore[union-attr]
        transport.rewrite = None  # the server mends its ways: the same task is followed
        video = await client.wait(Task(task.task_id))
    assert video.url == sim.video_url(task.task_id)
    assert sim.stats().tasks_created == 1


async def test_a_bad_video_url_leaves_the_journal_submitted_and_a_rerun_follows_it(
    tmp_path: Path,
) -> None:
    sim = Simulator(seed="bad-url-batch")
    transport = Rewriting(sim, lambda body: {**body, "videoUrl": "javascript:alert(1)"})
    prompts = ["a fox in the snow", "a hot-air balloon"]
    path = tmp_path / "journal.sqlite"
    async with client_of(transport) as client, SQLiteJournal(path) as journal:
        async with client.batch(prompts, journal=journal) as results:
            first = [result async for result in results]
        assert all(isinstance(r.error, ResponseValidationError) and r.task for r in first)
        assert {e.state for e in await journal.entries()} == {JournalState.SUBMITTED}
        transport.rewrite = None
        async with client.batch(prompts, journal=journal) as results:
            second = [result async for result in results]
        entries = await journal.entries()
    assert all(r.ok for r in second)
    assert {r.task.task_id for r in first if r.task} == {r.task.task_id for r in second if r.task}
    assert {e.state for e in entries} == {JournalState.COMPLETED}
    stats = sim.stats()
    assert stats.tasks_created == 2
    assert stats.requests_by_endpoint["generate"] == 2  # nothing paid twice


async def test_an_answer_about_another_task_is_not_this_tasks_video() -> None:
    sim = Simulator(seed="other-task")
    transport = Rewriting(sim, lambda body: {**body, "taskId": "task_someone_else"})
    async with client_of(transport) as client:
        task = await client.generate(VideoRequest("a corgi surfing"))
        with pytest.raises(ResponseValidationError) as info:
            await client.wait(task)
    assert info.value.field == "taskId"
