"""The SDK's own client driven against the simulator, in-process, on asyncio and trio.

Also the pytest plugin's fixtures, which wire a client to a simulator.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from sora2_async import (
    AuthenticationError,
    InsufficientCreditsError,
    InvalidRequestError,
    Sora2Client,
    TaskNotFoundError,
    TaskState,
    VideoRequest,
)
from sora2_async.testing import Durations, Simulator
from sora2_async.testing._mp4 import boxes

pytest_plugins = ["sora2_async.testing.pytest_plugin"]

pytestmark = pytest.mark.anyio


def sdk_client(sim: Simulator, key: str = "sdk-key") -> Sora2Client:
    return sim.client(key)


async def test_generate_check_status_download(tmp_path: Path) -> None:
    sim = Simulator(durations=Durations(sora2=90.0))
    async with sdk_client(sim) as client:
        request = VideoRequest("a corgi surfing", aspect_ratio="landscape", duration=15)
        task = await client.generate(request)
        record = sim.tasks[task.task_id]
        assert record.prompt == "a corgi surfing"
        assert record.aspect_ratio.value == "landscape"
        assert record.credits == 8
        assert record.created_at == task.submitted_at  # one clock for both sides
        status = await client.check_status(task)
        assert status.state is TaskState.PROCESSING
        assert status.progress == "queued"
        await anyio.sleep(90)
        status = await client.check_status(task.task_id)
        assert status.state is TaskState.COMPLETED
        assert status.generation_time == 90
        assert status.credits_used == 8
        assert status.video_url == sim.video_url(task.task_id)
        path = await client.download(status, tmp_path)
    assert path == tmp_path / f"{task.task_id}.mp4"
    assert [kind for kind, _ in boxes(path.read_bytes())] == ["ftyp", "moov", "mdat"]
    stats = sim.stats()
    assert stats.requests_by_endpoint == {"generate": 1, "check_status": 2}
    assert stats.video_requests == 1
    assert stats.video_requests_with_authorization == 0  # the key stayed with the API
    assert sim.tasks[task.task_id].first_done_answer_at == pytest.approx(task.submitted_at + 90)


async def test_a_failed_task_is_a_terminal_status() -> None:
    sim = Simulator(failure_rate=1.0, durations=Durations(sora2=60.0), api_keys={"sdk-key": 4})
    async with sdk_client(sim) as client:
        task = await client.generate(VideoRequest("doomed"))
        await anyio.sleep(60)
        status = await client.check_status(task)
    assert status.state is TaskState.FAILED
    assert status.error_code == "GENERATION_FAILED"
    assert sim.balance("sdk-key") == 4


async def test_api_errors_arrive_typed() -> None:
    sim = Simulator(api_keys={"sdk-key": 10})
    async with sdk_client(sim) as client, sdk_client(sim, key="stranger") as stranger:
        with pytest.raises(InsufficientCreditsError) as caught:
            await client.generate(VideoRequest("x", model_tier="sora2-pro-high"))
        assert caught.value.required_credits == 120
        with pytest.raises(TaskNotFoundError):
            await client.check_status("task_missing")
        with pytest.raises(AuthenticationError):
            await stranger.generate(VideoRequest("x"))
    # The SDK refuses bad input itself, before spending a request.
    with pytest.raises(InvalidRequestError):
        VideoRequest("")
    assert sim.stats().requests_by_key == {"sdk-key": {"generate": 1, "check_status": 1}}


async def test_sdk_and_simulator_agree_on_every_tier_and_duration() -> None:
    sim = Simulator()
    async with sdk_client(sim) as client:
        for tier in ("sora2", "sora2-pro-standard", "sora2-pro-high"):
            for duration in (10, 15):
                request = VideoRequest("p", model_tier=tier, duration=duration)
                task = await client.generate(request)
                assert sim.tasks[task.task_id].credits == request.credits


async def test_plugin_fixtures(sora2_client: Sora2Client, sora2_simulator: Simulator) -> None:
    task = await sora2_client.generate(VideoRequest("from the fixture"))
    assert sora2_simulator.tasks[task.task_id].api_key == "test-key"
    status = await sora2_client.check_status(task)
    assert status.state is TaskState.PROCESSING
    assert sora2_simulator.stats().requests_by_key == {
        "test-key": {"generate": 1, "check_status": 1}
    }
