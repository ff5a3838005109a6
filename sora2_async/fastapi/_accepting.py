"""The store-backed half of :class:`Sora2Service`: videos accepted at once, seen by every worker.

``accept`` writes a queued record and answers; the service's :class:`VideoWorker` submits it
under the key's budget and follows it. ``video``, ``batch`` and ``video_sse`` read the store,
so any worker of the app answers for any video, whichever worker submits or follows it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator

import anyio

from .._models import VideoRequest
from .._video_records import BatchRecord, VideoRecord, VideoStore, VideoStoreError, digest_of
from ._views import BatchView, VideoView, view_of_record
from ._worker import VideoWorker

__all__ = ["Accepting"]

logger = logging.getLogger("sora2_async")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _batch_view(batch: BatchRecord, records: list[VideoRecord]) -> BatchView:
    videos = [view_of_record(record) for record in records]
    rejected = [v.error or "" for v in videos if v.state == "error" and v.task_id is None]
    return BatchView(
        batch_id=batch.id,
        total=len(batch.video_ids),
        done=all(video.done for video in videos),
        videos=videos,
        rejected=rejected,
    )


class Accepting:
    """What :class:`Sora2Service` does with its store (see the service for the lifecycle)."""

    _store: VideoStore
    _worker: VideoWorker
    _wakeups: set[anyio.CancelScope]

    @property
    def draining(self) -> bool:  # pragma: no cover - the service's
        raise NotImplementedError

    def _check_open(self) -> None:  # pragma: no cover - the service's
        raise NotImplementedError

    @property
    def store(self) -> VideoStore:
        """Where the service keeps its accepted videos (shared by its workers)."""
        return self._store

    async def accept(
        self, request: VideoRequest, *, idempotency_key: str | None = None
    ) -> VideoView:
        """Take a video: record it as queued and answer at once, without waiting for budget.

        It is submitted in the background (by this worker, or another if this one dies) and
        followed until it ends; :meth:`video` and :meth:`video_sse` report it from any worker.
        The same ``idempotency_key`` again (from any worker, after any restart) returns the
        same video and submits nothing.

        Raises:
            ShuttingDownError: the service is shutting down; nothing was recorded.
            IdempotencyConflictError: the key came before with a different request.
            VideoStoreError: the store could not record it (nothing was accepted).
        """
        self._check_open()
        record = VideoRecord(_new_id("vid"), request, owner=self._worker.owner)
        key = None if idempotency_key is None else f"video:{idempotency_key}"
        created = await self._store.create(
            [record], idempotency_key=key, digest=digest_of([request])
        )
        if created.created:
            self._worker.take(record)
            return view_of_record(record)
        existing = await self._store.video(created.id)
        if existing is None:  # the store forgot the video before the key: should not happen
            raise VideoStoreError(f"the video of Idempotency-Key {idempotency_key!r} is gone")
        self._take_if_ours(existing)
        return view_of_record(existing)

    async def accept_batch(
        self, requests: Iterable[VideoRequest], *, idempotency_key: str | None = None
    ) -> BatchView:
        """Take many videos at once, as :meth:`accept` does each; return the batch.

        Raises:
            ValueError: no requests.
            The errors of :meth:`accept`.
        """
        self._check_open()
        requests = list(requests)
        if not requests:
            raise ValueError("a batch needs at least one video")
        owner, batch_id = self._worker.owner, _new_id("bat")
        records = [
            VideoRecord(_new_id("vid"), request, owner=owner, batch_id=batch_id)
            for request in requests
        ]
        batch = BatchRecord(batch_id, tuple(record.id for record in records))
        key = None if idempotency_key is None else f"batch:{idempotency_key}"
        created = await self._store.create(
            records, batch=batch, idempotency_key=key, digest=digest_of(requests)
        )
        if created.created:
            for record in records:
                self._worker.take(record)
        found = await self._store.batch(created.id)
        if found is None:
            raise VideoStoreError(f"the batch of Idempotency-Key {idempotency_key!r} is gone")
        for record in found[1]:
            self._take_if_ours(record)
        return _batch_view(*found)

    def _take_if_ours(self, record: VideoRecord) -> None:
        # A create whose answer was lost and which was sent again (Redis) finds its own
        # records: they are this worker's to work on, not to leave waiting out a lease.
        if record.owner == self._worker.owner and not record.done:
            self._worker.take(record)

    async def video(self, video_id: str) -> VideoView | None:
        """What the store knows of an accepted video now (no request): ``None`` if unknown.

        Raises:
            VideoStoreError: the store could not be read.
        """
        record = await self._store.video(video_id)
        return None if record is None else view_of_record(record)

    async def batch(self, batch_id: str) -> BatchView | None:
        """An accepted batch and its videos now, or ``None`` for an unknown one.

        Raises:
            VideoStoreError: the store could not be read.
        """
        found = await self._store.batch(batch_id)
        return None if found is None else _batch_view(*found)

    async def video_sse(
        self,
        video_id: str,
        *,
        heartbeat: float = 15.0,
        max_seconds: float | None = None,
        retry: float = 3.0,
    ) -> AsyncIterator[str]:
        """Server-sent events of an accepted video, from the store: as :meth:`sse` does for
        a task, but on any worker, whichever one works on the video.

        Each message is ``event: <state>`` with the :class:`VideoView` as JSON; the stream
        ends after the final one, when the service drains, or after ``max_seconds``.

        Raises:
            VideoStoreError: the store could not be read.
        """
        deadline = math.inf if max_seconds is None else anyio.current_time() + max_seconds
        yield f"retry: {round(retry * 1000)}\n\n"
        shown: VideoView | None = None
        record = await self._store.video(video_id)
        while record is not None:
            view = view_of_record(record)
            if view != shown:
                yield f"event: {view.state}\ndata: {view.model_dump_json()}\n\n"
                shown = view
            if view.done or self.draining or anyio.current_time() >= deadline:
                return
            wait = min(heartbeat, deadline - anyio.current_time())
            before = record
            try:
                await self._wait_change(record, wait)
                record = await self._store.video(video_id)
            except VideoStoreError as exc:  # the store is away: end; the client reconnects
                logger.warning("event stream of video %s ended: %s", video_id, exc)
                return
            unchanged = record is not None and record.version == before.version
            if unchanged and not self.draining and anyio.current_time() < deadline:
                yield ": keep-alive\n\n"

    async def _wait_change(self, record: VideoRecord, wait: float) -> None:
        # The yields of ``video_sse`` stay outside this scope (no yield inside a cancel scope).
        with self._drainable(wait):
            await self._store.wait_change(record.id, record.version, max(0.0, wait))

    @contextlib.contextmanager
    def _drainable(self, wait: float) -> Iterator[anyio.CancelScope]:
        """A scope that ends after ``wait`` seconds, or at once when the service drains."""
        with anyio.CancelScope(deadline=anyio.current_time() + wait) as scope:
            self._wakeups.add(scope)  # drain() cancels it
            try:
                yield scope
            finally:
                self._wakeups.discard(scope)
