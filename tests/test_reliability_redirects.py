"""API POSTs never follow a redirect, whatever the user's httpx client says.

A redirect would carry the key and the prompt to another host (or turn a generate into a
GET with a 303); it is a typed :class:`APIError`, sent once, never followed or retried.
"""

from __future__ import annotations

import httpx
import pytest

from sora2_async import APIError, InvalidRequestError, Sora2Client, VideoRequest

pytestmark = pytest.mark.anyio

KEY = "redirect-test-key-0123"
API_HOST = "nanophoto.ai"
ELSEWHERE = "https://collector.example.net/api/sora-2/generate"


class Redirecting(httpx.AsyncBaseTransport):
    """The API host answers every POST with ``status`` to another host; that host answers
    200 as the API would (so a followed redirect would look like success)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == API_HOST:
            return httpx.Response(self.status, headers={"Location": ELSEWHERE})
        return httpx.Response(
            200, json={"success": True, "status": "processing", "taskId": "task_stolen"}
        )


def client_of(transport: Redirecting) -> Sora2Client:
    # The user's own client follows redirects: the SDK must not, for its API requests.
    http = httpx.AsyncClient(transport=transport, follow_redirects=True)
    return Sora2Client(KEY, http_client=http)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_generate_is_never_redirected(status: int) -> None:
    transport = Redirecting(status)
    async with client_of(transport) as client:
        with pytest.raises(APIError) as info:
            await client.generate(VideoRequest("a corgi surfing"))
    error = info.value
    assert type(error) is APIError
    assert not isinstance(error, InvalidRequestError)
    assert error.status_code == status
    assert "redirect" in str(error)
    assert "collector.example.net" in str(error)
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert [r.url.host for r in transport.requests] == [API_HOST]  # once, and only there


@pytest.mark.parametrize("status", [302, 307])
async def test_a_status_check_is_never_redirected(status: int) -> None:
    transport = Redirecting(status)
    async with client_of(transport) as client:
        with pytest.raises(APIError) as info:
            await client.check_status("task_abc")
        with pytest.raises(APIError):
            await client.wait("task_abc")  # final: a wrong base URL will not get better
    assert info.value.status_code == status
    assert {r.url.host for r in transport.requests} == {API_HOST}
    assert all(r.method == "POST" for r in transport.requests)


async def test_a_redirect_is_not_taken_for_a_task_in_a_batch() -> None:
    transport = Redirecting(307)
    async with client_of(transport) as client, client.batch(["a fox in the snow"]) as results:
        (result,) = [r async for r in results]
    assert isinstance(result.error, APIError)
    assert result.error.status_code == 307
    assert result.task is None
    assert {r.url.host for r in transport.requests} == {API_HOST}
