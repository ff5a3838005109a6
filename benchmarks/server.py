"""The simulator over real HTTP for the overhead runs, in a process of its own.

``python -m benchmarks.server`` serves a :class:`~sora2_async.testing.Simulator` with
:func:`~sora2_async.testing.serve_in_thread` (real uvicorn) on a free loopback port, prints the
base URL as its first line, and stops when its standard input closes. Its rate limit is lifted
and its videos never finish during a run, so a measurement has a fixed number of videos in
flight.

Why another process: the server is Python too. In the benchmark's own process its thread
would share the GIL with the client, so the client's CPU time and throughput would be mixed
with the server's; in its own process it gets its own core of the two.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

from sora2_async.testing import Durations, RateLimitPolicy, Simulator, serve_in_thread

__all__ = ["serve_in_child"]

#: Longer than any run: every task stays "processing" while it is measured.
FOREVER = 7 * 24 * 3600.0


@contextlib.contextmanager
def serve_in_child() -> Iterator[str]:
    """Start ``python -m benchmarks.server``; yield its base URL; stop it on exit."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()  # printed once it listens
        if not url.startswith("http://"):
            raise RuntimeError(f"the benchmark server did not start (it said {url!r})")
        yield url
    finally:
        assert child.stdin is not None
        child.stdin.close()  # its signal to stop
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> None:
    """Serve until standard input closes."""
    sim = Simulator(
        rate_limit=RateLimitPolicy(requests=10**9, per=3600.0),
        durations=Durations(sora2=FOREVER, pro_standard=FOREVER, pro_high=FOREVER),
        seed=0,
    )
    with serve_in_thread(sim, port=0, log_level="error") as url:
        print(url, flush=True)
        sys.stdin.read()  # returns at EOF: the parent is done, or gone


if __name__ == "__main__":
    main()
