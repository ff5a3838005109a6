"""One worker's side of a service's store: it submits, follows and finishes the videos it holds.

A video is held under a lease (see ``_records``). The worker that took the POST holds its
new record at once; every ``claim_every`` seconds each worker also claims the records whose
lease lapsed (their worker died, or the app restarted), and renews the leases it holds. A
lease it finds lost (another worker took the record while this one was stalled) cancels its
work on that record, and the store refuses its writes: one worker acts on a record at a
time, and the intent to send a generate is written, atomically checked against the lease,
before the generate goes out.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream

from .._api import is_transient
from .._client import Sora2Client
from .._errors import BudgetStoreError, Sora2Error, provably_not_created
from .._events import Event, EventKind
from .._journal_codec import status_fields
from .._journaled import final_status_of
from .._models import BatchResult, Task
from .._video_records import UNCERTAIN, VideoRecord, VideoStore

__all__ = ["VideoWorker"]

logger = logging.getLogger("sora2_async")


class _LeaseLost(Exception):
    """Another worker holds the record now: stop working on it (nothing was sent)."""


class _NotSent(Exception):
    """The store failed before the generate went out: nothing was sent, try again later.

    Not a ``Sora2Error``: the client must not report it as a send that may have created a
    task."""


class _Intent:
    """The store's side of a generate's attempts (the ``SendHooks`` of ``APICaller``)."""

    __slots__ = ("_record", "_worker")

    def __init__(self, worker: VideoWorker, record: VideoRecord) -> None:
        self._worker, self._record = worker, record

    async def before_send(self) -> None:
        # Checked against the lease in the same atomic step: if another worker took the
        # record, this generate never goes out.
        try:
            written = await self._worker._write(self._record.id, {"state": "submitting"})
        except Exception as exc:
            raise _NotSent(str(exc)) from None
        if written is None:
            raise _LeaseLost(self._record.id)

    async def not_sent(self, reason: str) -> None:
        try:
            await self._worker._write(self._record.id, {"state": "queued"})
        except Exception as exc:  # it stays "submitting": taken over as uncertain, at worst
            raise _NotSent(str(exc)) from None


class VideoWorker:
    """Drives the records of a :class:`VideoStore` that this worker holds.

    Run :meth:`run` in a task group (the service does); :meth:`take` hands it a record it
    has just created. When :meth:`run` is cancelled, every unfinished record it holds is
    released, so that another worker (or the next start) takes it over at once.
    """

    def __init__(
        self,
        client: Sora2Client,
        store: VideoStore,
        owner: str,
        *,
        claim_every: float | None = None,
        claim_limit: int = 100,
    ) -> None:
        self._client = client
        self._store = store
        self.owner = owner
        self._every = claim_every if claim_every is not None else store.lease_ttl / 3
        self._claim_limit = claim_limit
        self._scopes: dict[str, anyio.CancelScope] = {}  # record id -> its work
        self._tasks: dict[str, str] = {}  # task id -> record id (progress events)
        self._progress_written: dict[str, str] = {}  # record id -> the stage it shows
        self._unfinished: set[str] = set()  # held, not ended: released on the way out
        self._group: anyio.abc.TaskGroup | None = None
        self._progress_in, self._progress = anyio.create_memory_object_stream[tuple[str, str]](
            math.inf
        )

    def __repr__(self) -> str:
        return f"<VideoWorker {self.owner} holding={len(self._scopes)}>"

    @property
    def holding(self) -> int:
        """How many records it works on now."""
        return len(self._scopes)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Claim, renew and work until cancelled; then release what is unfinished."""
        remove = self._client.on_event(self._on_event)
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                group.start_soon(self._claims)
                group.start_soon(self._renewals)
                group.start_soon(self._write_progress, self._progress)
                task_status.started()
        finally:
            remove()
            self._group = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await self._store.release(self.owner, sorted(self._unfinished))
                except Exception as exc:  # they lapse on their own in a lease's time
                    logger.warning("could not release %d videos: %s", len(self._unfinished), exc)

    def take(self, record: VideoRecord) -> None:
        """Work on ``record``, which this worker holds (it has just created it)."""
        if self._group is None or record.id in self._scopes:
            return
        self._scopes[record.id] = anyio.CancelScope()
        self._group.start_soon(self._work, record, name=f"sora2 video {record.id}")

    # -- the loops ---------------------------------------------------------------------------

    async def _claims(self) -> None:
        while True:
            try:
                for record in await self._store.claim(self.owner, self._claim_limit):
                    if record.id in self._scopes:  # ours already (our lease had lapsed)
                        continue
                    if record.state != "queued" or record.task_id is not None:
                        logger.info("taking over video %s (%s)", record.id, record.state)
                    self.take(record)
            except Exception as exc:  # the store away for a moment: look again next turn
                logger.warning("could not claim videos from the store: %s", exc)
            await anyio.sleep(self._every)

    async def _renewals(self) -> None:
        while True:
            await anyio.sleep(self._store.lease_ttl / 3)
            held = list(self._scopes)
            try:
                kept = await self._store.renew(self.owner, held)
            except Exception as exc:
                logger.warning("could not renew the leases of %d videos: %s", len(held), exc)
                continue
            for video_id in set(held) - kept:
                scope = self._scopes.get(video_id)
                if scope is not None:  # another worker took it, or it ended meanwhile
                    self._unfinished.discard(video_id)
                    scope.cancel()

    def _on_event(self, event: Event) -> None:
        status = event.status
        if event.kind is EventKind.POLLED and status is not None and not status.done:
            video_id = self._tasks.get(status.task_id)
            if video_id is not None and status.progress:
                self._progress_in.send_nowait((video_id, status.progress))

    async def _write_progress(self, progress: MemoryObjectReceiveStream[tuple[str, str]]) -> None:
        written = self._progress_written
        async for video_id, stage in progress:
            if written.get(video_id) != stage and video_id in self._scopes:
                written[video_id] = stage
                try:
                    await self._write(video_id, {"progress": stage})
                except Exception as exc:  # a progress word is not worth failing for
                    logger.debug("could not write the progress of %s: %s", video_id, exc)

    # -- one record ------------------------------------------------------------------------

    async def _work(self, record: VideoRecord) -> None:
        self._unfinished.add(record.id)
        try:
            with self._scopes[record.id]:
                await self._advance(record)
        except _LeaseLost:
            self._unfinished.discard(record.id)
            logger.info("video %s is held by another worker now", record.id)
        except Exception:  # a bug must not take the app (and its other videos) down
            logger.exception("working on video %s failed", record.id)
        finally:
            self._scopes.pop(record.id, None)

    async def _advance(self, record: VideoRecord) -> None:
        if record.state == "submitting":  # its sender died (or stalled) with the generate out
            # A stalled sender may still get its answer and write the task id (which takes
            # the record back, and cancels this). Only after a lease's time more is it lost.
            await anyio.sleep(self._store.lease_ttl)
            await self._end(
                record.id,
                {
                    "state": "error",
                    "error_code": UNCERTAIN,
                    "error": "its generate went out and the answer was lost with the worker "
                    "that sent it: the task may exist and be paid for, so it was not re-sent",
                },
            )
            return
        if record.task_id is None:
            task = await self._submit(record)
            if task is None:
                return
        else:
            age = max(0.0, time.time() - record.submitted_at)
            task = Task(record.task_id, record.request, anyio.current_time() - age)
        self._tasks[task.task_id] = record.id
        try:
            await self._finish(record.id, await self._client._follow(task))
        finally:
            self._tasks.pop(task.task_id, None)
            self._progress_written.pop(record.id, None)

    async def _submit(self, record: VideoRecord) -> Task | None:
        try:
            task = await self._client._submit(record.request, hooks=_Intent(self, record))
        except _LeaseLost:
            raise
        except (BudgetStoreError, _NotSent) as exc:  # nothing was sent: it waits for later
            logger.warning(
                "video %s waits: a store failed before its generate (%s)", record.id, exc
            )
            self._unfinished.add(record.id)
            return None
        except Exception as exc:
            # A refusal created nothing (its code says why); anything else may hide a task.
            code: str | None = getattr(exc, "error_code", None)
            if not provably_not_created(exc):
                code = UNCERTAIN
            await self._end(record.id, {"state": "error", "error": str(exc), "error_code": code})
            return None
        changes = {"state": "processing", "task_id": task.task_id, "submitted_at": time.time()}
        with anyio.CancelScope(shield=True):  # the task exists: its id must be recorded
            try:
                await self._write(record.id, changes)
            except Exception:
                logger.exception("could not record task %s; following it anyway", task.task_id)
        return task

    async def _finish(self, video_id: str, result: BatchResult) -> None:
        status = final_status_of(result)
        if status is not None:
            state, fields = status_fields(status)
            await self._end(video_id, {"state": state, **fields, "progress": None})
            return
        error = result.error
        code: str | None = getattr(error, "error_code", None)
        if isinstance(error, Sora2Error) and is_transient(error):
            # The API or the network is away (polling kept failing for a while): the task
            # goes on on the server. Say so, keep it running, and let the lease lapse, so
            # that it is followed again (here or elsewhere) a lease's time from now.
            logger.warning("following video %s paused: %s", video_id, error)
            with anyio.CancelScope(shield=True):
                await self._write(video_id, {"error": str(error), "error_code": code})
            self._unfinished.discard(video_id)
            return
        await self._end(video_id, {"state": "error", "error": str(error), "error_code": code})

    async def _end(self, video_id: str, changes: Mapping[str, Any]) -> None:
        with anyio.CancelScope(shield=True):  # an outcome, once known, reaches the store
            if await self._write(video_id, changes) is None:
                logger.info("video %s ended here, but another worker holds it now", video_id)
        self._unfinished.discard(video_id)

    async def _write(self, video_id: str, changes: Mapping[str, Any]) -> VideoRecord | None:
        return await self._store.update(video_id, self.owner, changes)
