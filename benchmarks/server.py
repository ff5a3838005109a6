"""The simulator over real HTTP for the overhead runs, in a process of its own.

``python -m benchmarks.server PORT`` serves a :class:`~sora2_async.testing.Simulator` with
real uvicorn on ``127.0.0.1:PORT`` (:func:`~sora2_async.testing.run_server`) and stops when
its standard input closes. Its rate limit is lifted and its videos never finish during a
run, so a measurement has a fixed number of videos in flight.

Why another process: the server is Python too. In the benchmark's own process its thread
would share the GIL with the client, so the client's CPU time and throughput would be mixed
with the server's; in its own process it gets its own core of the two.

Why ``run_server`` and not ``serve_in_thread``: ``serve_in_thread`` binds its listening
socket with protocol 0, so asyncio does not set ``TCP_NODELAY`` on the connections it
accepts, and every answer on a kept-alive connection waits ~40 ms for the client's delayed
ACK (Nagle): about 23 requests per second per connection. That would measure the kernel's
timers, not the SDK. ``run_server`` lets uvicorn create the socket, which gets it right.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx

from sora2_async.testing import Durations, RateLimitPolicy, Simulator, run_server

__all__ = ["serve_in_child"]

#: Longer than any run: every task stays "processing" while it is measured.
FOREVER = 7 * 24 * 3600.0
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serve_in_child(startup_timeout: float = 20.0) -> Iterator[str]:
    """Start ``python -m benchmarks.server``; yield its base URL once it answers; stop it."""
    port = _free_port()
    url = f"http://{HOST}:{port}"
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server", str(port)], stdin=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                httpx.get(f"{url}/", timeout=1.0)  # any answer (a 404) means it listens
                break
            except httpx.TransportError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        assert child.stdin is not None
        child.stdin.close()  # its signal to stop
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _stop_when_stdin_closes() -> None:
    sys.stdin.read()  # returns at EOF: the parent is done, or gone
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown


def main() -> None:
    """Serve on the port given as the only argument until standard input closes."""
    sim = Simulator(
        rate_limit=RateLimitPolicy(requests=10**9, per=3600.0),
        durations=Durations(sora2=FOREVER, pro_standard=FOREVER, pro_high=FOREVER),
        seed=0,
    )
    threading.Thread(target=_stop_when_stdin_closes, daemon=True).start()
    run_server(sim, host=HOST, port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
