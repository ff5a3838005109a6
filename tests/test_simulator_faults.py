"""Injected faults, in-process: each kind, its probability, and its determinism under a seed."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from sora2_async.testing import Faults, RateLimitPolicy, Simulator

pytestmark = pytest.mark.anyio

API = "https://nanophoto.ai"
GENERATE = "/api/sora-2/generate"
STATUS = "/api/sora-2/check-status"
AUTH = {"Authorization": "Bearer key-a"}
TEXT = {"prompt": "a corgi surfing", "mode": "textToVideo"}
MANY = RateLimitPolicy(100_000)


async def generate(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post(API + GENERATE, json=TEXT, headers=AUTH)


async def test_no_faults_by_default() -> None:
    assert not Faults().any
    sim = Simulator()
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        for _ in range(50):
            assert (await generate(http)).status_code == 200
    assert sim.stats().faults == {}


async def test_latency_delays_the_answer() -> None:
    sim = Simulator(faults=Faults(latency=7.5, latency_probability=1.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        started = anyio.current_time()
        response = await generate(http)
        took = anyio.current_time() - started
    assert response.status_code == 200
    assert took == pytest.approx(7.5)
    # The request is stamped when the server handles it, after the network's delay.
    assert next(iter(sim.tasks.values())).created_at == pytest.approx(started + 7.5)


async def test_server_error_is_a_500_internal_error_that_counts_but_creates_nothing() -> None:
    sim = Simulator(faults=Faults(server_error=1.0), api_keys={"key-a": 100})
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        response = await generate(http)
    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "error": "Internal server error",
        "errorCode": "INTERNAL_ERROR",
    }
    stats = sim.stats()
    assert stats.tasks_created == 0
    assert sim.balance("key-a") == 100
    assert stats.requests_by_key == {"key-a": {"generate": 1}}
    assert stats.faults == {"server_error": 1}


async def test_a_dropped_connection_raises_but_the_task_exists_and_is_charged() -> None:
    sim = Simulator(faults=Faults(drop_connection=1.0), api_keys={"key-a": 100})
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await generate(http)
    # This is the hazard a non-idempotent retry runs into: the server did its work.
    assert len(sim.tasks) == 1
    assert sim.balance("key-a") == 96
    stats = sim.stats()
    assert stats.faults == {"drop_connection": 1}
    assert stats.responses_by_status == {}  # nothing was answered


async def test_malformed_bodies_are_html_502s_or_truncated_json_200s() -> None:
    sim = Simulator(faults=Faults(malformed=1.0), rate_limit=MANY)
    kinds = set()
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        for _ in range(40):
            response = await generate(http)
            if response.status_code == 502:
                assert response.headers["content-type"] == "text/html"
                assert b"<html>" in response.content
                kinds.add("html")
            else:
                assert response.status_code == 200
                with pytest.raises(ValueError, match=r"."):
                    response.json()
                assert response.content.startswith(b'{"success": true')
                kinds.add("truncated")
    assert kinds == {"html", "truncated"}
    assert len(sim.tasks) == 40  # the server handled every one before the answer broke
    assert sim.stats().faults == {"malformed": 40}


async def test_a_slow_body_takes_its_time_and_arrives_whole() -> None:
    sim = Simulator(faults=Faults(slow_body=1.0, slow_body_seconds=4.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        started = anyio.current_time()
        async with http.stream("POST", API + GENERATE, json=TEXT, headers=AUTH) as response:
            headers_at = anyio.current_time() - started
            body = await response.aread()
        took = anyio.current_time() - started
    assert headers_at == pytest.approx(0.0)
    assert took == pytest.approx(4.0)
    assert response.status_code == 200
    assert body.startswith(b'{"success": true')
    assert body.endswith(b"}")


async def test_a_slow_body_trips_a_read_timeout() -> None:
    sim = Simulator(faults=Faults(slow_body=1.0, slow_body_seconds=40.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        with pytest.raises(TimeoutError), anyio.fail_after(5):  # virtual s: it would take 40
            async with http.stream("POST", API + GENERATE, json=TEXT, headers=AUTH) as r:
                await r.aread()


async def test_fault_probabilities_are_roughly_honoured() -> None:
    faults = Faults(server_error=0.1, drop_connection=0.1, malformed=0.1, slow_body=0.1)
    sim = Simulator(faults=faults, rate_limit=MANY, seed=9)
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        for _ in range(1000):
            try:
                async with http.stream(
                    "POST", API + STATUS, json={"taskId": "x"}, headers=AUTH
                ) as r:
                    await r.aread()
            except httpx.RemoteProtocolError:
                pass
    seen = sim.stats().faults
    # Earlier kinds take precedence when several fire: 10%, then 9%, 8.1%, 7.3%.
    assert 70 <= seen["server_error"] <= 130
    assert 60 <= seen["drop_connection"] <= 120
    assert 55 <= seen["malformed"] <= 110
    assert 45 <= seen["slow_body"] <= 100


async def fault_run(seed: int) -> list[Any]:
    faults = Faults(
        latency=1.0,
        latency_probability=0.3,
        server_error=0.2,
        drop_connection=0.2,
        malformed=0.2,
        slow_body=0.2,
        slow_body_seconds=1.0,
    )
    sim = Simulator(faults=faults, seed=seed, rate_limit=MANY)
    outcomes: list[Any] = []
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        for _ in range(60):
            started = anyio.current_time()
            try:
                response = await generate(http)
                outcomes.append((response.status_code, response.content))
            except httpx.RemoteProtocolError:
                outcomes.append("dropped")
            outcomes.append(round(anyio.current_time() - started, 6))
    return outcomes


async def test_faults_are_deterministic_under_a_seed() -> None:
    first, second, other = await fault_run(5), await fault_run(5), await fault_run(6)
    assert first == second
    assert first != other
    assert "dropped" in first


async def test_faults_can_be_switched_mid_run() -> None:
    sim = Simulator()
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        assert (await generate(http)).status_code == 200
        sim.faults = Faults(server_error=1.0)
        assert (await generate(http)).status_code == 500
        sim.faults = Faults()
        assert (await generate(http)).status_code == 200


async def test_faults_do_not_touch_video_downloads() -> None:
    sim = Simulator(faults=Faults(drop_connection=1.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await generate(http)
        task_id = next(iter(sim.tasks))
        await anyio.sleep(500)
        video = await http.get(sim.video_url(task_id))
    assert video.status_code == 200
