"""The simulator as a hand-written ASGI 3 application, for uvicorn (or any ASGI server).

Routes:

* ``POST /api/sora-2/generate`` and ``POST /api/sora-2/check-status``: the API.
* ``GET /_videos/<taskId>.mp4``: the video files. ``videoUrl`` names them under *another*
  host name of the same server (``127.0.0.1`` and ``localhost`` swap), as the real API puts
  videos on a CDN host, so a client that leaks its key to the video host is caught.
* ``GET /_simulator/stats``: :meth:`SimulatorStats.as_json` (not counted as a request).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio

from ._reply import Reply, error_reply, json_reply

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ["SimulatorApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

VIDEO_PREFIX = "/_videos/"
STATS_PATH = "/_simulator/stats"
_MAX_BODY = 1 << 20  # the API takes a prompt and a few URLs: a megabyte is plenty

# The other name of a loopback host: the video URL uses it so it is a different host.
_OTHER_NAME = {"127.0.0.1": "localhost", "localhost": "127.0.0.1", "[::1]": "localhost"}


class SimulatorApp:
    """An ASGI application serving a :class:`Simulator` over HTTP.

    Args:
        simulator: the simulator to serve.
        video_base_url: where ``videoUrl`` points (it must reach this server's
            ``/_videos/``); by default derived from each request's ``Host``, with the other
            loopback name.
    """

    def __init__(self, simulator: Simulator, *, video_base_url: str | None = None) -> None:
        self.simulator = simulator
        self._video_base_url = video_base_url.rstrip("/") if video_base_url else None

    def __repr__(self) -> str:
        return f"<SimulatorApp {self.simulator!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope (``http`` or ``lifespan``; others are refused)."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: nothing here speaks them; the server closes the socket
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        method, path = scope["method"], scope["path"]
        authorization = headers.get("authorization")
        if path.startswith(VIDEO_PREFIX) and method not in ("GET", "HEAD"):
            reply = Reply(405, b"Method Not Allowed", "text/plain")
        elif path.startswith(VIDEO_PREFIX):
            name = path[len(VIDEO_PREFIX) :]
            reply = self.simulator.handle_video(name, authorization=authorization)
        elif path == STATS_PATH:
            reply = json_reply(200, self.simulator.stats().as_json())
        else:
            body = await _read_body(receive)
            if body is None:
                reply = error_reply(413, "INVALID_INPUT", "Request body too large")
            else:
                reply = await self.simulator.handle_api(
                    method,
                    path,
                    authorization=authorization,
                    body=body,
                    video_base_url=self._video_base(scope, headers),
                )
        if reply.drop:
            await _drop(receive, send)
        else:
            await _send(reply, send, head=method == "HEAD")

    def _video_base(self, scope: Scope, headers: dict[str, str]) -> str:
        if self._video_base_url is not None:
            return self._video_base_url
        host = headers.get("host")
        if not host:
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        name, colon, port = host.rpartition(":")
        if not colon or name.endswith(":") or "]" in port:  # no port, or a bare IPv6 address
            name, port = host, ""
        name = _OTHER_NAME.get(name.lower(), name)
        return f"{scope.get('scheme', 'http')}://{name}{':' + port if port else ''}/_videos"

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or ``None`` when it is larger than the API would take."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _send(reply: Reply, send: Send, *, head: bool = False) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.header_list()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    if head:
        await send({"type": "http.response.body", "body": b""})
        return
    if reply.slow_seconds <= 0:
        await send({"type": "http.response.body", "body": reply.body})
        return
    chunks = reply.chunks()
    pause = reply.slow_seconds / len(chunks)
    for chunk in chunks:
        await anyio.sleep(pause)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _drop(receive: Receive, send: Send) -> None:
    """Close the connection without answering.

    ASGI has no message for that, so this reaches for the server's transport where the
    server exposes it (uvicorn's ``receive`` is a method of an object holding it), and
    otherwise promises a body and ends the response before it is complete, which makes
    the server close the connection mid-answer.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    close = getattr(transport, "close", None)
    if callable(close):
        close()
        # Wait until the server has seen the connection go, so it does not answer for us.
        with anyio.move_on_after(1.0):
            while (await receive())["type"] != "http.disconnect":
                pass
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"64")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
