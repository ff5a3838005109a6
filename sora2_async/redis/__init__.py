"""One key's budget across hosts, in Redis: ``pip install 'sora2-async[redis]'``.

:class:`RedisLimiter` implements the :class:`~sora2_async.Limiter` protocol on a Redis
server: one Lua script applies the whole rule on the server's clock, so every process of
every host that uses the same key shares one budget. The client library is coredis (6 or
later), which is built on anyio and so runs on asyncio and trio alike; redis-py's asyncio
client calls asyncio directly and does not run on trio.

    async with RedisLimiter.from_url("redis://localhost:6379/0") as limiter:
        async with Sora2Client(rate_limit=limiter) as client:
            ...

:class:`RedisJournal` is a batch's journal there, with follower leases: every process of
every host that runs the batch (or ``client.as_completed(journal.adopt())``) shares it, each
running task has one follower, and the tasks of a follower that died are adopted:

    async with RedisJournal.from_url(url, name="my-batch") as journal:
        async with client.batch(requests, journal=journal) as results:
            ...

:class:`RedisVideoStore` is where a FastAPI app's ``Sora2Service`` keeps its videos when its
workers run on several hosts (see ``sora2_async.fastapi``).
"""

from __future__ import annotations

try:
    import coredis  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installation
    raise ImportError("sora2_async.redis needs coredis: pip install 'sora2-async[redis]'") from None

from ._journal import RedisJournal
from ._limiter import RedisLimiter
from ._videos import RedisVideoStore

__all__ = ["RedisJournal", "RedisLimiter", "RedisVideoStore"]
