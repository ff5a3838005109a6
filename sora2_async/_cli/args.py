"""The ``sora2`` command line: its argument parser (stdlib ``argparse``)."""

from __future__ import annotations

import argparse

from .. import __version__
from .._models import AspectRatio, Mode, ModelTier
from .budget import add_budget_option

__all__ = ["DEMO_TIME_SCALE", "build_parser"]

#: The demo's default: a simulated hour in ten seconds.
DEMO_TIME_SCALE = 360.0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _common(*, time_scale: float | None = 1.0) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    shown = "1" if time_scale == 1.0 else f"{DEMO_TIME_SCALE:g}"
    common.add_argument(
        "--time-scale",
        type=_positive_float,
        default=time_scale,
        metavar="N",
        help=f"run N times faster, to match a simulator started with --time-scale N "
        f"(default {shown})",
    )
    common.add_argument(
        "--rate-limit",
        type=_positive_int,
        default=100,
        metavar="N",
        help="the key's requests per hour (default 100; more for keys with a bought limit)",
    )
    return common


def _request_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--mode", choices=[m.value for m in Mode], help="default: imageToVideo with images")
    add("--tier", choices=[t.value for t in ModelTier], default=ModelTier.SORA2.value)
    add("--ratio", choices=[r.value for r in AspectRatio], default=AspectRatio.PORTRAIT.value)
    add("--duration", type=int, choices=(10, 15), default=10, help="seconds (default 10)")
    add("--image-url", action="append", default=[], metavar="URL", help="repeatable")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``sora2`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="sora2",
        description="Generate Sora 2 videos with nanophoto.ai, making the key's 100 requests "
        "an hour go as far as they can. Try it without a key: sora2 demo",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()
    spends = argparse.ArgumentParser(add_help=False, parents=[common])
    add_budget_option(spends)
    _talks_to_the_api(spends)

    generate = commands.add_parser(
        "generate", parents=[spends], help="submit one video", description="Submit one video."
    )
    generate.add_argument("prompt")
    _request_options(generate)
    generate.add_argument("--wait", action="store_true", help="wait until it is done")
    generate.add_argument("--out", metavar="FILE", help="save the video there (implies --wait)")

    status = commands.add_parser(
        "status", parents=[spends], help="one status check of a task, or a batch folder offline"
    )
    status.add_argument("task_id", metavar="TASK_ID|DIR")

    wait = commands.add_parser("wait", parents=[spends], help="wait for a task to finish")
    wait.add_argument("task_id")
    wait.add_argument("--out", metavar="FILE", help="save the video there")

    batch = commands.add_parser(
        "batch",
        parents=[spends],
        help="generate a file of prompts into a folder (resumable)",
        description="Generate every request of PROMPTS (JSONL, or one prompt a line) into "
        "DIR. A journal in DIR makes the run resumable: run the same command again after a "
        "crash or Ctrl-C and nothing is paid twice.",
    )
    batch.add_argument("prompts", metavar="PROMPTS", help="JSONL or plain-text file")
    _batch_options(batch, out_required=True)
    batch.add_argument(
        "--max-credits",
        type=_positive_int,
        metavar="C",
        help="refuse (sending nothing) if the requests to send cost more than C credits",
    )
    batch.add_argument("--yes", "-y", action="store_true", help="do not ask before spending")
    batch.add_argument(
        "--resubmit-uncertain",
        action="store_true",
        help="send again requests whose earlier answer was lost (they may be charged twice)",
    )
    batch.add_argument(
        "--journal",
        metavar="PATH",
        help="keep the journal in this SQLite file (default: DIR/.sora2-journal.sqlite; with "
        "--redis the journal is in Redis unless --journal is given)",
    )
    batch.add_argument(
        "--batch-name",
        metavar="NAME",
        help="with --redis: the batch's journal there, shared by every host that runs it "
        "(default: the name DIR recorded, else a digest of PROMPTS' requests)",
    )

    simulator = commands.add_parser(
        "simulator",
        parents=[common],
        help="serve the API simulator on loopback",
        description="Serve a simulator of the API over HTTP (needs the 'server' extra). "
        "Further options go to python -m sora2_async.testing (see its --help).",
    )
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=8765)

    demo = commands.add_parser(
        "demo",
        parents=[_common(time_scale=DEMO_TIME_SCALE)],
        help="a batch of a dozen videos against the built-in simulator (no key, no network)",
    )
    _batch_options(demo, out_required=False)
    _user_facing(parser, generate=generate, status=status, wait=wait)
    return parser


# -- issue 15: the version, JSON for one video, shell completion ---------------------------------


def _talks_to_the_api(parser: argparse.ArgumentParser) -> None:
    # Only the commands that talk to the API take a base URL (not the simulator, not the demo).
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="the API's base URL (default: $NANOPHOTO_BASE_URL, then https://nanophoto.ai)",
    )


def _user_facing(parser: argparse.ArgumentParser, **one_video: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"sora2 {__version__}")
    for command in one_video.values():
        command.add_argument("--json", action="store_true", help="print one JSON object")
    one_video["status"].description = (
        "TASK_ID: one check-status request (needs the key). DIR: a batch folder's journal and "
        "manifest read offline, with no key and no request: counts by state, credits, "
        "uncertain submissions, and what a resume would send."
    )
    try:
        import shtab
    except ImportError:  # shtab is in the 'cli' extra; completion is optional
        return
    shtab.add_argument_to(parser, ["--print-completion"], help="print a shell completion script")


def _batch_options(parser: argparse.ArgumentParser, *, out_required: bool) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        required=out_required,
        default=None if out_required else "sora2-demo",
        help="the folder for the videos, the journal and manifest.jsonl",
    )
    parser.add_argument(
        "--max-in-flight",
        type=_positive_int,
        metavar="N",
        help="at most N videos at once (default: as many as the budget carries)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON events, one a line")
