"""Due pollers wait in front of httpx, at most ``max_concurrent_requests`` on the wire."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from sora2_async import RateLimit, Sora2Client

pytestmark = pytest.mark.anyio


class SlowServer(httpx.AsyncBaseTransport):
    """Answers every status after a second, counting how many are answered at once."""

    def __init__(self) -> None:
        self.open = self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.open += 1
        self.most = max(self.most, self.open)
        try:
            await anyio.sleep(1)
        finally:
            self.open -= 1
        task_id = json.loads(request.content)["taskId"]
        body = {"success": True, "status": "processing", "taskId": task_id}
        return httpx.Response(200, json=body)


async def test_requests_on_the_wire_are_bounded() -> None:
    server = SlowServer()
    http = httpx.AsyncClient(transport=server)
    async with (
        Sora2Client(
            "gate-key-123", http_client=http, rate_limit=RateLimit(1000), max_concurrent_requests=3
        ) as client,
        anyio.create_task_group() as tg,
    ):
        for i in range(20):
            tg.start_soon(client.check_status, f"task_{i}")
    assert server.most == 3
    assert anyio.current_time() == pytest.approx(7, abs=0.01)  # 20 in rounds of 3


def test_the_gate_defaults_to_half_the_pool() -> None:
    """Below the pool's size: with every connection busy, httpcore rescans its queue on each
    event; half the pool kept checks a second up at 1,000 in flight (benchmarks/README)."""
    import httpx

    from sora2_async._http import default_gate

    assert default_gate(httpx.AsyncClient()) == 50  # httpx's default pool: 100
    assert default_gate(httpx.AsyncClient(limits=httpx.Limits(max_connections=10))) == 5
    assert default_gate(httpx.AsyncClient(limits=httpx.Limits(max_connections=1))) == 1
