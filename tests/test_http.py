"""The HTTP layer (``sora2_async._http``) over a mocked wire: the key and headers on every
request, the base URL checks, whose ``httpx.AsyncClient`` is closed, the key kept out of
errors and logs, and one debug line per attempt.

Every async test runs on asyncio and trio in virtual time (see conftest).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
import pytest
import respx

from sora2_async import (
    APIConnectionError,
    AuthenticationError,
    Sora2Client,
    Sora2Error,
    VideoRequest,
)
from tests.helpers import (
    ACCEPTED,
    COMPLETED,
    GENERATE,
    INTERNAL,
    KEY,
    PROCESSING,
    STATUS,
    TASK_ID,
    client,
    ok,
    route,
    text_of,
)

pytestmark = pytest.mark.usefixtures("clean_env")


# -- the base URL: https, or http to loopback only -------------------------------------------------


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


# -- the httpx.AsyncClient: the user's is used and left open, ours is closed -----------------------


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
async def test_user_http_client_headers_go_along_and_their_changes_are_seen(
    api: respx.MockRouter,
) -> None:
    status_route, _ = route(api, STATUS, ok(PROCESSING), ok(PROCESSING))
    async with (
        httpx.AsyncClient(headers={"User-Agent": "their-app/1.0", "X-Trace": "a"}) as http,
        client(http_client=http, timeout=httpx.Timeout(7.0, connect=3.0)) as c,
    ):
        await c.check_status(TASK_ID)
        http.headers["X-Trace"] = "b"  # the client's headers change between two requests
        await c.check_status(TASK_ID)
    first, second = (call.request for call in status_route.calls)
    assert (first.headers["X-Trace"], second.headers["X-Trace"]) == ("a", "b")
    for request in (first, second):
        assert request.headers["User-Agent"] == "their-app/1.0"
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Content-Length"] == str(len(request.content))
        assert json.loads(request.content) == {"taskId": TASK_ID}
        assert request.extensions["timeout"] == httpx.Timeout(7.0, connect=3.0).as_dict()


@pytest.mark.anyio
async def test_a_hook_that_edits_one_requests_timeout_leaves_the_next_ones_alone(
    api: respx.MockRouter,
) -> None:
    status_route, _ = route(api, STATUS, ok(PROCESSING), ok(PROCESSING))
    edits = [False, True]  # popped from the end: the first request is edited, the next not

    async def shorten(request: httpx.Request) -> None:
        if edits.pop():
            request.extensions["timeout"]["read"] = 0.5

    async with (
        httpx.AsyncClient(event_hooks={"request": [shorten]}) as http,
        client(http_client=http, timeout=30.0) as c,
    ):
        await c.check_status(TASK_ID)
        await c.check_status(TASK_ID)
    first, second = (call.request for call in status_route.calls)
    assert first.extensions["timeout"]["read"] == 0.5
    assert second.extensions["timeout"] == httpx.Timeout(30.0).as_dict()


@pytest.mark.anyio
async def test_a_cookie_the_server_sets_goes_back_with_the_next_request(
    api: respx.MockRouter,
) -> None:
    status_route = api.post(STATUS).mock(
        side_effect=[
            httpx.Response(200, json=PROCESSING, headers={"Set-Cookie": "__cf_bm=abc; Path=/"}),
            httpx.Response(200, json=PROCESSING),
        ]
    )
    async with client() as c:
        await c.check_status(TASK_ID)
        await c.check_status(TASK_ID)
    first, second = (call.request for call in status_route.calls)
    assert "Cookie" not in first.headers
    assert second.headers["Cookie"] == "__cf_bm=abc"
    assert second.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.anyio
async def test_user_http_client_cookies_and_query_parameters_go_along(
    api: respx.MockRouter,
) -> None:
    status_route, _ = route(api, STATUS, ok(PROCESSING))
    async with (
        httpx.AsyncClient(cookies={"session": "theirs"}, params={"tenant": "7"}) as http,
        client(http_client=http) as c,
    ):
        await c.check_status(TASK_ID)
    request = status_route.calls.last.request
    assert request.headers["Cookie"] == "session=theirs"
    assert request.url.params["tenant"] == "7"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {"taskId": TASK_ID}


@pytest.mark.anyio
async def test_own_http_client_is_closed() -> None:
    c = client()
    async with c:
        pass
    assert c._http.client.is_closed


# -- the key: in no transport error text or log line -----------------------------------------------


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
    assert KEY not in text_of(info.value)


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
    assert KEY not in text_of(info.value)
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


# -- one debug line per attempt --------------------------------------------------------------------


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
