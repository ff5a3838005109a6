"""The stores an app with several workers shares: one key's budget and the service's videos.

:func:`open_shared_stores` picks them the way the ``sora2`` command picks its budget: Redis
when a URL is given (or ``$NANOPHOTO_REDIS_URL`` is set), for workers on several hosts;
otherwise SQLite files in the user's state folder, one pair per key fingerprint, for the
workers of one host. The budget file is the one the ``sora2`` command uses, so a batch job
and the app on one host share one budget too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import attrs

from .._budget import RateLimit
from .._client import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
from .._limits import Limiter
from .._sqlite_limiter import SQLiteLimiter
from .._state import REDIS_URL_ENV, budget_path, budget_timings, state_folder, videos_path
from .._video_records import VideoStore
from ._sqlite_store import SQLiteVideoStore

__all__ = ["SharedStores", "open_shared_stores"]


@attrs.frozen
class SharedStores:
    """The budget to give the client and the store to give the service, and where they are."""

    budget: Limiter
    videos: VideoStore
    where: str  #: ``"redis"`` or the SQLite folder's path (never a URL: it may hold a password)


@contextlib.asynccontextmanager
async def open_shared_stores(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    redis_url: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    rate_limit: RateLimit | None = None,
    time_scale: float = 1.0,
    lease_ttl: float = 30.0,
) -> AsyncIterator[SharedStores]:
    """Open the budget and the video store every worker of an app shares; close them after.

    ``redis_url`` (default ``$NANOPHOTO_REDIS_URL``) puts both in Redis (the ``redis``
    extra); without one they are SQLite files in ``state_dir`` (default: the user's state
    folder), named by a fingerprint of the key and the base URL (``api_key`` and
    ``base_url``, else ``$NANOPHOTO_API_KEY`` and ``$NANOPHOTO_BASE_URL``), never the key.
    ``time_scale`` shrinks the window and the leases as ``Sora2Client(time_scale=...)``
    does, for a simulator run faster (tests, demos).

    Raises:
        BudgetStoreError: the budget store cannot be opened, or no key is given or set.
        VideoStoreError: the video store cannot be opened.
    """
    if not time_scale > 0:
        raise ValueError(f"time_scale must be positive, not {time_scale!r}")
    rate_limit = rate_limit or RateLimit()
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    timings = budget_timings(rate_limit, time_scale)
    # Not below 5 s however fast the simulator runs: a worker stalled a moment (a busy
    # machine, a slow disk) must not lose its videos to another one.
    video_ttl = max(5.0, lease_ttl / time_scale)
    redis_url = redis_url or os.environ.get(REDIS_URL_ENV)
    async with contextlib.AsyncExitStack() as stack:
        if redis_url:
            from ..redis import RedisLimiter, RedisVideoStore

            budget: Limiter = await stack.enter_async_context(
                RedisLimiter.from_url(redis_url, api_key=key, base_url=base, **timings)
            )
            videos: VideoStore = await stack.enter_async_context(
                RedisVideoStore.from_url(redis_url, api_key=key, base_url=base, lease_ttl=video_ttl)
            )
            where = "redis"
        else:
            folder = Path(state_dir) if state_dir is not None else state_folder()
            budget = SQLiteLimiter(budget_path(key, base, folder), **timings)
            stack.push_async_callback(budget.aclose)
            videos = await stack.enter_async_context(
                SQLiteVideoStore(videos_path(key, base, folder), lease_ttl=video_ttl)
            )
            where = str(folder)
        yield SharedStores(budget, videos, where)
