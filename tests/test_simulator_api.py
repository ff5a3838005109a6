"""The simulator speaks the contract: bodies, status codes, keys, credits, tasks, time.

Every test runs in-process (``Simulator.transport()``) on asyncio and trio in virtual time.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from sora2_async import PRICE_TABLE, ModelTier, TaskState
from sora2_async.testing import Durations, RateLimitPolicy, Simulator
from sora2_async.testing._mp4 import boxes

pytestmark = pytest.mark.anyio

API = "https://nanophoto.ai"
GENERATE = "/api/sora-2/generate"
STATUS = "/api/sora-2/check-status"
TEXT = {"prompt": "a corgi surfing", "mode": "textToVideo"}


async def post(
    http: httpx.AsyncClient, path: str, body: Any, key: str | None = "key-a"
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    if isinstance(body, bytes):
        return await http.post(API + path, content=body, headers=headers)
    return await http.post(API + path, json=body, headers=headers)


async def submit(http: httpx.AsyncClient, key: str = "key-a", **fields: Any) -> str:
    response = await post(http, GENERATE, {**TEXT, **fields}, key)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["taskId"]
    return task_id


# -- success bodies ------------------------------------------------------------------------------


async def test_generate_answers_exactly_the_documented_body() -> None:
    async with httpx.AsyncClient(transport=Simulator().transport()) as http:
        response = await post(http, GENERATE, TEXT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["success", "status", "taskId", "message"]
    assert body["success"] is True
    assert body["status"] == "processing"
    assert body["taskId"].startswith("task_")
    assert isinstance(body["message"], str)


async def test_task_goes_processing_then_completed_with_the_documented_body() -> None:
    sim = Simulator(durations=Durations(sora2=100.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        task_id = await submit(http)
        words = []
        for _ in range(9):
            body = (await post(http, STATUS, {"taskId": task_id})).json()
            assert list(body) == ["success", "status", "progress", "message", "taskId"]
            assert body["status"] == "processing"
            assert body["message"] == f"Video generation {body['progress']}"
            words.append(body["progress"])
            await anyio.sleep(11.5)
        response = await post(http, STATUS, {"taskId": task_id})
    assert words[0] == "queued"
    assert "generating" in words
    assert words[-1] == "finalizing"
    assert response.status_code == 200
    body = response.json()
    assert list(body) == [
        "success",
        "status",
        "videoUrl",
        "taskId",
        "generationTime",
        "creditsUsed",
    ]
    assert body["status"] == "completed"
    assert body["taskId"] == task_id
    assert body["videoUrl"] == f"https://video.simulator.invalid/sora/{task_id}.mp4"
    assert body["generationTime"] == 100
    assert body["creditsUsed"] == 4


async def test_failed_task_answers_500_generation_failed_with_task_id() -> None:
    sim = Simulator(failure_rate=1.0, durations=Durations(sora2=60.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        task_id = await submit(http)
        await anyio.sleep(60)
        response = await post(http, STATUS, {"taskId": task_id})
    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "status": "failed",
        "error": "Video generation failed",
        "errorCode": "GENERATION_FAILED",
        "taskId": task_id,
    }


async def test_the_video_is_served_on_its_own_host_as_a_valid_mp4() -> None:
    sim = Simulator(durations=Durations(sora2=60.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        task_id = await submit(http)
        url = sim.video_url(task_id)
        assert (await http.get(url)).status_code == 404  # not finished yet
        await anyio.sleep(60)
        video = await http.get(url)
        head = await http.head(url)
        # The API host does not serve it, and the video host serves no API.
        assert (await http.get(f"{API}/sora/{task_id}.mp4")).status_code == 404
        assert (await http.post(f"https://video.simulator.invalid{GENERATE}")).status_code == 404
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(video.content))
    assert [kind for kind, _ in boxes(video.content)] == ["ftyp", "moov", "mdat"]
    assert sim.stats().video_requests == 3
    assert sim.stats().video_requests_with_authorization == 0


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({}, None),
        ({"Authorization": "Bearer "}, None),
        ({"Authorization": "Basic key-a"}, None),
        ({"Authorization": "key-a"}, None),
        ({"Authorization": "Bearer wrong-key"}, None),
    ],
)
async def test_missing_or_unknown_key_is_401_login_required(
    headers: dict[str, str], key: None
) -> None:
    sim = Simulator(api_keys=["key-a"])
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        for path in (GENERATE, STATUS):
            response = await http.post(API + path, json=TEXT, headers=headers)
            assert response.status_code == 401
            body = response.json()
            assert body["success"] is False
            assert body["errorCode"] == "LOGIN_REQUIRED"
            assert isinstance(body["error"], str)
    stats = sim.stats()
    assert stats.unauthorized == 2
    assert stats.requests_by_key == {}  # nobody's budget was touched


async def test_with_no_keys_configured_any_key_gets_its_own_account() -> None:
    sim = Simulator(credits=10)
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        await submit(http, key="alice")
        await submit(http, key="bob")
        assert (await post(http, GENERATE, TEXT, key=None)).status_code == 401
    assert sim.balance("alice") == sim.balance("bob") == 6


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "INVALID_INPUT"),
        (b"", "INVALID_INPUT"),
        (b"\xff\xfe", "INVALID_INPUT"),
        (b"[" * 100_000, "INVALID_INPUT"),
        ([TEXT], "INVALID_INPUT"),
        ("a string", "INVALID_INPUT"),
        ({"mode": "textToVideo"}, "PROMPT_REQUIRED"),
        ({"prompt": "", "mode": "textToVideo"}, "PROMPT_REQUIRED"),
        ({"prompt": "   ", "mode": "textToVideo"}, "PROMPT_REQUIRED"),
        ({"prompt": 7, "mode": "textToVideo"}, "INVALID_INPUT"),
        ({"prompt": "x"}, "INVALID_INPUT"),
        ({"prompt": "x", "mode": "videoToVideo"}, "INVALID_INPUT"),
        ({"prompt": "x", "mode": ["textToVideo"]}, "INVALID_INPUT"),
        ({**TEXT, "modelTier": "sora3"}, "INVALID_INPUT"),
        ({**TEXT, "modelTier": 2}, "INVALID_INPUT"),
        ({**TEXT, "aspectRatio": "square"}, "INVALID_INPUT"),
        ({**TEXT, "videoDuration": "20"}, "INVALID_INPUT"),
        ({**TEXT, "videoDuration": 12}, "INVALID_INPUT"),
        ({**TEXT, "videoDuration": 10.0}, "INVALID_INPUT"),
        ({**TEXT, "videoDuration": True}, "INVALID_INPUT"),
        ({**TEXT, "videoDuration": "10s"}, "INVALID_INPUT"),
        ({"prompt": "x", "mode": "imageToVideo"}, "IMAGE_REQUIRED"),
        ({"prompt": "x", "mode": "imageToVideo", "imageUrls": []}, "IMAGE_REQUIRED"),
        (
            {"prompt": "x", "mode": "imageToVideo", "imageUrls": "https://a.example/i.png"},
            "INVALID_INPUT",
        ),
        ({"prompt": "x", "mode": "imageToVideo", "imageUrls": [3]}, "INVALID_INPUT"),
        (
            {"prompt": "x", "mode": "imageToVideo", "imageUrls": ["data:image/png;base64,iVBO"]},
            "IMAGE_URLS_REQUIRED",
        ),
        (
            {"prompt": "x", "mode": "imageToVideo", "imageUrls": ["iVBORw0KGgo="]},
            "IMAGE_URLS_REQUIRED",
        ),
        (
            {"prompt": "x", "mode": "imageToVideo", "images": ["iVBORw0KGgo="]},
            "IMAGE_URLS_REQUIRED",
        ),
    ],
)
async def test_bad_generate_bodies_are_typed_400s(body: Any, code: str) -> None:
    sim = Simulator()
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        response = await post(http, GENERATE, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["success"] is False
    assert answer["errorCode"] == code
    assert isinstance(answer["error"], str)
    assert answer["error"]
    stats = sim.stats()
    assert stats.tasks_created == 0
    assert stats.credits_charged == 0
    assert stats.requests_by_key == {"key-a": {"generate": 1}}  # it counted nonetheless


@pytest.mark.parametrize(
    ("fields", "credits"),
    [
        ({}, 4),
        ({"videoDuration": "15"}, 8),
        ({"videoDuration": 15}, 8),
        ({"modelTier": "sora2-pro-standard", "aspectRatio": "landscape"}, 60),
        ({"modelTier": "sora2-pro-standard", "videoDuration": "15"}, 100),
        ({"modelTier": "sora2-pro-high", "videoDuration": "10"}, 120),
        ({"modelTier": "sora2-pro-high", "videoDuration": "15"}, 240),
        ({"mode": "imageToVideo", "imageUrls": ["https://static.example/a.webp"]}, 4),
    ],
)
async def test_valid_bodies_are_charged_by_the_price_table(
    fields: dict[str, Any], credits: int
) -> None:
    sim = Simulator(credits=1000)
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        task_id = await submit(http, **fields)
    record = sim.tasks[task_id]
    assert record.credits == credits == PRICE_TABLE[record.model_tier][record.video_duration]
    assert sim.balance("key-a") == 1000 - credits
    assert sim.stats().credits_charged == credits


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "TASK_ID_REQUIRED"),
        ({"taskId": ""}, "TASK_ID_REQUIRED"),
        ({"taskId": None}, "TASK_ID_REQUIRED"),
        ({"taskId": 12}, "INVALID_INPUT"),
        (b"{", "INVALID_INPUT"),
        ([1, 2], "INVALID_INPUT"),
    ],
)
async def test_bad_check_status_bodies_are_typed_400s(body: Any, code: str) -> None:
    async with httpx.AsyncClient(transport=Simulator().transport()) as http:
        response = await post(http, STATUS, body)
    assert response.status_code == 400
    assert response.json()["errorCode"] == code
    assert response.json()["success"] is False


async def test_unknown_task_and_another_keys_task_are_404_task_not_found() -> None:
    sim = Simulator(api_keys=["key-a", "key-b"])
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        task_id = await submit(http, key="key-a")
        for key, asked in (("key-a", "task_nope"), ("key-b", task_id)):
            response = await post(http, STATUS, {"taskId": asked}, key)
            assert response.status_code == 404
            assert response.json() == {
                "success": False,
                "error": "Task not found",
                "errorCode": "TASK_NOT_FOUND",
            }
        assert (await post(http, STATUS, {"taskId": task_id}, "key-a")).status_code == 200


async def test_unknown_paths_and_methods_are_json_errors() -> None:
    async with httpx.AsyncClient(transport=Simulator().transport()) as http:
        missing = await http.post(f"{API}/api/sora-2/nothing", json={})
        wrong = await http.get(API + GENERATE)
    assert missing.status_code == 404
    assert missing.json()["success"] is False
    assert wrong.status_code == 405
    assert wrong.json()["success"] is False


# -- credits and keys ----------------------------------------------------------------------------


async def test_insufficient_credits_is_402_with_required_credits_as_documented() -> None:
    sim = Simulator(api_keys={"poor": 50, "rich": 1000})
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        response = await post(http, GENERATE, {**TEXT, "modelTier": "sora2-pro-standard"}, "poor")
        rich = await post(http, GENERATE, {**TEXT, "modelTier": "sora2-pro-standard"}, "rich")
    assert response.status_code == 402
    # Exactly the provider's documented body (it has no "success" field).
    assert response.json() == {
        "error": "Insufficient credits",
        "errorCode": "INSUFFICIENT_CREDITS",
        "requiredCredits": 60,
    }
    assert rich.status_code == 200
    assert sim.balance("poor") == 50
    assert sim.balance("rich") == 940


async def test_credits_of_a_failed_task_come_back_when_it_fails() -> None:
    sim = Simulator(api_keys={"k": 8}, failure_rate=1.0, durations=Durations(sora2=100.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        await submit(http, key="k", videoDuration="15")
        assert sim.balance("k") == 0
        assert (await post(http, GENERATE, TEXT, "k")).status_code == 402
        await anyio.sleep(100)
        assert sim.balance("k") == 8  # refunded at the moment of failure, unasked
        await submit(http, key="k")
    stats = sim.stats()
    assert stats.credits_charged == 12
    assert stats.credits_refunded == 8
    assert stats.tasks_failed == 1


async def test_keys_are_isolated_accounts() -> None:
    sim = Simulator(api_keys={"a": 100, "b": 100})
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        task_a = await submit(http, key="a")
        await submit(http, key="a")
        await post(http, STATUS, {"taskId": task_a}, "a")
        await submit(http, key="b", modelTier="sora2-pro-standard")
    stats = sim.stats()
    assert stats.requests_by_key == {"a": {"generate": 2, "check_status": 1}, "b": {"generate": 1}}
    assert sim.balance("a") == 92
    assert sim.balance("b") == 40
    assert {r.api_key for r in sim.tasks.values()} == {"a", "b"}


# -- tasks, time, determinism --------------------------------------------------------------------


async def test_durations_are_drawn_per_tier_within_the_defaults() -> None:
    sim = Simulator(seed=3)
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        for tier in ModelTier:
            for _ in range(20):
                await submit(http, modelTier=tier.value)
    for record in sim.tasks.values():
        low, high = (60, 180) if record.model_tier is ModelTier.SORA2 else (180, 480)
        assert low <= record.generation_time <= high
        assert record.completes_at == pytest.approx(record.created_at + record.generation_time)
    spread = [r.generation_time for r in sim.tasks.values() if r.model_tier is ModelTier.SORA2]
    assert max(spread) - min(spread) > 30  # drawn, not fixed


async def test_failure_rate_is_roughly_honoured() -> None:
    sim = Simulator(failure_rate=0.3, seed=11, rate_limit=RateLimitPolicy(10_000))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        for _ in range(300):
            await submit(http)
    failed = sum(r.outcome is TaskState.FAILED for r in sim.tasks.values())
    assert 60 <= failed <= 120


async def run_script(sim: Simulator) -> list[Any]:
    seen: list[Any] = []
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        ids = [await submit(http, prompt=f"p{i}") for i in range(5)]
        await anyio.sleep(150)
        for task_id in ids:
            response = await post(http, STATUS, {"taskId": task_id})
            seen.append((response.status_code, response.json()))
    seen.append([(r.task_id, r.generation_time, r.outcome) for r in sim.tasks.values()])
    return seen


async def test_one_seed_gives_one_run() -> None:
    first = await run_script(Simulator(seed=42, failure_rate=0.4))
    second = await run_script(Simulator(seed=42, failure_rate=0.4))
    other = await run_script(Simulator(seed=43, failure_rate=0.4))
    assert first == second
    assert first != other


async def test_time_scale_shrinks_durations_and_the_window() -> None:
    sim = Simulator(time_scale=60, durations=Durations(sora2=120.0))
    assert sim.window == 60.0
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        started = anyio.current_time()
        task_id = await submit(http)
        await anyio.sleep(1.9)
        assert (await post(http, STATUS, {"taskId": task_id})).json()["status"] == "processing"
        await anyio.sleep(0.2)
        body = (await post(http, STATUS, {"taskId": task_id})).json()
    assert body["status"] == "completed"
    assert body["generationTime"] == 120  # reported in simulated seconds
    record = sim.tasks[task_id]
    assert record.completes_at - started == pytest.approx(2.0)
    assert record.first_done_answer_at == pytest.approx(started + 2.1)
    assert record.status_checks == 2


async def test_an_injected_clock_drives_everything() -> None:
    now = [1000.0]
    sim = Simulator(clock=lambda: now[0], durations=Durations(sora2=60.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        task_id = await submit(http)
        now[0] += 59.999
        assert (await post(http, STATUS, {"taskId": task_id})).json()["status"] == "processing"
        now[0] += 0.001
        assert (await post(http, STATUS, {"taskId": task_id})).json()["status"] == "completed"
    assert sim.tasks[task_id].created_at == 1000.0


async def test_stats_report_what_was_seen() -> None:
    sim = Simulator(durations=Durations(sora2=60.0))
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        first = await submit(http, prompt="same")
        await submit(http, prompt="same")
        await submit(http, key="key-b", prompt="same")  # another key: not a duplicate
        await submit(http, prompt="other")
        await post(http, STATUS, {"taskId": first})
        await post(http, GENERATE, TEXT, key=None)
        await anyio.sleep(60)
    stats = sim.stats()
    data = stats.as_json()
    json.dumps(data)  # plain JSON
    assert data["requests_by_endpoint"] == {"generate": 5, "check_status": 1}
    assert data["responses_429"] == 0
    assert data["tasks_created"] == 4
    assert data["tasks_by_prompt"] == {"same": 3, "other": 1}
    assert data["duplicate_prompts"] == 1
    assert data["credits_charged"] == 16
    assert data["credits_refunded"] == 0
    assert data["max_requests_in_window"] == 4
    assert data["max_requests_in_window_by_key"] == {"key-a": 4, "key-b": 1}
    assert data["responses_by_status"] == {"200": 5, "401": 1}
    assert data["tasks_completed"] == 4
    assert stats.total_requests == 6


async def test_tasks_is_a_read_only_snapshot() -> None:
    sim = Simulator()
    async with httpx.AsyncClient(transport=sim.transport()) as http:
        task_id = await submit(http)
        snapshot = sim.tasks
        await post(http, STATUS, {"taskId": task_id})
    assert snapshot[task_id].status_checks == 0
    assert sim.tasks[task_id].status_checks == 1
    with pytest.raises(TypeError):
        snapshot["x"] = snapshot[task_id]  # type: ignore[index]
    assert sim.tasks[task_id].state_at(sim.tasks[task_id].completes_at) is TaskState.COMPLETED
