"""The ``sora2`` subcommands other than the demo: generate, status, wait, batch, simulator."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from .._budget import RateLimit
from .._client import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL, Sora2Client
from .._errors import BudgetStoreError
from .._models import Video, VideoRequest
from .budget import key_fingerprint, open_budget, redis_url_of
from .display import JsonReporter, Reporter, RichReporter
from .folder_record import read_record
from .folder_status import key_matches, read_folder, render
from .inputs import read_requests
from .journals import read_redis_journal
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


def base_url_of(args: argparse.Namespace) -> str:
    """The base URL a command talks to: ``--base-url``, then the environment, then the API's."""
    return getattr(args, "base_url", None) or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL


def ask_on_terminal(question: str) -> bool:
    """Ask on the terminal (stderr), yes or no; refuse when nobody can answer.

    Raises:
        CLIError: when standard input is not a terminal.
    """
    if not sys.stdin.isatty():
        raise CLIError(
            f"{question.removesuffix('. Submit? [y/N] ')}: pass --yes to submit without a "
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
        redis_url=redis_url_of(args),
        batch_name=args.batch_name,
        follower_ttl=max(2.0, 60.0 / args.time_scale),  # as the budget's leases (budget.py)
        max_in_flight=args.max_in_flight,
        max_credits=args.max_credits,
        yes=args.yes,
        resubmit_uncertain=args.resubmit_uncertain,
        key_fingerprint=key_fingerprint(os.environ.get(API_KEY_ENV, ""), base_url_of(args)),
    )
    async with open_client(args) as client:
        return await run_batch(client, lines, options, reporter_for(args), ask_on_terminal)


def _print_json(**fields: Any) -> None:
    print(json.dumps(fields, default=str), flush=True)


def _video_fields(video: Video, saved: Path | None) -> dict[str, Any]:
    return {
        "task_id": video.task_id,
        "state": "completed",
        "video_url": video.url,
        "generation_time": video.generation_time,
        "credits_used": video.credits_used,
        "file": str(saved) if saved else None,
    }


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
        if not args.json:
            print(f"submitted {task.task_id} ({request.credits} credits)", flush=True)
        if not (args.wait or args.out):
            if args.json:
                _print_json(task_id=task.task_id, state="submitted", credits=request.credits)
            else:
                print(f"follow it with: sora2 wait {task.task_id} --out video.mp4")
            return 0
        video = await client.wait(task)
        if not args.json:
            print(f"completed {video.task_id}: {video.url}")
        saved = await client.download(video, args.out) if args.out else None
        if args.json:
            _print_json(**_video_fields(video, saved), credits=request.credits)
        elif saved:
            print(f"saved {saved}")
    return 0


async def status(args: argparse.Namespace) -> int:
    """``sora2 status TASK_ID``: exactly one check-status request; ``sora2 status DIR``:
    the batch folder read offline (no key, no request)."""
    target = Path(args.task_id)
    if await anyio.Path(target).is_dir():
        return await folder_status(target, args)
    if os.sep in args.task_id or "/" in args.task_id:
        raise CLIError(f"no such batch folder: {args.task_id}")
    async with open_client(args) as client:
        got = await client.check_status(args.task_id)
    if args.json:
        _print_json(
            task_id=got.task_id,
            state=got.state.value,
            progress=got.progress,
            video_url=got.video_url,
            generation_time=got.generation_time,
            credits_used=got.credits_used,
            error=got.error,
            error_code=got.error_code,
        )
        return 0
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
        saved = await client.download(video, args.out) if args.out else None
    if args.json:
        _print_json(**_video_fields(video, saved))
        return 0
    print(f"completed {video.task_id}: {video.url}")
    if saved:
        print(f"saved {saved}")
    return 0


async def folder_status(folder: Path, args: argparse.Namespace) -> int:
    """``sora2 status DIR``: read the folder's journal and manifest; send nothing to the API
    (a journal in Redis is read there: ``--redis``, else the URL the folder recorded)."""
    record = read_record(folder)
    journal = None
    if record is not None:
        entries = await read_redis_journal(folder, record, redis_url_of(args))
        journal = (entries, record.key_fingerprint)
    found = read_folder(folder, journal=journal)
    key = os.environ.get(API_KEY_ENV, "").strip()
    matches = key_matches(found, key_fingerprint(key, base_url_of(args)) if key else None)
    if args.json:
        _print_json(**found.to_json(matches))
    else:
        print(render(found, matches))
    return 0


def simulator(args: argparse.Namespace, extra: list[str]) -> int:
    """``sora2 simulator``: ``python -m sora2_async.testing`` with the common options."""
    from ..testing.__main__ import main as serve

    host, port = args.host, args.port
    argv = ["--host", host, "--port", str(port), "--time-scale", f"{args.time_scale:g}"]
    argv += ["--rate-limit", str(args.rate_limit)]
    return serve([*argv, *extra])
