"""The journal's side of a batch: what each request needs now, and recording what happened.

For each request the batch reads, :meth:`JournaledStart.start` looks it up in the journal:

* nothing recorded, or refused by the API before: submit it — intent first (just before
  its bytes go out, see ``APICaller``), then the generate, then the task id, each durable
  before the next step; an attempt that provably created nothing clears its intent;
* submitted: follow the task by its id, never submit again;
* completed or failed: hand back the recorded outcome, spending nothing;
* intent without an answer (uncertain): hand back :class:`UncertainSubmissionError`, unless
  ``resubmit_uncertain``.

With a journal shared by many processes (:class:`FollowerLeases`), the submitter holds the
request's lease from before its lookup until its task id is recorded (the lease is then the
follower's): another process that reaches the same request meanwhile waits, then finds it
submitted and follows it, so that no request is sent by two processes.

:meth:`JournaledStart.follow` follows each task and records its terminal status. With a journal
that has follower leases (:class:`FollowerLeases`, e.g. ``RedisJournal``) it holds the task's
lease while it follows it (claimed first, renewed every third of its ttl, released at the
end), so that one process follows a task and another adopts it if that one dies; a task
whose lease another live process holds is not followed twice: its outcome is read from the
journal once that process records it (or the task is followed here if its lease lapses).
:class:`Adoption` hands out the tasks whose follower died, for ``client.as_completed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import anyio

from ._api import SendHooks
from ._errors import GenerationFailedError, provably_not_created
from ._journal import (
    FollowerLeases,
    Journal,
    JournalEntry,
    JournalState,
    RequestKeys,
    UncertainSubmissionError,
)
from ._models import BatchResult, Task, TaskState, TaskStatus, VideoRequest, video_of

logger = logging.getLogger("sora2_async")

__all__ = ["Adoption", "JournaledStart", "LeasedJournal", "SubmitHooked", "final_status_of"]


class SubmitHooked(Protocol):
    """Submit ``request``, telling ``hooks`` of each attempt of its generate."""

    def __call__(
        self, request: VideoRequest, *, hooks: SendHooks | None = None
    ) -> Awaitable[Task]: ...


class LeasedJournal(Journal, FollowerLeases, Protocol):
    """A journal with follower leases."""


Follow = Callable[[Task], Awaitable[BatchResult]]


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
        self,
        journal: Journal,
        submit: SubmitHooked | None,
        *,
        resubmit_uncertain: bool = False,
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
        leases = self._journal if isinstance(self._journal, FollowerLeases) else None
        reserved = leases is not None and await self._reserve(leases, key)
        recorded = False
        try:
            entry = await self._journal.lookup(key)
            if entry is not None:
                if entry.state is JournalState.SUBMITTED and entry.task_id is not None:
                    self._keys[entry.task_id] = key
                    return Task(entry.task_id, request, _submitted_at(entry))
                if entry.state in (JournalState.COMPLETED, JournalState.FAILED):
                    return _outcome(entry)
                if entry.state is JournalState.INTENT and not self._resubmit_uncertain:
                    raise UncertainSubmissionError(key, request)
            if self._submit is None:
                raise RuntimeError("this batch follows tasks only: it submits nothing")
            if reserved and leases is not None:
                task = await self._submit_reserved(leases, key, request)
            else:
                task = await self._submit_once(key, request)
            recorded = True  # its lease, if any, is its follower's now
            self._keys[task.task_id] = key
            return task
        finally:
            if reserved and not recorded and leases is not None:
                await _release(leases, key)

    async def _reserve(self, leases: FollowerLeases, key: str) -> bool:
        """Wait while another process sends ``key``'s request; ``True`` when this one holds
        its submitter's lease, ``False`` when its entry is submitted or ended."""
        # Another process's lease: nothing here can announce its end, so look again.
        while (held := await leases.reserve(key)) is False:  # noqa: ASYNC110
            await anyio.sleep(min(2.0, leases.follower_ttl / 3))
        return bool(held)

    async def _submit_reserved(
        self, leases: FollowerLeases, key: str, request: VideoRequest
    ) -> Task:
        """:meth:`_submit_once`, its submitter's lease renewed meanwhile."""
        failure: Exception | None = None
        async with anyio.create_task_group() as renewing:
            renewing.start_soon(self._renew_reservation, leases, key)
            try:
                task = await self._submit_once(key, request)
            except Exception as exc:  # raised as itself, not in the task group's group
                failure = exc
            finally:
                renewing.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return task

    async def _renew_reservation(self, leases: FollowerLeases, key: str) -> None:
        # The budget may keep a submission waiting for minutes: its lease must outlive that.
        while True:
            await anyio.sleep(leases.follower_ttl / 3)
            try:
                held = await leases.reserve(key)
            except Exception as exc:  # Redis away for a moment: try again at the next turn
                logger.warning("could not renew the submitter lease of %s: %s", key, exc)
                continue
            if held is None:  # recorded as submitted: the follower's lease from now on
                return
            if not held:
                logger.warning("the submitter lease of %s lapsed and another process took it", key)
                return

    async def _submit_once(self, key: str, request: VideoRequest) -> Task:
        assert self._submit is not None
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
        return task

    async def follow(self, task: Task, follow: Follow) -> BatchResult:
        """``follow(task)``, under the task's follower lease when the journal has leases,
        and its terminal status recorded (:meth:`finished`).

        A task the journal does not know is followed and nothing is recorded. A task whose
        lease another live owner holds is not followed: its outcome comes from the journal
        when that owner records it, unless the lease lapses first (then it is claimed and
        followed here). The lease is released when following ends, however it ends.

        Raises:
            JournalError: the journal could not be read, or the status not recorded.
        """
        journal = self._journal
        if not isinstance(journal, FollowerLeases):
            result = await follow(task)
            await self.finished(result)
            return result
        key = self._keys.get(task.task_id)
        if key is None:
            key = await journal.task_key(task.task_id)
            if key is None:  # not this journal's task
                return await follow(task)
            self._keys[task.task_id] = key
        leased = await self._lease(journal, key)
        if isinstance(leased, BatchResult):
            return leased
        try:
            async with anyio.create_task_group() as renewing:
                if leased:
                    renewing.start_soon(self._renew, journal, key)
                result = await follow(task)
                renewing.cancel_scope.cancel()
            await self.finished(result)
        finally:
            if leased:
                await _release(journal, key)
        return result

    async def _lease(self, journal: FollowerLeases, key: str) -> BatchResult | bool:
        """Claim ``key``'s lease, waiting while another owner's is live: ``True`` when held,
        ``False`` when its entry is not a running task (followed without a lease), or the
        outcome the other owner recorded."""
        while not await journal.claim(key):
            entry = await self._journal.lookup(key)
            if entry is not None and entry.state in (JournalState.COMPLETED, JournalState.FAILED):
                return _outcome(entry)
            if entry is None or entry.state is not JournalState.SUBMITTED:
                return False
            await anyio.sleep(min(2.0, journal.follower_ttl / 3))
        return True

    async def _renew(self, journal: FollowerLeases, key: str) -> None:
        while True:
            await anyio.sleep(journal.follower_ttl / 3)
            try:
                held = await journal.renew(key)
            except Exception as exc:  # Redis away for a moment: try again at the next turn
                logger.warning("could not renew the follower lease of %s: %s", key, exc)
                continue
            if not held:
                logger.warning(
                    "the follower lease of %s lapsed and another process took it (or the task "
                    "ended there); following it here too",
                    key,
                )
                return

    async def finished(self, result: BatchResult) -> None:
        """Record the terminal status of a followed task (nothing when it did not end)."""
        status = final_status_of(result)
        key = self._keys.get(status.task_id) if status is not None else None
        if status is None or key is None:
            return
        with anyio.CancelScope(shield=True):
            await self._journal.record_status(key, status)


async def _release(journal: FollowerLeases, key: str) -> None:
    """Give up ``key``'s lease, even when cancelled; a failure only delays its adoption."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        try:
            await journal.release(key)
        except Exception as exc:
            logger.warning("could not release the follower lease of %s: %s", key, exc)


class Adoption:
    """The tasks of a journal whose follower died, as they are claimed: an async iterable of
    :class:`Task` for ``client.as_completed(adoption)``, which follows them under their
    leases and records how they end (``RedisJournal.adopt()`` makes one).

    Each look claims every task whose lease lapsed (atomically: no other process gets
    them). When none is found it looks again ``every`` seconds (default: a third of the
    journal's ``follower_ttl``), and ends once no running task is left that another owner
    holds, unless ``watch``.
    """

    def __init__(
        self, journal: LeasedJournal, *, watch: bool = False, every: float | None = None
    ) -> None:
        if every is not None and not every > 0:
            raise ValueError(f"every must be positive, not {every!r}")
        self._journal = journal
        self._watch = watch
        self._every = every

    @property
    def journal(self) -> LeasedJournal:
        """The journal whose tasks it adopts."""
        return self._journal

    def __aiter__(self) -> AsyncIterator[Task]:
        return self._tasks()

    async def _tasks(self) -> AsyncIterator[Task]:
        every = self._every if self._every is not None else self._journal.follower_ttl / 3
        while True:
            entries = await self._journal.adoptable()
            for entry in entries:
                if entry.task_id is not None:
                    logger.info("adopting task %s: its follower's lease lapsed", entry.task_id)
                    yield Task(entry.task_id, entry.request, _submitted_at(entry))
            if not entries:
                if not self._watch and await self._journal.held_elsewhere() == 0:
                    return
                await anyio.sleep(every)
