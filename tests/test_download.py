"""Downloading a finished video: keyless, budget-free, streamed to a temp file, atomic."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from sora2_async import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ServerError,
    Sora2Client,
    Sora2Error,
    TaskState,
    TaskStatus,
    Video,
    VideoRequest,
)

KEY = "sk-SECRET-123"
BASE = "https://nanophoto.ai"
TASK_ID = "task_abc123"
VIDEO_URL = "https://video.nanophoto.ai/sora/task_abc123.mp4"
CONTENT = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def wire() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def video(url: str = VIDEO_URL) -> Video:
    return Video(TASK_ID, url, 120.0, 4, VideoRequest("a corgi surfing"))


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class Body(httpx.AsyncByteStream):
    """A response body sent in chunks; optionally the connection drops after ``drop_after``."""

    def __init__(self, chunks: list[bytes], *, drop_after: int | None = None) -> None:
        self.chunks = chunks
        self.drop_after = drop_after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.drop_after:
                raise httpx.ReadError("connection reset by peer")
            yield chunk


def dropping(request: httpx.Request) -> httpx.Response:
    half = len(CONTENT) // 2
    return httpx.Response(200, stream=Body([CONTENT[:half], CONTENT[half:]], drop_after=1))


# -- the happy path ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "source",
    [
        video(),
        TaskStatus(TASK_ID, TaskState.COMPLETED, video_url=VIDEO_URL),
        VIDEO_URL,
    ],
    ids=["video", "status", "url"],
)
async def test_download_writes_the_file(
    wire: respx.MockRouter, tmp_path: Path, source: Any
) -> None:
    host = wire.get(VIDEO_URL).respond(200, content=CONTENT)
    target = tmp_path / "corgi.mp4"
    async with Sora2Client(KEY) as c:
        path = await c.download(source, str(target))
    assert path == target
    assert target.read_bytes() == CONTENT
    assert files_in(tmp_path) == ["corgi.mp4"]  # no temp file left behind
    assert host.call_count == 1


@pytest.mark.anyio
async def test_download_sends_no_key_to_the_video_host(
    wire: respx.MockRouter, tmp_path: Path
) -> None:
    host = wire.get(VIDEO_URL).respond(200, content=CONTENT)
    async with Sora2Client(KEY) as c:
        await c.download(video(), tmp_path / "a.mp4")
    sent = host.calls.last.request
    assert sent.url.host == "video.nanophoto.ai"
    assert "authorization" not in sent.headers
    assert all(KEY not in value for value in sent.headers.values())


@pytest.mark.anyio
@pytest.mark.parametrize(
    "http_kwargs",
    [
        {"headers": {"Authorization": f"Bearer {KEY}"}},
        {"auth": ("user", KEY)},
    ],
    ids=["default-header", "client-auth"],
)
async def test_download_strips_a_user_clients_credentials(
    wire: respx.MockRouter, tmp_path: Path, http_kwargs: dict[str, Any]
) -> None:
    host = wire.get(VIDEO_URL).respond(200, content=CONTENT)
    api = wire.post(f"{BASE}/api/sora-2/check-status").respond(
        200, json={"status": "completed", "taskId": TASK_ID, "videoUrl": VIDEO_URL}
    )
    async with httpx.AsyncClient(**http_kwargs) as http, Sora2Client(KEY, http_client=http) as c:
        status = await c.check_status(TASK_ID)
        await c.download(status, tmp_path)
    assert "authorization" not in host.calls.last.request.headers
    assert api.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"  # API still gets it


@pytest.mark.anyio
async def test_download_spends_no_budget(wire: respx.MockRouter, tmp_path: Path) -> None:
    host = wire.get(VIDEO_URL).respond(200, content=CONTENT)
    api = wire.post(f"{BASE}/api/sora-2/check-status").respond(
        200, json={"status": "completed", "taskId": TASK_ID, "videoUrl": VIDEO_URL}
    )
    async with Sora2Client(KEY) as c:
        status = await c.check_status(TASK_ID)
        before = c.budget()
        assert before.used == 1
        await c.download(status, tmp_path)
        await c.download(status, tmp_path / "again.mp4")
        assert c.budget().used == before.used
    assert api.call_count == 1
    assert host.call_count == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "name"),
    [
        (VIDEO_URL, "task_abc123.mp4"),
        (VIDEO_URL + "?sig=abc&exp=1", "task_abc123.mp4"),
        ("https://video.nanophoto.ai/", "video.mp4"),
    ],
)
async def test_download_to_a_folder_picks_the_filename(
    wire: respx.MockRouter, tmp_path: Path, url: str, name: str
) -> None:
    wire.get(url).respond(200, content=CONTENT)
    async with Sora2Client(KEY) as c:
        path = await c.download(video(url), tmp_path)
    assert path == tmp_path / name
    assert path.read_bytes() == CONTENT
    assert files_in(tmp_path) == [name]


@pytest.mark.anyio
async def test_download_streams_to_a_temp_file_then_renames(
    wire: respx.MockRouter, tmp_path: Path
) -> None:
    chunk = 300 * 1024  # more than the client's read size, so writes happen mid-body
    parts = [bytes([n]) * chunk for n in range(4)]
    seen: list[tuple[bool, list[str], int]] = []
    target = tmp_path / "big.mp4"

    class Watched(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for part in parts:
                yield part
                temps = [p for p in tmp_path.iterdir() if p != target]  # noqa: ASYNC240
                size = sum(p.stat().st_size for p in temps)
                seen.append((target.exists(), [p.name for p in temps], size))

    wire.get(VIDEO_URL).mock(return_value=httpx.Response(200, stream=Watched()))
    async with Sora2Client(KEY) as c:
        await c.download(video(), target)

    assert target.read_bytes() == b"".join(parts)
    assert files_in(tmp_path) == ["big.mp4"]
    middle = seen[:-1]  # while the body was still coming
    assert middle
    for target_existed, temps, _ in middle:
        assert not target_existed  # the target appears only when complete
        assert len(temps) == 1  # one temp file, in the same folder
        assert temps[0].startswith(".big.mp4.")
    assert middle[-1][2] >= 2 * chunk  # bytes reached the disk before the body ended


# -- failures leave nothing behind ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", [403, 404, 410])
async def test_client_error_from_the_video_host_is_not_retried_and_leaves_no_file(
    wire: respx.MockRouter, tmp_path: Path, status: int
) -> None:
    host = wire.get(VIDEO_URL).respond(status, text="Not Found")
    async with Sora2Client(KEY) as c:
        with pytest.raises(APIError) as info:
            await c.download(video(), tmp_path / "a.mp4")
        assert c.budget().used == 0
    assert info.value.status_code == status
    assert not isinstance(info.value, ServerError)
    assert host.call_count == 1
    assert files_in(tmp_path) == []


@pytest.mark.anyio
async def test_connection_drop_mid_body_leaves_no_file(
    wire: respx.MockRouter, tmp_path: Path
) -> None:
    host = wire.get(VIDEO_URL).mock(side_effect=dropping)
    async with Sora2Client(KEY, max_retries=1) as c:
        with pytest.raises(APIConnectionError):
            await c.download(video(), tmp_path / "a.mp4")
    assert host.call_count == 2  # retried once, as max_retries says
    assert files_in(tmp_path) == []


@pytest.mark.anyio
async def test_failed_download_keeps_an_existing_file_intact(
    wire: respx.MockRouter, tmp_path: Path
) -> None:
    target = tmp_path / "a.mp4"
    target.write_bytes(b"the old video")
    wire.get(VIDEO_URL).mock(side_effect=dropping)
    async with Sora2Client(KEY, max_retries=0) as c:
        with pytest.raises(APIConnectionError):
            await c.download(video(), target)
    assert target.read_bytes() == b"the old video"
    assert files_in(tmp_path) == ["a.mp4"]


@pytest.mark.anyio
async def test_download_recovers_from_a_drop_and_a_5xx(
    wire: respx.MockRouter, tmp_path: Path
) -> None:
    answers = iter([None, httpx.Response(503), httpx.Response(200, content=CONTENT)])

    def host_side(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        return dropping(request) if answer is None else answer

    host = wire.get(VIDEO_URL).mock(side_effect=host_side)
    async with Sora2Client(KEY) as c:
        path = await c.download(video(), tmp_path)
    assert host.call_count == 3
    assert path.read_bytes() == CONTENT
    assert files_in(tmp_path) == ["task_abc123.mp4"]


@pytest.mark.anyio
async def test_download_5xx_exhausts_retries(wire: respx.MockRouter, tmp_path: Path) -> None:
    host = wire.get(VIDEO_URL).respond(502, text="<html>bad gateway</html>")
    async with Sora2Client(KEY, max_retries=2) as c:
        with pytest.raises(ServerError):
            await c.download(video(), tmp_path)
    assert host.call_count == 3
    assert files_in(tmp_path) == []


@pytest.mark.anyio
async def test_download_timeout(wire: respx.MockRouter, tmp_path: Path) -> None:
    host = wire.get(VIDEO_URL).mock(side_effect=httpx.ReadTimeout)
    async with Sora2Client(KEY, max_retries=1) as c:
        with pytest.raises(APITimeoutError):
            await c.download(video(), tmp_path)
    assert host.call_count == 2
    assert files_in(tmp_path) == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "source",
    [
        TaskStatus(TASK_ID, TaskState.PROCESSING),
        TaskStatus(TASK_ID, TaskState.FAILED, error="Video generation failed"),
        "ftp://video.nanophoto.ai/a.mp4",
        "/local/file.mp4",
        video("file:///etc/passwd"),
    ],
    ids=["processing", "failed", "ftp", "path", "file-url"],
)
async def test_nothing_to_download_is_refused_before_any_request(
    wire: respx.MockRouter, tmp_path: Path, source: Any
) -> None:
    with pytest.raises(Sora2Error):
        async with Sora2Client(KEY) as c:
            await c.download(source, tmp_path)
    assert len(wire.calls) == 0
    assert files_in(tmp_path) == []


@pytest.mark.anyio
async def test_downloaded_files_get_the_usual_permissions(
    wire: respx.MockRouter, tmp_path: Path
) -> None:
    wire.get(VIDEO_URL).respond(200, content=CONTENT)
    old = os.umask(0o022)
    try:
        async with Sora2Client(KEY) as c:
            path = await c.download(video(), tmp_path / "shared.mp4")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not private to its owner
