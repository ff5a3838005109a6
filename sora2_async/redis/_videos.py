"""``RedisVideoStore``: a service's videos in Redis, shared by every worker of every host.

The :class:`~sora2_async.fastapi.VideoStore` protocol: each change is one call of one Lua
script (``videos.lua``), atomic, on the server's clock (``TIME``) for leases. The script
publishes each change's video id on a channel; a store that was entered (``async with``)
listens to it on one connection, so an event stream on any host wakes as soon as another
host writes. Without the listener (not entered, or the subscription lost), event streams
read the record every ``poll_interval`` instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import coredis
import coredis.exceptions

from .._video_records import (
    UNCERTAIN,
    BatchRecord,
    Created,
    IdempotencyConflictError,
    VideoRecord,
    VideoStoreError,
    poll_for_change,
    record_fields,
    record_from_fields,
)
from ._common import retrying, tagged_keys
from ._limiter import _namespace_for, _text

__all__ = ["RedisVideoStore"]

logger = logging.getLogger("sora2_async")

_SCRIPT = resources.files(__package__).joinpath("videos.lua").read_text(encoding="utf-8")
_KEYS = ("videos", "live", "ended", "idem", "idemat", "batches", "batchat")


def _wire(fields: Mapping[str, Any]) -> dict[str, str | None]:
    """Values as the script keeps them: strings (``repr`` of a float: exact), or null."""
    out: dict[str, str | None] = {}
    for name, value in fields.items():
        if value is None or isinstance(value, str):
            out[name] = value
        elif isinstance(value, float):
            out[name] = repr(value)
        else:
            out[name] = str(value)
    return out


class RedisVideoStore:
    """A :class:`~sora2_async.fastapi.VideoStore` in Redis, for an app on several hosts.

    Use it as ``async with RedisVideoStore.from_url(url) as store`` and give it to
    :class:`~sora2_async.fastapi.Sora2Service` (with a ``RedisLimiter`` as the client's
    budget): every worker of every host answers for every video, idempotency keys hold
    everywhere, and a dead worker's videos are taken over.

    Args:
        client: a ``coredis.Redis`` (entered by :meth:`__aenter__` when this store made it).
        namespace: the key's fingerprint (:meth:`from_url` derives it): the keys are
            ``{sora2:<namespace>:videos:<name>}:...``.
        name: the app's name, when several apps share one key and one Redis.
        lease_ttl: seconds a worker's lease lasts unless renewed.
        retention: seconds an ended video (and an idempotency key) is kept.
        poll_interval: how often an event stream reads a record for a change.
        unreachable_timeout: seconds a call waits, with backoff, for an unreachable server
            before it raises :class:`~sora2_async.fastapi.VideoStoreError`.
        server_clock: for tests in virtual time only: the script's clock instead of ``TIME``.

    Raises:
        ValueError: an empty ``name`` or ``namespace``, or one with braces.
    """

    def __init__(
        self,
        client: coredis.Redis[Any],
        *,
        namespace: str,
        name: str = "app",
        lease_ttl: float = 30.0,
        retention: float = 7 * 86_400.0,
        poll_interval: float = 0.25,
        unreachable_timeout: float = 30.0,
        server_clock: Callable[[], float] | None = None,
        owns_client: bool = False,
    ) -> None:
        self._keys = tagged_keys("videos", namespace, name, _KEYS)
        if not (lease_ttl > 0 and math.isfinite(lease_ttl)):
            raise ValueError(f"lease_ttl must be positive and finite, not {lease_ttl!r}")
        self._redis = client
        self._owns_client = owns_client
        self._namespace, self._name = namespace, name
        self._script = client.register_script(_SCRIPT)
        self._ttl = float(lease_ttl)
        self._retention = retention
        self._poll = poll_interval
        self._unreachable_timeout = unreachable_timeout
        self._server_clock = server_clock
        self._closed = False
        self._channel = f"{self._keys[0]}:changes"
        self._waiters: dict[str, anyio.Event] = {}
        self._listening = False
        self._group: anyio.abc.TaskGroup | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        namespace: str | None = None,
        **kwargs: Any,
    ) -> RedisVideoStore:
        """The store on the Redis at ``url`` for one key (a fingerprint of the key and the
        base URL, from the arguments or ``$NANOPHOTO_API_KEY`` / ``$NANOPHOTO_BASE_URL``).

        Raises:
            BudgetStoreError: when no namespace can be made (no key given or set).
        """
        if namespace is None:
            namespace = _namespace_for(api_key, base_url)
        client: coredis.Redis[Any] = coredis.Redis.from_url(url, decode_responses=False)
        return cls(client, namespace=namespace, owns_client=True, **kwargs)

    def __repr__(self) -> str:
        return f"<RedisVideoStore {self._name!r} {self._namespace}>"

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts unless renewed."""
        return self._ttl

    async def __aenter__(self) -> RedisVideoStore:
        if self._owns_client:
            await self._redis.__aenter__()
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._listen, name="sora2 video changes")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        try:
            if self._group is not None:
                self._group.cancel_scope.cancel()
                await self._group.__aexit__(None, None, None)
        finally:
            if self._owns_client:
                await self._redis.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Refuse further calls (the client, if this store made it, closes on ``__aexit__``)."""
        self._closed = True

    async def create(
        self,
        videos: Sequence[VideoRecord],
        *,
        batch: BatchRecord | None = None,
        idempotency_key: str | None = None,
        digest: str = "",
    ) -> Created:
        """Record new videos (and a batch); see the protocol's ``create``."""
        target = batch.id if batch is not None else videos[0].id
        batch_text = ""
        if batch is not None:
            batch_text = json.dumps({"video_ids": list(batch.video_ids), "at": time.time()})
        records = [json.dumps(_wire(record_fields(record))) for record in videos]
        args = [idempotency_key or "", digest, target, repr(self._retention), batch_text]
        outcome, found = (_text(part) for part in await self._call("create", *args, *records))
        if outcome == "conflict":
            assert idempotency_key is not None
            raise IdempotencyConflictError(idempotency_key, found)
        return Created(found, created=outcome == "created")

    async def video(self, video_id: str) -> VideoRecord | None:
        """The record of ``video_id``, or ``None``."""
        text = await self._command(lambda: self._redis.hget(self._keys[0], video_id))
        return None if text is None else self._record(text)

    async def batch(self, batch_id: str) -> tuple[BatchRecord, list[VideoRecord]] | None:
        """A batch and its videos' records, or ``None``."""
        text = await self._command(lambda: self._redis.hget(self._keys[5], batch_id))
        if text is None:
            return None
        try:
            fields = json.loads(_text(text))
            record = BatchRecord(batch_id, tuple(fields["video_ids"]), float(fields["at"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise VideoStoreError(f"the store holds a batch it cannot read ({exc!r})") from None
        if not record.video_ids:
            return record, []
        ids = list(record.video_ids)
        texts = await self._command(lambda: self._redis.hmget(self._keys[0], ids))
        return record, [self._record(t) for t in texts if t is not None]

    async def update(
        self, video_id: str, owner: str, changes: Mapping[str, Any]
    ) -> VideoRecord | None:
        """Apply ``changes`` if ``owner`` holds the record; see the protocol's ``update``."""
        changed = json.dumps(_wire(changes))
        reply = await self._call("update", video_id, changed, UNCERTAIN, owner=owner)
        return None if reply is None or reply is False else self._record(reply)

    async def claim(self, owner: str, limit: int) -> list[VideoRecord]:
        """Take up to ``limit`` unfinished records whose lease lapsed, soonest lapsed first
        (and forget the videos that ended longer than ``retention`` ago)."""
        reply = await self._call("claim", str(limit), repr(self._retention), owner=owner)
        return [self._record(text) for text in reply]

    async def renew(self, owner: str, video_ids: Sequence[str]) -> set[str]:
        """Push the leases ``owner`` still holds among ``video_ids``."""
        if not video_ids:
            return set()
        return {_text(i) for i in await self._call("renew", *video_ids, owner=owner)}

    async def release(self, owner: str, video_ids: Sequence[str]) -> None:
        """End ``owner``'s leases on ``video_ids`` now."""
        if video_ids:
            await self._call("release", *video_ids, owner=owner)

    async def wait_change(self, video_id: str, version: int, within: float) -> None:
        """Return once the record's version moved, or after ``within`` seconds: woken by the
        store's channel when it listens, else reading the record every ``poll_interval``."""
        deadline = anyio.current_time() + within
        with anyio.move_on_after(within):
            while self._listening:
                # Registered before the read, so that no change falls between the two.
                woken = self._waiters.setdefault(video_id, anyio.Event())
                record = await self.video(video_id)
                if record is None or record.version != version:
                    return
                await woken.wait()  # set by a change, or when the listener stops
        left = deadline - anyio.current_time()
        if left > 0:  # not listening (or no longer): read the record meanwhile
            await poll_for_change(self.video, video_id, version, left, self._poll)

    async def _listen(self) -> None:
        """Wake the waiters of each video whose change is published (on one connection)."""
        while True:
            try:
                async with self._redis.pubsub(
                    channels=[self._channel], ignore_subscribe_messages=True
                ) as changes:
                    self._listening = True
                    async for message in changes:
                        waiter = self._waiters.pop(_text(message["data"]), None)
                        if waiter is not None:
                            waiter.set()
            except Exception as exc:  # Redis away: event streams read the records meanwhile
                logger.warning("not listening to video changes (%s): polling", exc)
            finally:
                self._listening = False
                waiters, self._waiters = self._waiters, {}
                for waiter in waiters.values():  # back to polling: look again now
                    waiter.set()
            await anyio.sleep(1.0)

    # -- Redis ---------------------------------------------------------------------------------

    async def _call(self, op: str, *args: str, owner: str = "") -> Any:
        now = "" if self._server_clock is None else repr(float(self._server_clock()))
        argv = [op, owner, now, repr(self._ttl), repr(time.time()), *args]
        return await self._command(lambda: self._script(keys=self._keys, args=argv))

    async def _command(self, send: Callable[[], Awaitable[Any]]) -> Any:
        """``send()`` awaited, again (with backoff) while Redis is unreachable, for at most
        ``unreachable_timeout`` seconds; every failure is a :class:`VideoStoreError`."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return await retrying(
            send,
            unreachable_for=self._unreachable_timeout,
            error=VideoStoreError,
            what="the Redis video store",
        )

    def _record(self, text: Any) -> VideoRecord:
        try:
            fields = json.loads(_text(text))
        except ValueError as exc:
            raise VideoStoreError(f"the store holds a record it cannot read ({exc!r})") from None
        return record_from_fields(fields)
