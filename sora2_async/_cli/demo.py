"""``sora2 demo``: the batch command on the built-in simulator — no key, no network.

The simulator runs in this process (the SDK talks to it through an httpx transport, no
socket) with time compressed 360 times: a simulated hour of budget in ten seconds, a
three-minute video in half a second. A dozen varied requests (both modes, every tier, both
ratios and durations) go through the same engine as ``sora2 batch``, with the same display,
into ``./sora2-demo/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio
import httpx

from .._budget import RateLimit
from .._client import Sora2Client
from .._models import VideoRequest
from ..testing import Simulator
from .commands import reporter_for
from .inputs import Line
from .runner import JOURNAL_NAME, BatchOptions, run_batch

__all__ = ["DEMO_REQUESTS", "demo"]

_IMAGES = ("https://example.com/cat.png", "https://example.com/beach.jpg")

#: The demo's batch: both modes, all three tiers, both ratios, both durations.
DEMO_REQUESTS = (
    VideoRequest("a corgi surfing a wave at sunset", aspect_ratio="landscape"),
    VideoRequest("a paper boat drifting down a rainy street"),
    VideoRequest("time-lapse of a city skyline from dusk to night", duration=15),
    VideoRequest("a hummingbird hovering over a red flower, slow motion"),
    VideoRequest("the cat in this photo starts to dance", image_urls=_IMAGES[:1]),
    VideoRequest("waves roll in on this beach", image_urls=_IMAGES[1:], aspect_ratio="landscape"),
    VideoRequest("a lighthouse in a storm, cinematic", model_tier="sora2-pro-standard"),
    VideoRequest(
        "a steam train crossing a viaduct in autumn",
        model_tier="sora2-pro-standard",
        aspect_ratio="landscape",
        duration=15,
    ),
    VideoRequest("macro shot of dew on a spider web at dawn", model_tier="sora2-pro-high"),
    VideoRequest(
        "the cat from the photo walks through a neon city",
        image_urls=_IMAGES[:1],
        model_tier="sora2-pro-high",
        aspect_ratio="landscape",
    ),
    VideoRequest("a chef flipping pancakes in a busy kitchen"),
    VideoRequest("northern lights over a frozen lake", aspect_ratio="landscape", duration=15),
)

_FOR_REAL = """\
To run it for real:
  1. make an API key at nanophoto.ai -> Settings -> API Keys, and
     export NANOPHOTO_API_KEY=...
  2. write your requests to a file: one prompt a line, or JSONL such as
     {"prompt": "a corgi surfing", "model_tier": "sora2", "aspect_ratio": "landscape"}
  3. sora2 batch prompts.jsonl --out videos/
     (it shows the cost and asks first; run it again after a crash: nothing is paid twice)"""


async def demo(args: argparse.Namespace) -> int:
    """Run the demo batch on the built-in simulator."""
    out_dir = Path(args.out)
    lines = [Line(number, request) for number, request in enumerate(DEMO_REQUESTS, start=1)]
    options = BatchOptions(out_dir=out_dir, max_in_flight=args.max_in_flight, simulated=True)
    reporter = reporter_for(args)
    await _forget_earlier_demo(out_dir)
    simulator = Simulator(
        seed="sora2-demo",
        time_scale=args.time_scale,
        rate_limit=RateLimit(args.rate_limit),
    )
    http = httpx.AsyncClient(transport=simulator.transport())
    client = Sora2Client(
        "demo-key",
        http_client=http,
        time_scale=args.time_scale,
        rate_limit=RateLimit(args.rate_limit),
    )
    reporter.note(
        f"sora2 demo: {len(lines)} videos on the built-in simulator, time running "
        f"{args.time_scale:g}x faster (a simulated hour of budget in "
        f"{3600 / args.time_scale:.0f} s); no key, no network, no credits"
    )
    async with client:
        code = await run_batch(client, lines, options, reporter, _never_asked)
    reporter.note(_FOR_REAL)
    return code


async def _forget_earlier_demo(out_dir: Path) -> None:
    # An earlier demo's tasks lived in an earlier simulator: start the journal afresh (the
    # same seed gives the same task ids, so the videos are simply saved again).
    for name in (JOURNAL_NAME, f"{JOURNAL_NAME}-wal", f"{JOURNAL_NAME}-shm", "manifest.jsonl"):
        await anyio.Path(out_dir / name).unlink(missing_ok=True)


def _never_asked(question: str) -> bool:  # pragma: no cover - a simulated run never asks
    return True
