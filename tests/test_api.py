"""The API caller (``sora2_async._api``) over a mocked wire: what is retried and how often,
generate (never re-sent once it may have arrived) against check-status (idempotent), 429s and
Retry-After, and how each answer is classified: a status, an error to retry, or one to raise.

Every async test runs on asyncio and trio in virtual time (see conftest), so
``anyio.current_time()`` measures the waits the client chose without anyone really sleeping.
"""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import json
from contextlib import AbstractAsyncContextManager
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
    RateLimit,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    SlidingWindowLimiter,
    Task,
    TaskNotFoundError,
    TaskState,
    VideoRequest,
)
from sora2_async._limits import Permit, RequestKind
from tests.helpers import (
    ACCEPTED,
    COMPLETED,
    FAILED,
    GENERATE,
    INTERNAL,
    MAY_EXIST,
    PROCESSING,
    RATE_LIMITED,
    STATUS,
    TASK_ID,
    client,
    html,
    ok,
    route,
    sent_json,
)

pytestmark = pytest.mark.usefixtures("clean_env")


# -- generate is not idempotent: re-sent only when it provably never left --------------------------


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


# -- check-status is idempotent: retried with backoff ----------------------------------------------


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


class RefusedWhileWaiting(SlidingWindowLimiter):
    """A store in which, while a request waits to be admitted, a 429 of another request of
    the same client comes (its pause begins), and with ``again``, another owner's one
    second later."""

    def __init__(self, limit: RateLimit, client: list[Any], *, again: bool) -> None:
        super().__init__(limit)
        self.client = client
        self.again = again
        self.asked = 0

    def permit(
        self, kind: RequestKind, *, promise: float | None = None
    ) -> AbstractAsyncContextManager[Permit]:
        self.asked += 1
        if self.asked == 1:
            self._rate_limited += 1
            self.client[0]._api.calm.refused(sent_at=anyio.current_time())
            if self.again:
                self.client[1].start_soon(self.another_owners_429)
        return super().permit(kind, promise=promise)

    async def another_owners_429(self) -> None:
        await anyio.sleep(1.0)
        self._rate_limited += 1


@pytest.mark.anyio
@pytest.mark.parametrize("again", [False, True])
async def test_a_poll_admitted_after_a_429_goes_after_the_pause_and_not_after_another(
    api: respx.MockRouter, again: bool
) -> None:
    """A poll that asked before a 429 and was admitted after it goes after the pause (5 s);
    if another 429 comes meanwhile it is not sent (the server's window is full: it would
    be refused too), and with ``retry=False`` it is given up for its poller to plan again."""
    status_route, statuses = route(api, STATUS, ok(PROCESSING))
    holder: list[Any] = []
    limiter = RefusedWhileWaiting(RateLimit(100), holder, again=again)
    async with client(rate_limit=limiter) as c, anyio.create_task_group() as group:
        holder += [c, group]
        start = anyio.current_time()
        status = await c._api.check_status(TASK_ID, retry=False)
    assert status_route.call_count == int(not again)
    assert (status is None) == again
    if not again:
        assert statuses.times[0] - start >= 5.0
    assert limiter.last_state.used == 1  # unsent, its slot still counts (the stores do)


@pytest.mark.anyio
async def test_while_429s_come_in_a_row_requests_go_one_at_a_time_until_an_answer(
    api: respx.MockRouter,
) -> None:
    """After the pause the limiter would let every poll that waited go at once, into a
    window that may be as full as it was: one goes, and the next only after its answer
    (a 429: after a pause twice as long; an answer ends the run)."""
    answers = [ok(RATE_LIMITED, 429, **{"Retry-After": "1"}), ok(PROCESSING), ok(PROCESSING)]
    times: list[float] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        times.append(anyio.current_time())
        await anyio.sleep(1.0)  # a second on the wire
        return answers.pop(0)

    api.post(STATUS).mock(side_effect=answer)
    async with client() as c:
        start = anyio.current_time()
        c._api.calm.refused(sent_at=start)  # a 429 just now: a run of them begins
        async with anyio.create_task_group() as group:

            async def poll() -> None:
                with contextlib.suppress(RateLimitError):
                    await c._api.check_status(TASK_ID, retry=False)

            for _ in range(3):
                group.start_soon(poll)
    assert [t - start for t in times] == pytest.approx([5.0, 16.0, 17.0], abs=1e-5)


@pytest.mark.anyio
async def test_a_poll_admitted_as_it_asked_goes_at_once(api: respx.MockRouter) -> None:
    status_route, _ = route(api, STATUS, ok(PROCESSING))
    async with client() as c:
        start = anyio.current_time()
        await c._api.check_status(TASK_ID, retry=False)
        assert anyio.current_time() == start
    assert status_route.call_count == 1


@pytest.mark.anyio
async def test_after_a_429_the_polls_due_with_it_pause_longer_with_each_in_a_row(
    api: respx.MockRouter,
) -> None:
    """A 429 says the server's window is full, not by how much. The limiter tightens the
    limit to what our window held and lets the next poll go as soon as one of ours leaves
    it, which a neighbour that spends steadily refuses again (a burst's polls were refused
    one after another so as the window turned). So this process's polls pause after a 429:
    5 s, then 10 s after a second in a row (before: the next went 5 s after the second,
    when the next of ours left the window)."""
    refusals = [True, True]
    times: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(anyio.current_time())
        if refusals:
            refusals.pop()
            return ok(RATE_LIMITED, 429)
        return ok({**COMPLETED, "taskId": json.loads(request.content)["taskId"]})

    api.post(STATUS).mock(side_effect=answer)
    limiter = SlidingWindowLimiter(RateLimit(10, per=3600.0))
    for _ in range(9):  # an hour ago, one a second: they leave the window one a second
        async with limiter.permit(RequestKind.POLL):
            pass
        await anyio.sleep(1.0)
    async with client(rate_limit=limiter) as c:
        await anyio.sleep(3600.0 - 9.0 - 1.0 - c._scheduler.final_poll_after(None))
        now = anyio.current_time()
        tasks = [Task(f"task_{i}", submitted_at=now) for i in range(3)]
        async with anyio.create_task_group() as group:
            for task in tasks:
                group.start_soon(c.wait, task)
    assert len(times) == 5, times  # two refused, then one answer each
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 5.0, (times, gaps)
    assert gaps[1] >= 10.0, (times, gaps)


@pytest.mark.anyio
async def test_after_a_429_the_next_request_of_any_kind_waits_a_pause(
    api: respx.MockRouter,
) -> None:
    """A generate asked just after a poll was refused waits the pause too (the limiter
    alone would let it go once the server's 1-s Retry-After is over)."""
    route(api, STATUS, ok(RATE_LIMITED, 429, **{"Retry-After": "1"}))
    _, generates = route(api, GENERATE, ok(ACCEPTED))
    async with client() as c:
        with pytest.raises(RateLimitError):
            await c._api.check_status(TASK_ID, retry=False)
        refused_at = anyio.current_time()
        await c.generate(VideoRequest("x"))
    assert generates.times[0] - refused_at >= 5.0, generates.times


@pytest.mark.anyio
async def test_an_extra_poll_asked_during_the_pause_is_skipped_not_waited(
    api: respx.MockRouter,
) -> None:
    status_route, _ = route(api, STATUS, ok(PROCESSING))
    async with client() as c:
        c._api.calm.refused(sent_at=anyio.current_time())  # a 429 just now: a 5-s pause
        start = anyio.current_time()
        got = await c._api.check_status(TASK_ID, kind=RequestKind.EXTRA_POLL, retry=False)
        assert anyio.current_time() == start
    assert got is None
    assert status_route.call_count == 0


class RefusedOnceWhileWaiting(SlidingWindowLimiter):
    """A store in which, while the first request waits to be admitted, a 429 of another
    request of the same client comes (its pause begins), and another owner's one second
    after."""

    def __init__(self, limit: RateLimit, calm: list[Any]) -> None:
        super().__init__(limit)
        self.calm = calm
        self.asked = 0

    def permit(
        self, kind: RequestKind, *, promise: float | None = None
    ) -> AbstractAsyncContextManager[Permit]:
        self.asked += 1
        if self.asked == 1:
            self._rate_limited += 1
            self.calm[0].refused(sent_at=anyio.current_time())
        return super().permit(kind, promise=promise)


@pytest.mark.anyio
async def test_a_generate_held_back_after_a_429_asks_the_budget_again_and_is_sent_once(
    api: respx.MockRouter,
) -> None:
    generate_route, generates = route(api, GENERATE, ok(ACCEPTED))
    holder: list[Any] = []
    limiter = RefusedOnceWhileWaiting(RateLimit(100), holder)
    async with client(rate_limit=limiter) as c, anyio.create_task_group() as group:
        holder.append(c._api.calm)

        async def another_owners_429() -> None:
            await anyio.sleep(1.0)
            limiter._rate_limited += 1

        group.start_soon(another_owners_429)
        start = anyio.current_time()
        task = await c.generate(VideoRequest("x"))
    assert task.task_id == TASK_ID
    assert generate_route.call_count == 1
    assert limiter.asked == 2  # held back once (its slot spent), then admitted again
    assert generates.times[0] - start >= 5.0  # after the pause


# -- Retry-After -----------------------------------------------------------------------------------


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


# -- malformed answers -----------------------------------------------------------------------------


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


# -- every errorCode of the contract, over the wire ------------------------------------------------


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
