"""Fetching a finished video to disk: streamed, atomic, keyless, and free of API budget.

The bytes go to a temporary file in the target's folder and are renamed over the target
only when complete, so a failed download leaves no partial file behind. The request carries
no ``Authorization`` header (the video host is not the API) and takes no permit.
"""

from __future__ import annotations

import logging
import os
import secrets
import urllib.parse
from pathlib import Path

import anyio
import httpx

from ._errors import APIConnectionError, APIError, APITimeoutError, ServerError, Sora2Error
from ._models import TaskStatus, Video
from ._retry import RetryPolicy

__all__ = ["download_video", "video_url_of"]

logger = logging.getLogger("sora2_async")

_CHUNK = 256 * 1024


def video_url_of(source: Video | TaskStatus | str) -> str:
    """The video URL of a :class:`Video`, a completed :class:`TaskStatus`, or a URL string.

    Raises:
        Sora2Error: when the status has no video URL (not completed) or the URL is not http(s).
    """
    url = source.url if isinstance(source, Video) else source
    if isinstance(url, TaskStatus):
        if url.video_url is None:
            raise Sora2Error(f"task {url.task_id} is {url.state.value}: it has no video to fetch")
        url = url.video_url
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise Sora2Error(f"not an http(s) video URL: {url[:80]!r}")
    return url


async def download_video(
    client: httpx.AsyncClient,
    source: Video | TaskStatus | str,
    path: str | os.PathLike[str],
    *,
    retry: RetryPolicy,
) -> Path:
    """Stream the video to ``path`` (a file, or an existing folder to put it in).

    Raises:
        APIError: the video host answered with an error status (after retries for 5xx).
        APIConnectionError: the host could not be reached (after retries).
    """
    url = video_url_of(source)
    target = Path(path)
    if await anyio.Path(target).is_dir():
        name = Path(urllib.parse.urlsplit(url).path).name or "video.mp4"
        target = target / name
    backoff = retry.for_errors()
    while True:
        try:
            await _fetch_once(client, url, target)
            return target
        except (APIConnectionError, ServerError) as exc:
            wait = backoff.next()
            if wait is None:
                raise
            logger.debug("retrying download of %s after %s", target.name, exc)
        await anyio.sleep(wait)


async def _fetch_once(client: httpx.AsyncClient, url: str, target: Path) -> None:
    request = client.build_request("GET", url)
    # The user's client may carry default headers: the key must never reach the video host.
    request.headers.pop("Authorization", None)
    # A fresh name beside the target ("x": never someone else's file), made like any other
    # file so the user's umask applies (mkstemp would make it private to its owner).
    tmp = anyio.Path(target.parent / f".{target.name}.{secrets.token_hex(6)}.part")
    async with await anyio.open_file(tmp, "xb"):
        pass
    try:
        try:
            response = await client.send(request, stream=True, auth=None, follow_redirects=True)
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"GET video: no answer in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:  # this request carries no key to hide
            raise APIConnectionError(f"GET video: {type(exc).__name__}") from None
        try:
            if response.status_code >= 400:
                cls = ServerError if response.status_code >= 500 else APIError
                raise cls(
                    f"the video host answered HTTP {response.status_code}",
                    status_code=response.status_code,
                )
            async with await anyio.open_file(tmp, "wb") as out:
                async for chunk in response.aiter_bytes(_CHUNK):
                    await out.write(chunk)
        except httpx.HTTPError as exc:
            raise APIConnectionError(f"GET video: {type(exc).__name__} mid-body") from None
        finally:
            await response.aclose()
        await tmp.replace(target)
    finally:
        # Even when cancelled (Ctrl-C mid-download), no partial file is left behind.
        with anyio.CancelScope(shield=True):
            await tmp.unlink(missing_ok=True)
