"""Answers that are not the API's, failures without a task id, and tasks nobody follows any more.

In-process simulator behind a ``RuleTransport``, virtual time, both backends:

* a proxy's page (HTML 404/401, no ``errorCode``) on a status check is passing, and is asked
  again on the poll plan, never taken for the API's final word;
* ``500 GENERATION_FAILED`` without a ``taskId`` is the polled task's failure;
* a ``run()`` cancelled after its generate went out leaves its task findable: a WARNING with
  the task id and the prompt, and ``client.orphaned_tasks``;
* a generate whose answer was lost says where to look for the task, and logs the prompt and
  the time.
"""

from __future__ import annotations

import logging

import anyio
import httpx
import pytest

from sora2_async import (
    APIConnectionError,
    GenerationFailedError,
    Sora2Client,
    TaskNotFoundError,
    TaskState,
    VideoRequest,
)
from sora2_async.testing import RuleTransport, Simulator

pytestmark = pytest.mark.anyio

KEY = "reliability-key"


def status_path(request: httpx.Request) -> bool:
    return request.url.path.endswith("/check-status")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, "<html><body>Not Found</body></html>"),
        (401, "<html><body>Sign in to the proxy</body></html>"),
        (403, '{"message": "forbidden by the gateway"}'),  # JSON, but not the API's shape
    ],
)
async def test_a_proxy_page_on_a_status_check_is_asked_again_not_final(
    status: int, body: str
) -> None:
    sim = Simulator(seed=3)
    pages = [0]

    def proxy(request: httpx.Request) -> httpx.Response | None:
        if status_path(request) and pages[0] < 2:
            pages[0] += 1
            return httpx.Response(status, text=body, headers={"content-type": "text/html"})
        return None

    async with Sora2Client(KEY, transport=RuleTransport(sim, proxy)) as client:
        with anyio.fail_after(3600):
            video = await client.run(VideoRequest("a proxy in the way"))
    assert pages[0] == 2
    assert video.url.startswith("http")


async def test_an_api_404_with_its_error_code_is_final() -> None:
    """The API's own answer (JSON with ``errorCode``) still ends the wait at once."""
    sim = Simulator(seed=3)
    async with Sora2Client(KEY, transport=sim.transport()) as client:
        with pytest.raises(TaskNotFoundError):
            await client.wait("no-such-task")
    assert sim.stats().requests_by_endpoint.get("check_status") == 1


async def test_generation_failed_without_a_task_id_is_the_polled_tasks_failure() -> None:
    sim = Simulator(seed=4)
    polls = [0]

    def failed(request: httpx.Request) -> httpx.Response | None:
        if status_path(request):
            polls[0] += 1
            body = {"success": False, "error": "moderation", "errorCode": "GENERATION_FAILED"}
            return httpx.Response(500, json=body)
        return None

    async with Sora2Client(KEY, transport=RuleTransport(sim, failed)) as client:
        task = await client.generate(VideoRequest("a refused video"))
        with pytest.raises(GenerationFailedError) as info:
            await client.wait(task)
    assert polls[0] == 1  # terminal at once: not a server error to retry
    assert info.value.status.task_id == task.task_id
    assert info.value.status.state is TaskState.FAILED


async def test_a_run_cancelled_after_its_generate_leaves_its_task_findable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = Simulator(seed=5)
    async with sim.client(KEY, time_scale=1.0) as client:
        with anyio.move_on_after(30):  # the video takes a minute or more: cancelled mid-wait
            await client.run(VideoRequest("a video nobody waited for"))
        orphans = client.orphaned_tasks
        assert [t.request.prompt for t in orphans if t.request] == ["a video nobody waited for"]
        (task,) = orphans
        assert task.task_id in sim.tasks
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any(
            task.task_id in r.getMessage() and "a video nobody waited for" in r.getMessage()
            for r in warnings
        )
        video = await client.wait(task)  # and it can still be followed
    assert video.task_id == task.task_id
    assert sim.stats().tasks_created == 1


async def test_a_run_cancelled_before_its_generate_went_out_leaves_no_orphan() -> None:
    sim = Simulator(seed=5)
    async with sim.client(KEY, time_scale=1.0) as client:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await client.run(VideoRequest("never sent"))
        assert client.orphaned_tasks == []
    assert sim.stats().tasks_created == 0


async def test_a_lost_generate_answer_says_where_to_look_and_logs_prompt_and_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = Simulator(seed=6)

    class LoseTheAnswer(httpx.AsyncBaseTransport):
        """The simulator makes the task; its answer is lost on the way back."""

        def __init__(self) -> None:
            self.inner = sim.transport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if request.url.path.endswith("/generate"):
                raise httpx.ReadError("connection reset", request=request)
            return response

    async with Sora2Client(KEY, transport=LoseTheAnswer()) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.generate(VideoRequest("a corgi lost in transit"))
    assert info.value.request_sent
    assert "dashboard" in str(info.value)
    assert sim.stats().tasks_created == 1  # it exists: that is why it was not re-sent
    (record,) = [r for r in caplog.records if "dashboard" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "a corgi lost in transit" in record.getMessage()
    assert "UTC" in record.getMessage() or "+00:00" in record.getMessage()
