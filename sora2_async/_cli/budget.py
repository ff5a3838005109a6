"""Where the ``sora2`` commands keep a key's budget: a store file shared by every process.

By default each key has one :class:`~sora2_async.SQLiteLimiter` file in the user's state
folder (``platformdirs``), named by a fingerprint of the key and the base URL: SHA-256, never
the key itself. Two runs on one key at once, or a run restarted within the hour, then see
one budget. ``--budget PATH`` picks another file; ``--budget memory`` keeps the budget in the
process (as the Python API does by default). ``--redis URL`` (or ``$NANOPHOTO_REDIS_URL``)
keeps it in Redis instead, shared by every host (:class:`~sora2_async.redis.RedisLimiter`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .._budget import RateLimit
from .._client import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
from .._errors import BudgetStoreError
from .._fingerprint import key_fingerprint
from .._limits import Limiter
from .._sqlite_limiter import SQLiteLimiter
from .._state import REDIS_URL_ENV, budget_path, budget_timings

__all__ = [
    "MEMORY",
    "REDIS_URL_ENV",
    "add_budget_option",
    "budget_path",
    "key_fingerprint",
    "open_budget",
    "redis_url_of",
]

MEMORY = "memory"


def add_budget_option(parser: argparse.ArgumentParser) -> None:
    """``--budget PATH|memory`` on a command that spends the key's budget."""
    parser.add_argument(
        "--budget",
        metavar="PATH",
        help="the budget store shared by every sora2 process of this key (default: one file "
        "per key in the user's state folder); 'memory' keeps it in this process alone",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help=f"keep the budget, and a batch's journal, in Redis, shared by every host "
        f"(default: ${REDIS_URL_ENV}; needs the 'redis' extra)",
    )


def redis_url_of(args: argparse.Namespace) -> str | None:
    """The Redis of ``--redis``, else ``$NANOPHOTO_REDIS_URL``, else ``None``."""
    return getattr(args, "redis", None) or os.environ.get(REDIS_URL_ENV) or None


def open_budget(args: argparse.Namespace) -> Limiter | None:
    """The store named by ``--budget`` or ``--redis`` (``None`` for ``memory``: the client
    makes one). A Redis store is an async context manager: enter it before use.

    Its rate limit and timings follow ``--rate-limit`` and ``--time-scale`` as the client's
    own would.

    Raises:
        BudgetStoreError: the file is not a budget store, or cannot be opened.
    """
    choice = getattr(args, "budget", None)
    if choice == MEMORY:
        return None
    timings = budget_timings(RateLimit(args.rate_limit), args.time_scale)
    redis_url = redis_url_of(args)
    if redis_url and not choice:
        try:
            from ..redis import RedisLimiter
        except ImportError as exc:
            raise BudgetStoreError(str(exc)) from None
        return RedisLimiter.from_url(redis_url, base_url=args.base_url, **timings)
    if choice:
        path = Path(choice).expanduser()
    else:
        base_url = args.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        path = budget_path(os.environ.get(API_KEY_ENV, ""), base_url)
    return SQLiteLimiter(path, **timings)
