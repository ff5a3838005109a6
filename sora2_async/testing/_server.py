"""Serving a simulator over real HTTP with uvicorn: in a background thread, or in the foreground.

uvicorn comes with the ``server`` extra (``pip install 'sora2-async[server]'``); it is
imported only when a server is started, so the rest of ``sora2_async.testing`` works without.
Served over HTTP, a simulator without a clock of its own runs on ``time.monotonic`` (scaled
by its ``time_scale``): an event-loop clock would depend on which thread asks.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from ._simulator import Simulator

__all__ = ["run_server", "serve_in_thread"]

# Idle keep-alive connections stay open this long (uvicorn's default is 5 s, httpx's pool
# keeps them 5 s too: a client reusing one just as the server closes it sees a reset).
_KEEP_ALIVE = 30


def _require_uvicorn() -> None:
    try:
        import uvicorn  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "serving the simulator over HTTP needs uvicorn: pip install 'sora2-async[server]'"
        ) from None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive answer waits ~40 ms for Nagle's algorithm.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


@contextlib.contextmanager
def serve_in_thread(
    simulator: Simulator | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    startup_timeout: float = 10.0,
) -> Iterator[str]:
    """Serve ``simulator`` (a fresh :class:`Simulator` if ``None``) with uvicorn in a
    background thread; yield its base URL once it listens; stop it on exit.

    ``port=0`` picks a free port. The yielded URL (``http://127.0.0.1:PORT``) is the API's
    base URL; videos are served on the same port under another host name (see
    :class:`SimulatorApp`), and ``GET <base>/_simulator/stats`` gives the stats.
    uvicorn's logs go to the ``uvicorn`` loggers without touching the logging setup.

    Raises:
        RuntimeError: when uvicorn is missing, or the server does not start within
            ``startup_timeout`` seconds.
        OSError: when the address cannot be bound (port in use, say).
    """
    _require_uvicorn()
    import uvicorn

    sim = simulator if simulator is not None else Simulator(clock=time.monotonic)
    sim._use_real_clock(time.monotonic)
    sock = _bind(host, port)
    config = uvicorn.Config(
        sim.asgi_app(),
        lifespan="on",
        log_level=log_level,
        log_config=None,
        access_log=False,
        timeout_keep_alive=_KEEP_ALIVE,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sora2-simulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator's HTTP server did not start")
            time.sleep(0.005)
        yield _url(host, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()


def run_server(
    simulator: Simulator,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    log_level: str = "info",
) -> None:
    """Serve ``simulator`` in the foreground until interrupted (Ctrl-C).

    Raises:
        RuntimeError: when uvicorn is missing.
    """
    _require_uvicorn()
    import uvicorn

    simulator._use_real_clock(time.monotonic)
    config = uvicorn.Config(
        simulator.asgi_app(),
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_keep_alive=_KEEP_ALIVE,
    )
    uvicorn.Server(config).run()
