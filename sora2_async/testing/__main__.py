"""``python -m sora2_async.testing``: run the simulator as an HTTP server on loopback.

Example::

    python -m sora2_async.testing --port 8765 --time-scale 60 --api-key demo-key

The API is then at ``http://127.0.0.1:8765`` (``NANOPHOTO_BASE_URL``), videos at
``http://localhost:8765/_videos/<taskId>.mp4`` and the stats at
``http://127.0.0.1:8765/_simulator/stats``. Without ``--api-key`` any non-empty key works.
Needs uvicorn (the ``server`` extra).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from ._config import Faults, RateLimitPolicy, WindowKind
from ._server import run_server
from ._simulator import Simulator

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m sora2_async.testing",
        description="Serve a simulator of the nanophoto.ai Sora 2 API over HTTP.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=8765, help="port to listen on (default 8765)")
    add("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    add("--api-key", action="append", default=[], metavar="KEY", help="accept KEY (repeatable)")
    add("--credits", type=int, default=1_000_000, help="starting credits of each key")
    add("--seed", default="0", help="seed of every random draw (default 0)")
    add("--failure-rate", type=float, default=0.0, help="chance a task fails (0..1)")
    add("--rate-limit", type=int, default=100, help="requests per window per key (100)")
    add("--rate-window", type=float, default=3600.0, help="window in simulated seconds")
    add("--fixed-window", action="store_true", help="fixed clock windows, not sliding")
    add("--retry-after", action="store_true", help="send Retry-After with 429s")
    add("--no-count-rejected", action="store_true", help="429s do not count against the limit")
    add("--latency", type=float, default=0.0, help="seconds of injected latency")
    add("--latency-rate", type=float, default=0.0, help="chance of injected latency")
    add("--server-error-rate", type=float, default=0.0, help="chance of 500 INTERNAL_ERROR")
    add("--drop-rate", type=float, default=0.0, help="chance of a dropped connection")
    add("--malformed-rate", type=float, default=0.0, help="chance of a malformed body")
    add("--slow-body-rate", type=float, default=0.0, help="chance of a slow body")
    add("--log-level", default="info", help="uvicorn's log level (default info)")
    return parser


def simulator_from_args(args: argparse.Namespace) -> Simulator:
    """The :class:`Simulator` the parsed command line describes.

    Raises:
        ValueError, TypeError: for out-of-range values.
    """
    policy = RateLimitPolicy(
        args.rate_limit,
        args.rate_window,
        window=WindowKind.FIXED if args.fixed_window else WindowKind.SLIDING,
        count_rejected=not args.no_count_rejected,
        retry_after=args.retry_after,
    )
    faults = Faults(
        latency=args.latency,
        latency_probability=args.latency_rate,
        server_error=args.server_error_rate,
        drop_connection=args.drop_rate,
        malformed=args.malformed_rate,
        slow_body=args.slow_body_rate,
    )
    return Simulator(
        api_keys=args.api_key or None,
        credits=args.credits,
        rate_limit=policy,
        failure_rate=args.failure_rate,
        faults=faults,
        seed=args.seed,
        time_scale=args.time_scale,
        clock=time.monotonic,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until interrupted; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import uvicorn  # noqa: F401
    except ImportError:  # the 'server' extra: one line, not a traceback
        print(
            "error: serving the simulator over HTTP needs uvicorn: "
            "pip install 'sora2-async[server]'",
            file=sys.stderr,
        )
        return 2
    try:
        simulator = simulator_from_args(args)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"sora2 simulator: API at http://{host}:{args.port} "
        f"(stats at /_simulator/stats, videos under /_videos/), "
        f"time scale {args.time_scale:g}, "
        f"{'keys: ' + str(len(args.api_key)) if args.api_key else 'any key accepted'}",
        file=sys.stderr,
        flush=True,
    )
    run_server(simulator, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
