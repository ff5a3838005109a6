"""The simulator as an httpx transport: no sockets, no threads, any event loop, virtual time.

Requests to the video host (the host of :attr:`Simulator.video_base_url`) fetch videos;
requests to any other host are API requests, so the SDK's default base URL works unchanged.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import httpx

from ._reply import Reply

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ["SimulatorTransport"]


class SimulatorTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` answering from a :class:`Simulator`.

    Use it as ``httpx.AsyncClient(transport=simulator.transport())``. It works on asyncio
    and trio and under mock clocks: injected latency and slow bodies wait with
    ``anyio.sleep``. A dropped connection raises ``httpx.RemoteProtocolError``, as httpx
    does when a server closes the connection without answering.
    """

    def __init__(self, simulator: Simulator) -> None:
        self._simulator = simulator

    def __repr__(self) -> str:
        return f"<SimulatorTransport {self._simulator!r}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer ``request`` from the simulator.

        Raises:
            httpx.RemoteProtocolError: when a ``drop_connection`` fault fires.
        """
        body = await request.aread()
        sim = self._simulator
        video = urllib.parse.urlsplit(sim.video_base_url)
        if request.url.host == (video.hostname or ""):
            reply = self._video(request, video.path.rstrip("/") + "/")
        else:
            reply = await sim.handle_api(
                request.method,
                request.url.path,
                authorization=request.headers.get("authorization"),
                body=body,
            )
        if reply.drop:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if request.method == "HEAD":  # the headers of a GET, no body
            return httpx.Response(reply.status, headers=reply.header_list(), request=request)
        if reply.slow_seconds > 0:
            return httpx.Response(
                reply.status,
                headers=reply.header_list(),
                stream=_SlowBody(reply),
                request=request,
            )
        return httpx.Response(
            reply.status, headers=reply.header_list(), content=reply.body, request=request
        )

    def _video(self, request: httpx.Request, prefix: str) -> Reply:
        path = request.url.path
        name = path[len(prefix) :] if path.startswith(prefix) else ""
        if request.method not in ("GET", "HEAD") or not name or "/" in name:
            return Reply(404, b"Not Found", "text/plain")
        return self._simulator.handle_video(
            name, authorization=request.headers.get("authorization")
        )


class _SlowBody(httpx.AsyncByteStream):
    """A body that arrives in pieces over ``reply.slow_seconds``."""

    def __init__(self, reply: Reply) -> None:
        self._chunks = reply.chunks()
        self._pause = reply.slow_seconds / len(self._chunks)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            await anyio.sleep(self._pause)
            yield chunk
