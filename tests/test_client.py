"""``Sora2Client`` (``sora2_async._client``) over a mocked wire: the request bodies of
generate and check_status and what they return, construction from arguments and from the
environment, and a repr without the key.

Every async test runs on asyncio and trio in virtual time (see conftest).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import respx

from sora2_async import (
    AuthenticationError,
    InvalidRequestError,
    Sora2Client,
    Sora2Error,
    Task,
    TaskState,
    VideoRequest,
)
from tests.helpers import (
    ACCEPTED,
    BASE,
    COMPLETED,
    FAILED,
    GENERATE,
    KEY,
    PROCESSING,
    STATUS,
    TASK_ID,
    VIDEO_URL,
    client,
    ok,
    route,
    sent_json,
    text_of,
)

pytestmark = pytest.mark.usefixtures("clean_env")


# -- what goes over the wire -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_generate_sends_the_contracts_body(api: respx.MockRouter) -> None:
    generate, _ = route(api, GENERATE, ok(ACCEPTED))
    request = VideoRequest(
        "a corgi surfing", model_tier="sora2-pro-high", aspect_ratio="landscape", duration="15"
    )
    async with client() as c:
        before = anyio.current_time()
        task = await c.generate(request)
    assert task.task_id == TASK_ID
    assert task.request is request
    assert task.submitted_at is not None
    assert task.submitted_at >= before
    body = sent_json(generate)
    assert body == {
        "prompt": "a corgi surfing",
        "mode": "textToVideo",
        "modelTier": "sora2-pro-high",
        "aspectRatio": "landscape",
        "videoDuration": "15",
    }
    assert isinstance(body["videoDuration"], str)  # a string on the wire, per the contract
    sent = generate.calls.last.request
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.url == f"{BASE}{GENERATE}"


@pytest.mark.anyio
async def test_generate_image_to_video_sends_image_urls(api: respx.MockRouter) -> None:
    generate, _ = route(api, GENERATE, ok(ACCEPTED))
    async with client() as c:
        await c.generate(VideoRequest("animate", image_urls=["https://img.example.com/a.png"]))
    body = sent_json(generate)
    assert body["mode"] == "imageToVideo"
    assert body["imageUrls"] == ["https://img.example.com/a.png"]
    assert body["videoDuration"] == "10"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "state"),
    [
        (PROCESSING, TaskState.PROCESSING),
        (COMPLETED, TaskState.COMPLETED),
        (FAILED, TaskState.FAILED),
    ],
)
async def test_check_status_one_request_one_status(
    api: respx.MockRouter, answer: dict[str, Any], state: TaskState
) -> None:
    status_route, _ = route(api, STATUS, ok(answer))
    async with client() as c:
        status = await c.check_status(Task(TASK_ID))
        assert c.budget().used == 1
    assert status_route.call_count == 1
    assert sent_json(status_route) == {"taskId": TASK_ID}
    assert status.state is state
    assert status.task_id == TASK_ID
    if state is TaskState.COMPLETED:
        assert status.video_url == VIDEO_URL
        assert status.generation_time == 120
        assert status.credits_used == 4


@pytest.mark.anyio
async def test_check_status_takes_a_plain_id(api: respx.MockRouter) -> None:
    status_route, _ = route(api, STATUS, ok(PROCESSING))
    async with client() as c:
        assert (await c.check_status(TASK_ID)).progress == "generating"
    assert sent_json(status_route) == {"taskId": TASK_ID}


@pytest.mark.anyio
@pytest.mark.parametrize("task", ["", "   ", Task("")])
async def test_check_status_without_an_id_sends_nothing(
    api: respx.MockRouter, task: Task | str
) -> None:
    status_route, _ = route(api, STATUS, ok(PROCESSING))
    async with client() as c:
        with pytest.raises(InvalidRequestError):
            await c.check_status(task)
    assert status_route.call_count == 0


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("key", [None, "", "   "])
async def test_missing_key_names_the_variable_before_any_request(
    api: respx.MockRouter, key: str | None
) -> None:
    generate, _ = route(api, GENERATE, ok(ACCEPTED))
    with pytest.raises(Sora2Error, match="NANOPHOTO_API_KEY"):
        Sora2Client(key)
    assert generate.call_count == 0
    assert len(api.calls) == 0


@pytest.mark.anyio
async def test_key_and_base_url_come_from_the_environment(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOPHOTO_API_KEY", "sk-FROM-ENV-456")
    monkeypatch.setenv("NANOPHOTO_BASE_URL", "https://api.example.test/")
    elsewhere = api.post(f"https://api.example.test{STATUS}").respond(200, json=PROCESSING)
    default, _ = route(api, STATUS, ok(PROCESSING))
    async with Sora2Client() as c:
        assert c.base_url == "https://api.example.test"
        await c.check_status(TASK_ID)
    assert default.call_count == 0
    assert elsewhere.call_count == 1
    assert elsewhere.calls.last.request.headers["Authorization"] == "Bearer sk-FROM-ENV-456"


@pytest.mark.anyio
async def test_arguments_beat_the_environment(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOPHOTO_API_KEY", "sk-FROM-ENV-456")
    monkeypatch.setenv("NANOPHOTO_BASE_URL", "https://api.example.test")
    status_route, _ = route(api, STATUS, ok(PROCESSING))
    async with Sora2Client(KEY, base_url=BASE) as c:
        await c.check_status(TASK_ID)
    assert status_route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"


def test_default_base_url() -> None:
    assert Sora2Client(KEY).base_url == BASE


# -- the key: in no repr ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_key_is_in_no_repr(api: respx.MockRouter) -> None:
    route(api, STATUS, ok({"error": "Please log in", "errorCode": "LOGIN_REQUIRED"}, 401))
    async with client() as c:
        for text in (repr(c), str(c), repr(c.limiter), repr(c.budget())):
            assert KEY not in text
        with pytest.raises(AuthenticationError) as info:
            await c.check_status(TASK_ID)
    assert KEY not in text_of(info.value)
