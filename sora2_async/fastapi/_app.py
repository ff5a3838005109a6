"""Wiring a :class:`Sora2Service` into FastAPI: the lifespan, the dependencies, the uvicorn hook."""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Annotated, Any

from fastapi import Depends, Request

from .._client import Sora2Client
from .._video_records import VideoStore
from ._service import _LIVE, Sora2Service

__all__ = [
    "STATE_KEY",
    "Sora2",
    "Sora2ClientDep",
    "drain_on_uvicorn_shutdown",
    "get_client",
    "get_sora2",
    "sora2_lifespan",
]

#: The name of the service in the lifespan state (``request.state``) and in ``app.state``.
STATE_KEY = "sora2"


class _Lifespan:
    """Opens the client and the service when the app starts; closes both when it stops."""

    def __init__(
        self,
        app: Any,
        make_client: Callable[[], Sora2Client],
        remember: int,
        store: VideoStore | Callable[[], VideoStore] | None,
    ) -> None:
        self._app = app
        self._make_client = make_client
        self._remember = remember
        self._store = store
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> dict[str, Any]:
        async with AsyncExitStack() as stack:
            store = self._store
            # A class is a maker too (and a runtime-checked protocol would take it for a store).
            if isinstance(store, type) or (callable(store) and not isinstance(store, VideoStore)):
                store = store()  # made here: entered here, and closed when the app stops
                if isinstance(store, AbstractAsyncContextManager):
                    await stack.enter_async_context(store)
            client = await stack.enter_async_context(self._make_client())
            service = Sora2Service(client, store=store, remember=self._remember)
            service = await stack.enter_async_context(service)
            self._stack = stack.pop_all()  # from here on, closed by __aexit__
        setattr(self._app.state, STATE_KEY, service)
        return {STATE_KEY: service}

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        return await self._stack.__aexit__(exc_type, exc, tb)


def sora2_lifespan(
    make_client: Callable[[], Sora2Client] = Sora2Client,
    *,
    store: VideoStore | Callable[[], VideoStore] | None = None,
    remember: int = 10_000,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A FastAPI lifespan with one client and one :class:`Sora2Service` for the app's life.

    ``FastAPI(lifespan=sora2_lifespan())`` makes the client with ``Sora2Client()`` (key and
    base URL from ``NANOPHOTO_API_KEY`` and ``NANOPHOTO_BASE_URL``); pass ``make_client`` to
    build it otherwise. ``store`` is where accepted videos live (a :class:`VideoStore`, or
    a function that makes one when the app starts: the lifespan then enters and closes it);
    the default keeps them in the worker's memory. Routes get the service through the
    :data:`Sora2` dependency. On shutdown every background wait is cancelled, then the
    client (and a store made here) is closed.

    With a lifespan of your own, nest the service in it instead::

        @asynccontextmanager
        async def lifespan(app):
            async with Sora2Client() as client, Sora2Service(client) as service:
                yield {STATE_KEY: service}
    """
    return functools.partial(_Lifespan, make_client=make_client, remember=remember, store=store)


def get_sora2(request: Request) -> Sora2Service:
    """The dependency behind :data:`Sora2`: the app's running service.

    Raises:
        RuntimeError: the app was not made with ``sora2_lifespan`` (or ``STATE_KEY`` state).
    """
    service = getattr(request.state, STATE_KEY, None)
    if not isinstance(service, Sora2Service):
        service = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(service, Sora2Service):
        raise RuntimeError("no Sora2Service: make the app with FastAPI(lifespan=sora2_lifespan())")
    return service


def get_client(request: Request) -> Sora2Client:
    """The dependency behind :data:`Sora2ClientDep`: the app's client."""
    return get_sora2(request).client


#: A route parameter ``sora2: Sora2`` receives the app's :class:`Sora2Service`.
Sora2 = Annotated[Sora2Service, Depends(get_sora2)]
#: A route parameter ``client: Sora2ClientDep`` receives the app's :class:`Sora2Client`.
Sora2ClientDep = Annotated[Sora2Client, Depends(get_client)]

_hook_lock = threading.Lock()
_hooked = False


def drain_on_uvicorn_shutdown() -> None:
    """Make uvicorn drain the services of an app as soon as it begins to shut down.

    uvicorn waits for open responses to finish before it runs the lifespan's shutdown, and
    an event stream of a video ends only when the video does: without this, Ctrl-C or
    SIGTERM would wait minutes (or until ``--timeout-graceful-shutdown`` cancels everything
    with an error in the log). This wraps ``uvicorn.Server.shutdown`` (once per process) so
    that it first calls :meth:`Sora2Service.drain` on the services running in its thread:
    open event streams end at once and new submissions get a 503, then the lifespan cancels
    the pollers. Requires uvicorn.
    """
    global _hooked
    import uvicorn

    with _hook_lock:
        if _hooked:
            return
        original = uvicorn.Server.shutdown

        @functools.wraps(original)
        async def shutdown(
            self: uvicorn.Server, sockets: list[socket.socket] | None = None
        ) -> None:
            me = threading.get_ident()  # a process may run several servers, one per thread
            for service in list(_LIVE):
                if service.thread == me:
                    service.drain()
            await original(self, sockets)

        uvicorn.Server.shutdown = shutdown  # type: ignore[method-assign]
        _hooked = True
