"""The HTTP layer: one attempt of one API call, spoken over one ``httpx.AsyncClient``.

It adds the key and JSON, logs one debug line per attempt, and turns transport failures into
:class:`APIConnectionError` / :class:`APITimeoutError`, telling whether the request can have
reached the server. It knows nothing of budgets or retries: ``_api`` decides those.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import time
import urllib.parse
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import httpx

from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ResponseValidationError,
    Sora2Error,
)
from ._parse import decode_json_object
from ._retry import parse_retry_after

__all__ = ["DEFAULT_TIMEOUT", "Answer", "HTTPLayer", "check_base_url", "default_gate"]

logger = logging.getLogger("sora2_async")

#: Connect fast, allow a slow answer: the API itself answers in well under a minute.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

# httpx's default pool, but idle connections are dropped after 2 s rather than 5: many
# servers (uvicorn, Node) close theirs after 5 s, and a generate sent on a connection the
# server is closing at that moment is reset, and turns uncertain (it may have been charged).
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=2.0)

# Failures before any byte of the request can have been sent: safe to re-send anything.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@attrs.frozen
class Answer:
    """One HTTP answer of the API: status, JSON object (``None`` if not one), Retry-After."""

    status_code: int
    body: dict[str, Any] | None
    retry_after: float | None
    error: Sora2Error | None = None  # why ``body`` is None, when it is


def check_base_url(base_url: str, *, allow_insecure: bool) -> str:
    """Validate the API base URL and return it without a trailing slash.

    Raises:
        Sora2Error: when it is not http(s), or is ``http://`` to a host other than loopback
            and ``allow_insecure`` is false (the key would cross the network in clear).
    """
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise Sora2Error(f"base URL {base_url!r} is not an http(s) URL")
    if parsed.scheme == "http" and not allow_insecure and not _is_loopback(parsed.hostname):
        raise Sora2Error(
            f"refusing plain http:// base URL {base_url!r}: the API key would travel unencrypted;"
            " use https, or pass allow_insecure_http=True if you really mean it"
        )
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: httpx's default connection limit (``httpx.Limits().max_connections``).
_HTTPX_POOL = 100


def default_gate(client: httpx.AsyncClient) -> int:
    """The wire gate for ``client``: half its pool's connection limit (at least one).

    The limit is read from the client's default transport when it has one (httpx keeps it
    on its pool); a client whose transport hides it gets half of httpx's default.
    """
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    size = getattr(pool, "_max_connections", None)
    if not isinstance(size, int) or size < 1:
        size = _HTTPX_POOL
    return max(1, size // 2)


class HTTPLayer:
    """Sends API requests with the key, to the base URL only."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        http_client: httpx.AsyncClient | None,
        timeout: httpx.Timeout | float | None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._owns_client = http_client is None
        self._timeout = DEFAULT_TIMEOUT if timeout is None else httpx.Timeout(timeout)
        self._own_headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._urls: dict[str, httpx.URL] = {}
        # The client's headers merged with ours, and the client's headers they came from.
        self._merged: tuple[list[tuple[bytes, bytes]], httpx.Headers] | None = None
        self.client = (
            http_client
            if http_client is not None
            else httpx.AsyncClient(transport=transport, limits=_LIMITS)
        )
        # Thousands of due pollers must wait here (O(1) a wait), not inside httpx's
        # connection pool, which rescans its whole queue on every event.
        if max_concurrent is None:
            max_concurrent = default_gate(self.client)
        self._gate = anyio.Semaphore(max_concurrent)

    def __repr__(self) -> str:
        return f"<HTTPLayer {self._base_url}>"

    async def aclose(self) -> None:
        """Close the ``httpx.AsyncClient`` if we made it (a user's client stays open)."""
        if self._owns_client:
            await self.client.aclose()

    def slot(self) -> AbstractAsyncContextManager[None]:
        """A turn among the requests on the wire (at most ``max_concurrent`` at once).

        Waiting for it is cancellable: nothing has been sent then.
        """
        return _Slot(self._gate)

    async def send(self, path: str, body: Mapping[str, Any], *, attempt: int = 1) -> Answer:
        """One POST to ``base_url + path`` (inside a :meth:`slot`).

        Raises:
            APITimeoutError: no answer in time (``request_sent`` false for connect timeouts).
            APIConnectionError: the connection failed (``request_sent`` false when it was
                never made, so that even a generate may be sent again).
            ResponseValidationError: an answer httpx could not decode.
            APIError: the answer is a redirect (never followed).
        """
        return await self._post(path, body, attempt)

    async def _post(self, path: str, body: Mapping[str, Any], attempt: int) -> Answer:
        started = anyio.current_time()
        status: int | str = "-"
        failure: Sora2Error | None = None
        try:
            response = await self.client.send(
                self._request(path, body),
                auth=httpx.Auth(),  # no-op: a user client's ``auth=`` must not replace the key
                # Never, whatever the user's client says: a redirect would carry the key and
                # the prompt to another host, and a 303 would turn a generate into a GET.
                follow_redirects=False,
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            status, failure = self._failure(path, exc)
        finally:
            logger.debug(
                "POST %s -> %s (attempt %d, %.3fs)",
                path,
                status,
                attempt,
                anyio.current_time() - started,
            )
        if failure is not None:
            # Raised here, outside the ``except``: httpx's exception holds the request and its
            # headers (the key), and must not ride along as the new one's __context__.
            raise failure
        if response.is_redirect or 300 <= response.status_code < 400:
            raise _redirected(path, response)
        retry_after = parse_retry_after(response.headers, now=time.time())
        try:
            parsed: dict[str, Any] | None = decode_json_object(
                _redact_echo(response.content, self._api_key),
                content_type=response.headers.get("content-type"),
            )
            error = None
        except Sora2Error as exc:
            parsed, error = None, exc
        return Answer(response.status_code, parsed, retry_after, error)

    def _request(self, path: str, body: Mapping[str, Any]) -> httpx.Request:
        """The POST of ``body`` as JSON to ``base_url + path``, as ``client.post`` builds it.

        httpx merges the client's base URL, headers, cookies and query parameters into every
        request it builds, which took a sixth of a poll's CPU at 1,000 videos in flight (the
        URL parsed, the headers normalised, anew each time). Here the URL is parsed once and
        the client's headers are merged again only when they change, and its cookies (a
        server's ``Set-Cookie`` puts them there) go along as httpx sends them; a client with
        query parameters gets httpx's own merge. Our ``Content-Type`` wins over a
        client's default one (the body is JSON), and the body is encoded as httpx 0.28 and
        later encode ``json=``.

        Raises:
            ValueError: ``body`` holds something JSON cannot say (NaN, say).
        """
        client = self.client
        content = json.dumps(
            body if isinstance(body, dict) else dict(body),
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._base_url + path)
        if client.params:  # rare for an API client: httpx merges them
            return client.build_request(
                "POST", url, content=content, headers=self._own_headers, timeout=self._timeout
            )
        theirs = client.headers.raw
        if self._merged is None or self._merged[0] != theirs:
            merged = client.headers.copy()
            merged.update(self._own_headers)
            self._merged = (theirs, merged)
        return httpx.Request(
            "POST",
            url,
            headers=self._merged[1],
            content=content,
            # The client's cookies (a server's Set-Cookie puts them there), as httpx merges
            # them: copied into the request's Cookie header.
            cookies=client.cookies if client.cookies else None,
            # A dict of its own: a hook that edits one request's timeout must not edit them all.
            extensions={"timeout": self._timeout.as_dict()},
        )

    def _failure(self, path: str, exc: httpx.HTTPError) -> tuple[str, Sora2Error]:
        """The typed error (and the log's word) for a request httpx could not complete."""
        name = type(exc).__name__
        sent = not isinstance(exc, _NOT_SENT)
        if isinstance(exc, httpx.TimeoutException):
            return "timeout", APITimeoutError(
                f"POST {path}: no answer in time ({name})", request_sent=sent
            )
        if isinstance(exc, httpx.DecodingError):
            return "undecodable", ResponseValidationError(
                f"POST {path}: the answer could not be decoded ({name})", field="<body>"
            )
        detail = _redact(str(exc), self._api_key)
        return "connection error", APIConnectionError(
            f"POST {path}: {name}: {detail}", request_sent=sent
        )


class _Slot:
    """One turn at the wire gate (a class, not a generator: it is taken on every request)."""

    __slots__ = ("_gate",)

    def __init__(self, gate: anyio.Semaphore) -> None:
        self._gate = gate

    async def __aenter__(self) -> None:
        await self._gate.acquire()
        try:
            # A turn granted to a caller cancelled meanwhile is given back unused.
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            self._gate.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._gate.release()


def _redirected(path: str, response: httpx.Response) -> APIError:
    """The error of an API answer that is a redirect: not followed, not retried."""
    where = ""
    with contextlib.suppress(ValueError):  # a Location that is no URL at all
        target = urllib.parse.urlsplit(response.headers.get("location", ""))
        where = f" to {target.hostname}" if target.hostname else ""
    return APIError(
        f"POST {path}: the API answered with a redirect (HTTP {response.status_code}{where}); "
        "API requests never follow redirects, so nothing was re-sent: check the base URL",
        status_code=response.status_code,
    )


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _redact_echo(content: bytes, secret: str) -> bytes:
    """Blank out a key the server (or a proxy) echoed, before it reaches errors and logs.

    Keys shorter than 8 characters are left alone: they are no real keys, and could match
    ordinary text (a test's ``"k"`` would mangle every ``taskId``).
    """
    return content.replace(secret.encode(), b"***") if len(secret) >= 8 else content
