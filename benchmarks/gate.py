"""A transport that lets at most ``size`` requests into httpx's connection pool at once.

Diagnostic for the throughput runs, and a workaround users can apply today. httpcore's pool
rescans every queued request on each event, so with thousands of coroutines waiting inside it
each request costs time in proportion to the queue. The SDK runs one poller per video, and
each poller that is due waits *inside* httpx. Waiting in front of the pool instead, on an
``anyio.Semaphore`` (O(1) per wait), keeps httpcore's queue as short as the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import httpx

__all__ = ["GatedTransport"]


class _ReleasingStream(httpx.AsyncByteStream):
    """The answer's body; closing it (httpx does, once read) lets the next request in."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._release is not None:
                self._release, release = None, self._release
                release()


class GatedTransport(httpx.AsyncBaseTransport):
    """``inner``, with at most ``size`` requests in it (sent, or waiting for a connection)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, size: int) -> None:
        self._inner = inner
        self._gate = anyio.Semaphore(size)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Wait for the gate, then send; the gate opens again when the body is closed."""
        await self._gate.acquire()
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self._gate.release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(response.stream, self._gate.release)
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()
