"""The journal's side of a batch: what each request needs now, and recording what happened.

For each request the batch reads, :meth:`JournaledStart.start` looks it up in the journal:

* nothing recorded, or refused by the API before: submit it — intent first (just before
  its bytes go out, see ``APICaller``), then the generate, then the task id, each durable
  before the next step; an attempt that provably created nothing clears its intent;
* submitted: follow the task by its id, never submit again;
* completed or failed: hand back the recorded outcome, spending nothing;
* intent without an answer (uncertain): hand back :class:`UncertainSubmissionError`, unless
  ``resubmit_uncertain``.

:meth:`JournaledStart.finished` records the terminal status of every followed task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Protocol

import anyio

from ._api import SendHooks
from ._errors import GenerationFailedError, provably_not_created
from ._journal import (
    Journal,
    JournalEntry,
    JournalState,
    RequestKeys,
    UncertainSubmissionError,
)
from ._models import BatchResult, Task, TaskState, TaskStatus, VideoRequest, video_of

logger = logging.getLogger("sora2_async")

__all__ = ["JournaledStart", "SubmitHooked", "final_status_of"]


class SubmitHooked(Protocol):
    """Submit ``request``, telling ``hooks`` of each attempt of its generate."""

    def __call__(
        self, request: VideoRequest, *, hooks: SendHooks | None = None
    ) -> Awaitable[Task]: ...


class _Intent:
    """The journal's side of a generate's attempts: the intent is written just before the
    bytes go out, and cleared when an attempt provably created nothing (a 429, a refused
    connection), so that only a send that may have reached the server stays uncertain."""

    __slots__ = ("_journal", "_key", "_request")

    def __init__(self, journal: Journal, key: str, request: VideoRequest) -> None:
        self._journal, self._key, self._request = journal, key, request

    async def before_send(self) -> None:
        await self._journal.record_intent(self._key, self._request)

    async def not_sent(self, reason: str) -> None:
        await self._journal.record_rejected(self._key, self._request, f"not sent: {reason}")


def final_status_of(result: BatchResult) -> TaskStatus | None:
    """The terminal status a batch result carries (``None`` when it has none: the task was
    never accepted, or following it failed before it ended)."""
    if result._video is not None:
        video = result._video
        return TaskStatus(
            video.task_id,
            TaskState.COMPLETED,
            video_url=video.url,
            generation_time=video.generation_time,
            credits_used=video.credits_used,
        )
    if isinstance(result.error, GenerationFailedError):
        return result.error.status
    return None


def _submitted_at(entry: JournalEntry) -> float:
    """When a task recorded as submitted was submitted, on this event loop's clock.

    Its entry changed last when the task id was recorded, right after the API accepted it.
    Knowing its age, the scheduler plans its polls as for any task of this run, rather than
    looking at every re-attached task right away.
    """
    age = max(0.0, time.time() - entry.updated_at)
    return anyio.current_time() - age


def _outcome(entry: JournalEntry) -> BatchResult:
    """The batch result of an entry that already ended, from the journal alone."""
    status = entry.final_status()
    assert status is not None
    assert entry.task_id is not None
    task = Task(entry.task_id, entry.request)
    try:
        return BatchResult(entry.request, task, video=video_of(task, status))
    except GenerationFailedError as exc:
        return BatchResult(entry.request, task, error=exc)


class JournaledStart:
    """Starts a batch's requests through a :class:`Journal` (one per batch run)."""

    def __init__(
        self, journal: Journal, submit: SubmitHooked, *, resubmit_uncertain: bool = False
    ) -> None:
        self._journal = journal
        self._submit = submit
        self._resubmit_uncertain = resubmit_uncertain
        self._keys_of = RequestKeys()  # identical requests of one batch are distinct
        self._keys: dict[str, str] = {}  # task id -> journal key

    async def start(self, request: VideoRequest) -> Task | BatchResult:
        """A task to follow, or the request's result when nothing is to be sent for it.

        Raises:
            UncertainSubmissionError: an earlier run's generate of it got no answer.
            The errors of the submission (a refusal is recorded as such first).
        """
        key = self._keys_of.next(request)
        entry = await self._journal.lookup(key)
        if entry is not None:
            if entry.state is JournalState.SUBMITTED and entry.task_id is not None:
                self._keys[entry.task_id] = key
                return Task(entry.task_id, request, _submitted_at(entry))
            if entry.state in (JournalState.COMPLETED, JournalState.FAILED):
                return _outcome(entry)
            if entry.state is JournalState.INTENT and not self._resubmit_uncertain:
                raise UncertainSubmissionError(key, request)
        try:
            task = await self._submit(request, hooks=_Intent(self._journal, key, request))
        except Exception as exc:
            if provably_not_created(exc):
                with anyio.CancelScope(shield=True):
                    await self._journal.record_rejected(key, request, str(exc))
            raise  # otherwise the intent stays: the task may exist
        # Shielded: once the API has answered, its task id must reach the journal even if
        # the batch is being cancelled (Ctrl-C), or the request would turn uncertain.
        try:
            with anyio.CancelScope(shield=True):
                await self._journal.record_task(key, request, task.task_id)
        except Exception:
            # The task exists and is paid for: follow it all the same (it holds a promised
            # poll); the journal keeps its intent, so a later run lists it as uncertain.
            logger.exception("could not journal task %s; following it anyway", task.task_id)
        self._keys[task.task_id] = key
        return task

    async def finished(self, result: BatchResult) -> None:
        """Record the terminal status of a followed task (nothing when it did not end)."""
        status = final_status_of(result)
        key = self._keys.get(status.task_id) if status is not None else None
        if status is None or key is None:
            return
        with anyio.CancelScope(shield=True):
            await self._journal.record_status(key, status)
