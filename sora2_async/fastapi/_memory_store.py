"""``MemoryVideoStore``: a service's records in the process, for an app with one worker."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
import attrs

from .._video_records import (
    BatchRecord,
    Created,
    IdempotencyConflictError,
    VideoRecord,
)
from .._video_rules import claimable, claimed, released, renewed, updated

__all__ = ["MemoryVideoStore"]


class MemoryVideoStore:
    """A :class:`VideoStore` in this process's memory: nothing survives a restart, and no
    other worker sees it. The default of :class:`Sora2Service`; a service with several
    workers needs a shared one (:class:`SQLiteVideoStore`, ``RedisVideoStore``).

    Args:
        lease_ttl: seconds a lease lasts unless renewed.
        remember: how many ended videos it keeps answers for (the oldest are forgotten).
        clock: the lease clock (default: ``anyio.current_time``, so virtual time in tests).
    """

    def __init__(
        self,
        *,
        lease_ttl: float = 30.0,
        remember: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be positive, not {lease_ttl!r}")
        if remember < 1:
            raise ValueError(f"remember must be at least 1, not {remember!r}")
        self._ttl = float(lease_ttl)
        self._remember = remember
        self._clock = clock or anyio.current_time
        self._videos: OrderedDict[str, VideoRecord] = OrderedDict()
        self._batches: dict[str, BatchRecord] = {}
        self._keys: dict[str, tuple[str, str]] = {}  # idempotency key -> (id, digest)
        self._key_of: dict[str, str] = {}  # video or batch id -> its idempotency key
        self._changed: anyio.Event | None = None

    def __repr__(self) -> str:
        live = sum(1 for record in self._videos.values() if not record.done)
        return f"<MemoryVideoStore videos={len(self._videos)} unfinished={live}>"

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts unless renewed."""
        return self._ttl

    async def __aenter__(self) -> MemoryVideoStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to close; the records stay readable."""

    async def create(
        self,
        videos: Sequence[VideoRecord],
        *,
        batch: BatchRecord | None = None,
        idempotency_key: str | None = None,
        digest: str = "",
    ) -> Created:
        """Record new videos (and a batch); see :meth:`VideoStore.create`."""
        if idempotency_key is not None and idempotency_key in self._keys:
            existing, seen = self._keys[idempotency_key]
            if seen != digest:
                raise IdempotencyConflictError(idempotency_key, existing)
            return Created(existing, created=False)
        now, wall = self._clock(), time.time()
        for record in videos:
            lease_until = now + self._ttl if record.owner else 0.0
            self._put(
                attrs.evolve(record, lease_until=lease_until, created_at=wall, updated_at=wall)
            )
        target = batch.id if batch is not None else videos[0].id
        if batch is not None:
            self._batches[batch.id] = batch
        if idempotency_key is not None:
            self._keys[idempotency_key] = (target, digest)
            self._key_of[target] = idempotency_key
        self._notify()
        return Created(target, created=True)

    async def video(self, video_id: str) -> VideoRecord | None:
        """The record of ``video_id``, or ``None``."""
        return self._videos.get(video_id)

    async def batch(self, batch_id: str) -> tuple[BatchRecord, list[VideoRecord]] | None:
        """A batch and its videos' records, or ``None``."""
        batch = self._batches.get(batch_id)
        if batch is None:
            return None
        return batch, [self._videos[i] for i in batch.video_ids if i in self._videos]

    async def update(
        self, video_id: str, owner: str, changes: Mapping[str, Any]
    ) -> VideoRecord | None:
        """Apply ``changes`` if ``owner`` holds the record; see :meth:`VideoStore.update`."""
        record = self._videos.get(video_id)
        if record is None:
            return None
        new = updated(
            record, owner, changes, now=self._clock(), ttl=self._ttl, now_wall=time.time()
        )
        if new is not None:
            self._put(new)
            self._notify()
        return new

    async def claim(self, owner: str, limit: int) -> list[VideoRecord]:
        """Take up to ``limit`` unfinished records whose lease lapsed, oldest first."""
        now = self._clock()
        taken: list[VideoRecord] = []
        for record in list(self._videos.values()):
            if len(taken) >= limit:
                break
            if claimable(record, now):
                new = claimed(record, owner, now=now, ttl=self._ttl)
                self._videos[record.id] = new
                taken.append(new)
        return taken

    async def renew(self, owner: str, video_ids: Sequence[str]) -> set[str]:
        """Push the leases ``owner`` still holds among ``video_ids``."""
        now, held = self._clock(), set()
        for video_id in video_ids:
            record = self._videos.get(video_id)
            new = None if record is None else renewed(record, owner, now=now, ttl=self._ttl)
            if new is not None:
                self._videos[video_id] = new
                held.add(video_id)
        return held

    async def release(self, owner: str, video_ids: Sequence[str]) -> None:
        """End ``owner``'s leases on ``video_ids`` now."""
        for video_id in video_ids:
            record = self._videos.get(video_id)
            new = None if record is None else released(record, owner)
            if new is not None:
                self._videos[video_id] = new

    async def wait_change(self, video_id: str, version: int, within: float) -> None:
        """Return at the next change of any record, or after ``within`` seconds."""
        record = self._videos.get(video_id)
        if record is not None and record.version != version:
            return
        if self._changed is None:
            self._changed = anyio.Event()
        with anyio.move_on_after(within):
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _put(self, record: VideoRecord) -> None:
        self._videos[record.id] = record  # a new id goes last: oldest first, as created
        # Forget the oldest ended videos beyond ``remember`` (never an unfinished one).
        excess = len(self._videos) - self._remember
        for old_id in [i for i, r in self._videos.items() if r.done][: max(0, excess)]:
            gone = self._videos.pop(old_id)
            # Its key (or its batch's, with the batch) goes with it: a key never names
            # something forgotten, and sent again it makes a new video.
            if gone.batch_id is not None:
                self._batches.pop(gone.batch_id, None)
            for target in (old_id, gone.batch_id):
                if target is not None and target in self._key_of:
                    self._keys.pop(self._key_of.pop(target), None)
