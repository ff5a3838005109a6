"""The client over a mocked wire: request bodies, retry rules counted in requests, errors,
malformed answers, configuration, key hygiene and logging.

Every test runs on asyncio and trio in virtual time (see conftest), so ``anyio.current_time()``
measures the waits the client chose without anyone really sleeping.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import traceback
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import respx

from sora2_async import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    Sora2Client,
    Sora2Error,
    Task,
    TaskNotFoundError,
    TaskState,
    VideoRequest,
)

KEY = "sk-SECRET-123"
BASE = "https://nanophoto.ai"
GENERATE = "/api/sora-2/generate"
STATUS = "/api/sora-2/check-status"
TASK_ID = "task_abc123"
VIDEO_URL = "https://video.nanophoto.ai/sora/task_abc123.mp4"

ACCEPTED = {"success": True, "status": "processing", "taskId": TASK_ID, "message": "accepted"}
PROCESSING = {
    "success": True,
    "status": "processing",
    "progress": "generating",
    "message": "Video is being generated",
    "taskId": TASK_ID,
}
COMPLETED = {
    "success": True,
    "status": "completed",
    "videoUrl": VIDEO_URL,
    "taskId": TASK_ID,
    "generationTime": 120,
    "creditsUsed": 4,
}
FAILED = {
    "success": False,
    "status": "failed",
    "error": "Video generation failed",
    "errorCode": "GENERATION_FAILED",
    "taskId": TASK_ID,
}
INTERNAL = {"success": False, "error": "Internal server error", "errorCode": "INTERNAL_ERROR"}
RATE_LIMITED = {
    "success": False,
    "error": "API key rate limit exceeded. Please try again later.",
    "errorCode": "API_KEY_RATE_LIMIT_EXCEEDED",
}
HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
MAY_EXIST = "may exist"

Answer = httpx.Response | BaseException | type[BaseException]


class Script:
    """A respx side effect: answers in turn (the last one repeats), noting when each came.

    An answer is an ``httpx.Response``, or an exception (class) to raise as the transport would.
    """

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(anyio.current_time())
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, type):
            raise answer("injected failure", request=request)  # type: ignore[call-arg]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def ok(body: dict[str, Any], status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def html(status: int) -> httpx.Response:
    return httpx.Response(status, content=HTML, headers={"Content-Type": "text/html"})


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NANOPHOTO_API_KEY", raising=False)
    monkeypatch.delenv("NANOPHOTO_BASE_URL", raising=False)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def route(api: respx.MockRouter, path: str, *answers: Answer) -> tuple[respx.Route, Script]:
    script = Script(*answers)
    return api.post(path).mock(side_effect=script), script


def sent_json(route: respx.Route, index: int = -1) -> Any:
    return json.loads(route.calls[index].request.content)


def client(**kwargs: Any) -> Sora2Client:
    return Sora2Client(KEY, **kwargs)


# -- what goes over the wire ---------------------------------------------------------------------


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


# -- generate is not idempotent: re-sent only when it provably never left ------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("answer", [ok(INTERNAL, 500), html(502), ok({}, 503), ok(INTERNAL, 504)])
async def test_generate_answered_5xx_is_sent_once_and_says_the_task_may_exist(
    api: respx.MockRouter, answer: httpx.Response
) -> None:
    generate, _ = route(api, GENERATE, answer, ok(ACCEPTED))
    async with client() as c:
        with pytest.raises(ServerError) as info:
            await c.generate(VideoRequest("x"))
    assert generate.call_count == 1
    assert MAY_EXIST in str(info.value)
    assert info.value.status_code == answer.status_code


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        (httpx.ReadTimeout, APITimeoutError),
        (httpx.WriteTimeout, APITimeoutError),
        (httpx.ReadError, APIConnectionError),
        (httpx.WriteError, APIConnectionError),
        (httpx.RemoteProtocolError, APIConnectionError),
    ],
)
async def test_generate_that_may_have_been_sent_is_not_resent(
    api: respx.MockRouter, failure: type[Exception], raised: type[APIConnectionError]
) -> None:
    generate, _ = route(api, GENERATE, failure, ok(ACCEPTED))
    async with client() as c:
        with pytest.raises(raised) as info:
            await c.generate(VideoRequest("x"))
    assert generate.call_count == 1
    assert info.value.request_sent is True
    assert MAY_EXIST in str(info.value)
    if raised is APIConnectionError:
        assert not isinstance(info.value, APITimeoutError)


@pytest.mark.anyio
@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout])
async def test_generate_whose_connection_was_never_made_is_retried(
    api: respx.MockRouter, failure: type[Exception]
) -> None:
    generate, _ = route(api, GENERATE, failure, failure, ok(ACCEPTED))
    async with client() as c:
        task = await c.generate(VideoRequest("x"))
        assert c.budget().used == 3  # every attempt spends budget
    assert task.task_id == TASK_ID
    assert generate.call_count == 3


@pytest.mark.anyio
async def test_generate_connect_errors_exhaust_max_retries(api: respx.MockRouter) -> None:
    generate, _ = route(api, GENERATE, httpx.ConnectError)
    async with client(max_retries=2) as c:
        with pytest.raises(APIConnectionError) as info:
            await c.generate(VideoRequest("x"))
    assert generate.call_count == 3
    assert info.value.request_sent is False
    assert MAY_EXIST not in str(info.value)  # it provably never reached the server


@pytest.mark.anyio
async def test_generate_after_429_is_retried_once_the_budget_allows(api: respx.MockRouter) -> None:
    generate, script = route(api, GENERATE, ok(RATE_LIMITED, 429, **{"Retry-After": "20"}))
    script.answers.append(ok(ACCEPTED))
    async with client() as c:
        task = await c.generate(VideoRequest("x"))
        state = c.budget()
    assert task.task_id == TASK_ID
    assert generate.call_count == 2
    assert script.gaps[0] >= 20  # held back at least as long as the server asked
    assert state.rate_limited == 1  # the 429 was news to the budget


@pytest.mark.anyio
async def test_rate_limit_retries_are_bounded(api: respx.MockRouter) -> None:
    generate, _ = route(api, GENERATE, ok(RATE_LIMITED, 429, **{"Retry-After": "7"}))
    async with client(retry=RetryPolicy(max_rate_limit_retries=1)) as c:
        with pytest.raises(RateLimitError) as info:
            await c.generate(VideoRequest("x"))
    assert generate.call_count == 2
    assert info.value.retry_after == 7.0
    assert info.value.error_code == "API_KEY_RATE_LIMIT_EXCEEDED"


# -- check-status is idempotent: retried with backoff --------------------------------------------


@pytest.mark.anyio
async def test_check_status_500_timeout_200_is_three_requests(api: respx.MockRouter) -> None:
    status_route, script = route(api, STATUS, ok(INTERNAL, 500), httpx.ReadTimeout, ok(PROCESSING))
    async with client() as c:
        status = await c.check_status(TASK_ID)
        assert c.budget().used == 3  # each retry spends budget
    assert status.state is TaskState.PROCESSING
    assert status_route.call_count == 3
    assert all(sent_json(status_route, i) == {"taskId": TASK_ID} for i in range(3))
    assert all(gap > 0 for gap in script.gaps)  # backed off before each retry


@pytest.mark.anyio
async def test_check_status_retries_every_transient_failure(api: respx.MockRouter) -> None:
    status_route, _ = route(
        api, STATUS, httpx.ConnectError, httpx.ReadError, html(503), ok(COMPLETED)
    )
    async with client(max_retries=3) as c:
        status = await c.check_status(TASK_ID)
    assert status.state is TaskState.COMPLETED
    assert status_route.call_count == 4


@pytest.mark.anyio
async def test_check_status_backoff_is_exponential(api: respx.MockRouter) -> None:
    _, script = route(api, STATUS, ok(INTERNAL, 500), ok(INTERNAL, 500), ok(INTERNAL, 500))
    script.answers.append(ok(PROCESSING))
    policy = RetryPolicy(max_retries=3, initial=1.0, maximum=60.0, jitter=0.5)
    async with client(retry=policy) as c:
        await c.check_status(TASK_ID)
    first, second, third = script.gaps
    assert 0.5 <= first <= 1.0 + 0.01
    assert 1.0 <= second <= 2.0 + 0.01
    assert 2.0 <= third <= 4.0 + 0.01


@pytest.mark.anyio
@pytest.mark.parametrize("max_retries", [0, 2])
async def test_check_status_5xx_exhausts_max_retries(
    api: respx.MockRouter, max_retries: int
) -> None:
    status_route, _ = route(api, STATUS, ok(INTERNAL, 500))
    async with client(max_retries=max_retries) as c:
        with pytest.raises(ServerError) as info:
            await c.check_status(TASK_ID)
    assert status_route.call_count == max_retries + 1
    assert info.value.error_code == "INTERNAL_ERROR"
    assert info.value.status_code == 500


@pytest.mark.anyio
async def test_check_status_timeouts_exhaust_max_retries(api: respx.MockRouter) -> None:
    status_route, _ = route(api, STATUS, httpx.ReadTimeout)
    async with client(max_retries=1) as c:
        with pytest.raises(APITimeoutError):
            await c.check_status(TASK_ID)
    assert status_route.call_count == 2


@pytest.mark.anyio
async def test_failed_task_answered_500_is_a_status_not_an_error(api: respx.MockRouter) -> None:
    status_route, _ = route(api, STATUS, ok(FAILED, 500), ok(PROCESSING))
    async with client() as c:
        status = await c.check_status(TASK_ID)
    assert status_route.call_count == 1
    assert status.state is TaskState.FAILED
    assert status.done
    assert status.task_id == TASK_ID
    assert status.error == "Video generation failed"
    assert status.error_code == "GENERATION_FAILED"


@pytest.mark.anyio
async def test_failed_task_500_without_a_status_field_is_still_a_status(
    api: respx.MockRouter,
) -> None:
    body = {k: v for k, v in FAILED.items() if k != "status"}
    status_route, _ = route(api, STATUS, ok(body, 500))
    async with client() as c:
        status = await c.check_status(TASK_ID)
    assert status_route.call_count == 1
    assert status.state is TaskState.FAILED


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "http", "cls"),
    [
        ("TASK_NOT_FOUND", 404, TaskNotFoundError),
        ("TASK_ID_REQUIRED", 400, InvalidRequestError),
        ("LOGIN_REQUIRED", 401, AuthenticationError),
    ],
)
async def test_check_status_client_errors_are_not_retried(
    api: respx.MockRouter, code: str, http: int, cls: type[APIError]
) -> None:
    status_route, _ = route(api, STATUS, ok({"error": "no", "errorCode": code}, http))
    async with client() as c:
        with pytest.raises(cls):
            await c.check_status(TASK_ID)
    assert status_route.call_count == 1


@pytest.mark.anyio
async def test_check_status_after_429_waits_and_retries(api: respx.MockRouter) -> None:
    status_route, script = route(api, STATUS, ok(RATE_LIMITED, 429, **{"Retry-After": "15"}))
    script.answers.append(ok(PROCESSING))
    async with client() as c:
        status = await c.check_status(TASK_ID)
    assert status.state is TaskState.PROCESSING
    assert status_route.call_count == 2
    assert script.gaps[0] >= 15


# -- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_retry_after_in_seconds_is_honoured(api: respx.MockRouter) -> None:
    _, script = route(api, STATUS, ok(INTERNAL, 503, **{"Retry-After": "30"}), ok(PROCESSING))
    async with client() as c:
        started = anyio.current_time()
        await c.check_status(TASK_ID)
        elapsed = anyio.current_time() - started
    assert 30.0 <= script.gaps[0] < 30.5
    assert 30.0 <= elapsed < 30.5


@pytest.mark.anyio
async def test_retry_after_as_an_http_date_is_honoured(api: respx.MockRouter) -> None:
    server_now = 1_445_412_480.0  # the server's clock; ours may be anywhere
    headers = {
        "Date": email.utils.formatdate(server_now, usegmt=True),
        "Retry-After": email.utils.formatdate(server_now + 45, usegmt=True),
    }
    _, script = route(api, STATUS, ok(INTERNAL, 503, **headers), ok(PROCESSING))
    async with client() as c:
        started = anyio.current_time()
        await c.check_status(TASK_ID)
        elapsed = anyio.current_time() - started
    assert 45.0 <= script.gaps[0] < 45.5
    assert 45.0 <= elapsed < 45.5


# -- malformed answers ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "field"),
    [
        (html(200), "<body>"),
        (httpx.Response(200, json=[PROCESSING]), "<body>"),
        (httpx.Response(200, json="processing"), "<body>"),
        (httpx.Response(200, content=b""), "<body>"),
        (ok({k: v for k, v in COMPLETED.items() if k != "videoUrl"}), "videoUrl"),
        (ok({**COMPLETED, "videoUrl": 12}), "videoUrl"),
        (ok({**PROCESSING, "status": "queued"}), "status"),
        (ok({k: v for k, v in PROCESSING.items() if k != "status"}), "status"),
        (ok({**COMPLETED, "videoUrl": "javascript:alert(1)"}), "videoUrl"),
        # (Optional fields of the wrong type are lenient: tests/test_reliability_answers.py.)
        (ok({**PROCESSING, "taskId": ["task"]}), "taskId"),
    ],
)
async def test_check_status_malformed_body_names_the_field(
    api: respx.MockRouter, answer: httpx.Response, field: str
) -> None:
    status_route, _ = route(api, STATUS, answer)
    async with client() as c:
        with pytest.raises(ResponseValidationError) as info:
            await c.check_status(TASK_ID)
    assert info.value.field == field
    # A body that is not a JSON object may have been cut off on the way: check-status is
    # idempotent, so it is asked again like after a 5xx. A whole answer that breaks the
    # contract would break it again: one request.
    assert status_route.call_count == (1 + 3 if field == "<body>" else 1)


@pytest.mark.anyio
async def test_check_status_html_5xx_is_a_server_error(api: respx.MockRouter) -> None:
    status_route, _ = route(api, STATUS, html(502))
    async with client(max_retries=1) as c:
        with pytest.raises(ServerError) as info:
            await c.check_status(TASK_ID)
    assert info.value.status_code == 502
    assert info.value.body is None
    assert status_route.call_count == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "field"),
    [
        (html(200), "<body>"),
        (httpx.Response(200, json=[ACCEPTED]), "<body>"),
        (ok({k: v for k, v in ACCEPTED.items() if k != "taskId"}), "taskId"),
        (ok({**ACCEPTED, "taskId": 42}), "taskId"),
        (ok({**ACCEPTED, "taskId": ""}), "taskId"),
    ],
)
async def test_generate_malformed_answer_names_the_field_and_says_the_task_may_exist(
    api: respx.MockRouter, answer: httpx.Response, field: str
) -> None:
    generate, _ = route(api, GENERATE, answer, ok(ACCEPTED))
    async with client() as c:
        with pytest.raises(ResponseValidationError) as info:
            await c.generate(VideoRequest("x"))
    assert info.value.field == field
    assert MAY_EXIST in str(info.value)  # the server took it: resubmitting may pay twice
    assert generate.call_count == 1


# -- every errorCode of the contract, over the wire ----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "http", "cls"),
    [
        ("LOGIN_REQUIRED", 401, AuthenticationError),
        ("API_KEY_RATE_LIMIT_EXCEEDED", 429, RateLimitError),
        ("INSUFFICIENT_CREDITS", 402, InsufficientCreditsError),
        ("PROMPT_REQUIRED", 400, InvalidRequestError),
        ("IMAGE_REQUIRED", 400, InvalidRequestError),
        ("IMAGE_URLS_REQUIRED", 400, InvalidRequestError),
        ("INVALID_INPUT", 400, InvalidRequestError),
        ("GENERATION_FAILED", 500, ServerError),
        ("TASK_ID_REQUIRED", 400, InvalidRequestError),
        ("TASK_NOT_FOUND", 404, TaskNotFoundError),
        ("INTERNAL_ERROR", 500, ServerError),
        ("BRAND_NEW_CODE", 402, InsufficientCreditsError),
        ("BRAND_NEW_CODE", 503, ServerError),
        ("BRAND_NEW_CODE", 418, APIError),
    ],
)
async def test_generate_errors_map_by_code_then_status(
    api: respx.MockRouter, code: str, http: int, cls: type[APIError]
) -> None:
    body = {"success": False, "error": f"words for {code}", "errorCode": code}
    if cls is InsufficientCreditsError:
        body["requiredCredits"] = 240
    generate, _ = route(api, GENERATE, ok(body, http))
    async with client(retry=RetryPolicy(max_rate_limit_retries=0)) as c:
        with pytest.raises(cls) as info:
            await c.generate(VideoRequest("x", model_tier="sora2-pro-high", duration=15))
    error = info.value
    assert type(error) is cls
    assert generate.call_count == 1
    assert error.status_code == http
    assert error.error_code == code
    assert code in str(error)
    assert f"words for {code}" in str(error)
    if isinstance(error, InsufficientCreditsError):
        assert error.required_credits == 240


@pytest.mark.anyio
async def test_error_code_wins_over_http_status_on_the_wire(api: respx.MockRouter) -> None:
    route(api, STATUS, ok({"error": "gone", "errorCode": "TASK_NOT_FOUND"}, 400))
    async with client() as c:
        with pytest.raises(TaskNotFoundError):
            await c.check_status(TASK_ID)


# -- configuration -------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "url", ["http://nanophoto.ai", "http://10.0.0.7:8000", "ftp://nanophoto.ai", "nanophoto.ai"]
)
def test_insecure_or_odd_base_urls_are_refused(url: str) -> None:
    with pytest.raises(Sora2Error):
        Sora2Client(KEY, base_url=url)


def test_insecure_base_url_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NANOPHOTO_BASE_URL", "http://nanophoto.ai")
    with pytest.raises(Sora2Error, match="http"):
        Sora2Client(KEY)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000/", "http://[::1]:8000"]
)
def test_loopback_http_base_url_is_allowed(url: str) -> None:
    assert Sora2Client(KEY, base_url=url).base_url == url.rstrip("/")


@pytest.mark.anyio
async def test_insecure_base_url_allowed_when_asked(api: respx.MockRouter) -> None:
    plain = api.post(f"http://sora.internal{STATUS}").respond(200, json=PROCESSING)
    async with client(base_url="http://sora.internal", allow_insecure_http=True) as c:
        await c.check_status(TASK_ID)
    assert plain.call_count == 1


@pytest.mark.anyio
async def test_user_http_client_is_used_and_left_open(api: respx.MockRouter) -> None:
    status_route, _ = route(api, STATUS, ok(PROCESSING))
    seen: list[str] = []

    async def note(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [note]}) as http:
        async with client(http_client=http) as c:
            await c.check_status(TASK_ID)
        assert not http.is_closed
        assert seen == [STATUS]
        assert status_route.call_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "http_kwargs",
    [{"auth": ("someone", "their-password")}, {"headers": {"Authorization": "Basic c29tZQ=="}}],
)
async def test_user_http_client_credentials_do_not_replace_the_key(
    api: respx.MockRouter, http_kwargs: dict[str, Any]
) -> None:
    status_route, _ = route(api, STATUS, ok(PROCESSING))
    async with httpx.AsyncClient(**http_kwargs) as http, client(http_client=http) as c:
        await c.check_status(TASK_ID)
    assert status_route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.anyio
async def test_own_http_client_is_closed() -> None:
    c = client()
    async with c:
        pass
    assert c._http.client.is_closed


# -- the key: in no repr, exception text or log line --------------------------------------------


def _text_of(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


@pytest.mark.anyio
async def test_key_is_in_no_repr(api: respx.MockRouter) -> None:
    route(api, STATUS, ok({"error": "Please log in", "errorCode": "LOGIN_REQUIRED"}, 401))
    async with client() as c:
        for text in (repr(c), str(c), repr(c.limiter), repr(c.budget())):
            assert KEY not in text
        with pytest.raises(AuthenticationError) as info:
            await c.check_status(TASK_ID)
    assert KEY not in _text_of(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("path", [GENERATE, STATUS])
@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout],
)
async def test_key_is_in_no_transport_error_text(
    api: respx.MockRouter, path: str, failure: type[Exception]
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure(f"failed talking to {request.headers['Authorization']}", request=request)  # type: ignore[call-arg]

    api.post(path).mock(side_effect=fail)
    async with client(max_retries=0) as c:
        call = c.generate(VideoRequest("x")) if path == GENERATE else c.check_status(TASK_ID)
        with pytest.raises(APIConnectionError) as info:
            await call
    assert KEY not in _text_of(info.value)


@pytest.mark.anyio
async def test_key_echoed_by_the_server_stays_out_of_errors_and_logs(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sora2_async")
    echo = {"error": f"Invalid API key: {KEY}", "errorCode": "LOGIN_REQUIRED"}
    route(api, STATUS, ok({**echo, "errorCode": "INTERNAL_ERROR"}, 500), ok(echo, 401))
    async with client() as c:
        with pytest.raises(AuthenticationError) as info:
            await c.check_status(TASK_ID)
    assert "Invalid API key" in str(info.value)
    assert KEY not in _text_of(info.value)
    assert KEY not in repr(info.value.body)
    assert KEY not in caplog.text


@pytest.mark.anyio
async def test_key_is_in_no_log_line(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sora2_async")
    route(api, GENERATE, httpx.ConnectError, ok(ACCEPTED))
    route(api, STATUS, ok(INTERNAL, 500), httpx.ReadTimeout, ok(PROCESSING), ok(COMPLETED))
    async with client() as c:
        task = await c.generate(VideoRequest("x"))
        await c.check_status(task)
        await c.check_status(task)
    records = [r for r in caplog.records if r.name.startswith("sora2_async")]
    assert len(records) >= 6  # the test looked at something
    for record in caplog.records:
        assert KEY not in record.getMessage()
    assert KEY not in caplog.text


ATTEMPT_LINE = re.compile(r"^POST (?P<path>\S+) -> (?P<status>.+) \(attempt (?P<n>\d+), [\d.]+s\)$")


def _attempt_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    found = []
    for record in caplog.records:
        if record.name == "sora2_async" and record.levelno == logging.DEBUG:
            match = ATTEMPT_LINE.match(record.getMessage())
            if match:
                found.append(match)
    return found


@pytest.mark.anyio
async def test_one_debug_line_per_attempt(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sora2_async")
    status_route, _ = route(api, STATUS, ok(INTERNAL, 500), httpx.ReadTimeout, ok(PROCESSING))
    async with client() as c:
        await c.check_status(TASK_ID)
    lines = _attempt_lines(caplog)
    assert status_route.call_count == 3
    assert [(m["path"], m["status"], m["n"]) for m in lines] == [
        (STATUS, "500", "1"),
        (STATUS, "timeout", "2"),
        (STATUS, "200", "3"),
    ]


@pytest.mark.anyio
async def test_one_debug_line_per_generate_attempt(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sora2_async")
    route(api, GENERATE, httpx.ConnectError, ok(ACCEPTED))
    async with client() as c:
        await c.generate(VideoRequest("x"))
    lines = _attempt_lines(caplog)
    assert [(m["path"], m["n"]) for m in lines] == [(GENERATE, "1"), (GENERATE, "2")]
    assert lines[-1]["status"] == "200"
