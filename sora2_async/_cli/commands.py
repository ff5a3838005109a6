"""The ``sora2`` subcommands other than the demo: generate, status, wait, batch, simulator."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from .._budget import RateLimit
from .._client import API_KEY_ENV, Sora2Client
from .._errors import BudgetStoreError
from .._models import VideoRequest
from .budget import open_budget
from .display import JsonReporter, Reporter, RichReporter
from .inputs import read_requests
from .runner import BatchOptions, CLIError, run_batch

__all__ = ["batch", "generate", "open_client", "simulator", "status", "wait"]


@asynccontextmanager
async def open_client(args: argparse.Namespace) -> AsyncIterator[Sora2Client]:
    """A client from ``--base-url``, ``--time-scale``, ``--budget`` and the environment's
    key, and the budget store it shares with every other ``sora2`` of the key.

    Raises:
        CLIError: when no key is set (naming the variable), or the store is unusable.
    """
    if not os.environ.get(API_KEY_ENV, "").strip():
        raise CLIError(
            f"no API key: set the {API_KEY_ENV} environment variable (make one at "
            "nanophoto.ai -> Settings -> API Keys), or try `sora2 demo`, which needs none"
        )
    try:
        store = open_budget(args)
    except BudgetStoreError as exc:
        raise CLIError(f"{exc} (or pass --budget PATH, or --budget memory)") from None
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(store, contextlib.AbstractAsyncContextManager):
            await stack.enter_async_context(store)  # a Redis store: its connection pool
        elif store is not None:
            stack.push_async_callback(store.aclose)
        client = Sora2Client(
            base_url=args.base_url,
            time_scale=args.time_scale,
            rate_limit=store or RateLimit(args.rate_limit),
        )
        async with client:
            yield client


def ask_on_terminal(question: str) -> bool:
    """Ask on the terminal (stderr), yes or no; refuse when nobody can answer.

    Raises:
        CLIError: when standard input is not a terminal.
    """
    if not sys.stdin.isatty():
        raise CLIError(
            f"{question.removesuffix(' Submit? [y/N] ')}: pass --yes to submit without a "
            "question (nothing was submitted)"
        )
    sys.stderr.write(question)
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def reporter_for(args: argparse.Namespace) -> Reporter:
    """JSON lines with ``--json``, the rich display otherwise."""
    return JsonReporter() if args.json else RichReporter()


async def batch(args: argparse.Namespace) -> int:
    """``sora2 batch PROMPTS --out DIR``: every line is checked before anything is spent."""
    lines = read_requests(args.prompts)  # InputError names every bad line
    out_dir = Path(args.out)
    options = BatchOptions(
        out_dir=out_dir,
        journal_path=Path(args.journal) if args.journal else None,
        max_in_flight=args.max_in_flight,
        max_credits=args.max_credits,
        yes=args.yes,
        resubmit_uncertain=args.resubmit_uncertain,
    )
    async with open_client(args) as client:
        return await run_batch(client, lines, options, reporter_for(args), ask_on_terminal)


async def generate(args: argparse.Namespace) -> int:
    """``sora2 generate PROMPT``: submit one video; wait for it and save it if asked."""
    request = VideoRequest(
        args.prompt,
        mode=args.mode,
        model_tier=args.tier,
        aspect_ratio=args.ratio,
        duration=args.duration,
        image_urls=tuple(args.image_url),
    )
    async with open_client(args) as client:
        task = await client.generate(request)
        print(f"submitted {task.task_id} ({request.credits} credits)", flush=True)
        if not (args.wait or args.out):
            print(f"follow it with: sora2 wait {task.task_id} --out video.mp4")
            return 0
        video = await client.wait(task)
        print(f"completed {video.task_id}: {video.url}")
        if args.out:
            print(f"saved {await client.download(video, args.out)}")
    return 0


async def status(args: argparse.Namespace) -> int:
    """``sora2 status TASK_ID``: exactly one check-status request."""
    async with open_client(args) as client:
        got = await client.check_status(args.task_id)
    print(f"{got.task_id}: {got.state.value}" + (f" ({got.progress})" if got.progress else ""))
    for name, value in (
        ("video", got.video_url),
        ("generation time", f"{got.generation_time:g}s" if got.generation_time else None),
        ("credits", got.credits_used),
        ("error", f"{got.error} [{got.error_code}]" if got.error else None),
    ):
        if value is not None:
            print(f"  {name}: {value}")
    return 0


async def wait(args: argparse.Namespace) -> int:
    """``sora2 wait TASK_ID``: poll under the budget until it ends; save it if asked."""
    async with open_client(args) as client:
        video = await client.wait(args.task_id)
        print(f"completed {video.task_id}: {video.url}")
        if args.out:
            print(f"saved {await client.download(video, args.out)}")
    return 0


def simulator(args: argparse.Namespace, extra: list[str]) -> int:
    """``sora2 simulator``: ``python -m sora2_async.testing`` with the common options."""
    from ..testing.__main__ import main as serve

    host, port = args.host, args.port
    if args.base_url:  # listen where clients will be pointed
        url = urllib.parse.urlsplit(args.base_url)
        host, port = url.hostname or host, url.port or port
    argv = ["--host", host, "--port", str(port), "--time-scale", f"{args.time_scale:g}"]
    argv += ["--rate-limit", str(args.rate_limit)]
    return serve([*argv, *extra])
