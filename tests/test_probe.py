"""After a quiet spell the first request goes alone (``_probe``), on both backends.

A server whose answers take a second records when each request arrives; the SDK's budget
has room for everything, as it would while someone it cannot see fills the server's window.
"""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from sora2_async import RateLimit, Sora2Client
from sora2_async._probe import QuietProbe

pytestmark = pytest.mark.anyio

KEY = "probe-key-123"


class Server(httpx.AsyncBaseTransport):
    """Answers each status after a second; 429 to the requests numbered in ``refuse``."""

    def __init__(self, refuse: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.arrivals: list[float] = []
        self.refuse = refuse
        self.start = anyio.current_time()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        number = len(self.arrivals)
        self.arrivals.append(round(anyio.current_time() - self.start, 3))
        await anyio.sleep(1)
        if number in self.refuse:
            body = {"success": False, "error": "rate limited", "code": "RATE_LIMITED"}
            return httpx.Response(429, json=body, headers={"Retry-After": "10"})
        task_id = json.loads(request.content)["taskId"]
        return httpx.Response(
            200, json={"success": True, "status": "processing", "taskId": task_id}
        )


async def statuses(client: Sora2Client, n: int) -> None:
    async with anyio.create_task_group() as group:
        for i in range(n):
            group.start_soon(client.check_status, f"task_{i:012d}")


async def test_the_first_request_after_a_quiet_spell_goes_alone_the_rest_after_its_answer() -> None:
    server = Server()
    async with Sora2Client(
        KEY, http_client=httpx.AsyncClient(transport=server), rate_limit=RateLimit(1000)
    ) as client:
        await statuses(client, 10)  # the first ever: nothing known of the window yet
        await anyio.sleep(10)  # shorter than the quiet (a 120th of the window: 30 s)
        await statuses(client, 10)
        await anyio.sleep(31)
        await statuses(client, 10)
    assert server.arrivals == [0, *[1] * 9, *[12] * 10, 44, *[45] * 9]


async def test_after_a_429_the_first_request_goes_alone_again() -> None:
    server = Server(refuse={0})
    async with Sora2Client(
        KEY, http_client=httpx.AsyncClient(transport=server), rate_limit=RateLimit(1000)
    ) as client:
        # The probe is refused (Retry-After: 10 s): the budget holds everyone until then,
        # one goes alone, then the other nine (one of them the refused one, retried).
        await statuses(client, 10)
    assert server.arrivals == [0, 11, *[12] * 9]


async def test_a_request_cancelled_while_held_back_takes_nothing() -> None:
    probe = QuietProbe(30.0)
    async with probe.turn() as first:
        await first.go()
        assert "probing=True" in repr(probe)
        with anyio.move_on_after(1):
            async with probe.turn():  # held while the probe is on its way
                pytest.fail("a second turn began while the probe was on its way")
    assert "flying=0 probing=False" in repr(probe)
    async with probe.turn() as second:  # answered a moment ago: not quiet
        await second.go()
        assert second.probe is None
