"""Edges found in review: cancellation before sending, error types, the key in contexts."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from sora2_async import APITimeoutError, RateLimit, Sora2Client, VideoRequest
from sora2_async.testing import Simulator

pytestmark = pytest.mark.anyio

KEY = "sk-edge-secret-0123"


class Latency(httpx.AsyncBaseTransport):
    """The simulator, with every check-status answered after ``delay`` seconds."""

    def __init__(self, sim: Simulator, delay: float) -> None:
        self._inner = sim.transport()
        self._delay = delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("check-status"):
            await anyio.sleep(self._delay)
        return await self._inner.handle_async_request(request)


async def test_a_generate_cancelled_while_waiting_for_the_wire_is_never_sent() -> None:
    sim = Simulator(seed=1)
    async with Sora2Client(KEY, transport=Latency(sim, 30), max_concurrent_requests=1) as client:
        first = await client.generate(VideoRequest("first"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.check_status, first)  # holds the only slot for 30 s
            await anyio.sleep(1)
            with anyio.move_on_after(1):
                await client.generate(VideoRequest("second"))
        await anyio.sleep(120)
    assert sim.stats().tasks_created == 1  # "second" never went out
    assert client.budget().reserved == 0


class Timeouts(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)


async def test_wait_reports_api_timeouts_as_such() -> None:
    async with Sora2Client(KEY, transport=Timeouts()) as client:
        with pytest.raises(APITimeoutError):
            await client.wait("task_1")
        with pytest.raises(APITimeoutError):
            await client.wait("task_2", timeout=100_000)


async def test_the_key_is_in_no_exception_context() -> None:
    async with Sora2Client(KEY, transport=Timeouts()) as client:
        with pytest.raises(APITimeoutError) as info:
            await client.check_status("task_1")
    seen = []
    error: BaseException | None = info.value
    while error is not None:
        seen.append(error)
        error = error.__context__ or error.__cause__
    assert all(KEY not in repr(vars(e)) for e in seen if hasattr(e, "__dict__"))
    assert all(not isinstance(e, httpx.HTTPError) for e in seen)


class BadEncoding(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.dumps({"success": True, "status": "processing", "taskId": "t"}).encode()
        return httpx.Response(200, content=body, headers={"content-encoding": "gzip"})


async def test_an_undecodable_answer_is_a_typed_error() -> None:
    from sora2_async import ResponseValidationError

    async with Sora2Client(KEY, transport=BadEncoding(), rate_limit=RateLimit(1000)) as client:
        with pytest.raises(ResponseValidationError):
            await client.check_status("t")
        with pytest.raises(ResponseValidationError, match="may exist"):
            await client.generate(VideoRequest("x"))
