"""``sora2``'s entry: parse, run the subcommand on anyio, turn errors into one line and a status.

Exit statuses: 0 done; 1 something failed (a video, the API, insufficient credits, not
confirmed); 2 a usage error, a bad input line, a missing key, a refusal by ``--max-credits``
(nothing was submitted); 130 interrupted (the journal is intact).
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio

from .._errors import InvalidRequestError, Sora2Error
from .._journal import JournalError
from . import commands
from .args import build_parser
from .demo import demo
from .errors import sole_exception
from .inputs import InputError
from .runner import EXIT_INTERRUPTED, CLIError

if sys.version_info < (3, 11):  # pragma: no cover - the builtin from 3.11 on
    from exceptiongroup import BaseExceptionGroup

__all__ = ["run"]

_ASYNC: dict[str, Callable[..., Awaitable[int]]] = {
    "batch": commands.batch,
    "demo": demo,
    "generate": commands.generate,
    "status": commands.status,
    "wait": commands.wait,
}


def _fail(message: str, code: int) -> int:
    for line in message.splitlines():
        print(f"sora2: error: {line}", file=sys.stderr)
    return code


class _OneLine(logging.Formatter):
    """A log record as one line, its traceback left out: the user reads it, not a developer."""

    def format(self, record: logging.LogRecord) -> str:
        return f"sora2: {record.levelname.lower()}: {record.getMessage()}"


def _log_warnings_as_lines() -> Callable[[], None]:
    """Print the SDK's warnings as ``sora2: warning: ...`` lines; returns the undo."""
    logger = logging.getLogger("sora2_async")
    if logger.handlers or logging.getLogger().handlers:
        return lambda: None  # an embedding program's own logging stays as it is
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    return lambda: logger.removeHandler(handler)


def _unwrapped(call: Callable[[], int]) -> int:
    """``call()``, an error that a task group wrapped (coredis's client runs one around
    the whole command with ``--redis``) raised as itself: it is still the user's one line."""
    try:
        return call()
    except BaseExceptionGroup as group:
        sole = sole_exception(group)
        if sole is None:
            raise
        raise sole from None


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``sora2`` with ``argv`` (default: the process's); return the exit status."""
    undo = _log_warnings_as_lines()
    try:
        return _run(argv)
    finally:
        undo()


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "simulator":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "simulator":
            return commands.simulator(args, extra)
        return _unwrapped(lambda: anyio.run(_ASYNC[args.command], args))
    except CLIError as exc:
        return _fail(str(exc), exc.code)
    except InputError as exc:
        return _fail(f"{exc} (nothing was submitted)", 2)
    except InvalidRequestError as exc:
        return _fail(exc.message, 2)
    except JournalError as exc:  # unreadable, or not writable: nothing more was sent
        return _fail(str(exc), 2)
    except Sora2Error as exc:
        return _fail(str(exc).splitlines()[0], 1)
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 2)
    except sqlite3.Error as exc:  # a journal failure that got past the journal's own wrapping
        return _fail(f"the journal failed: {exc}", 2)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
