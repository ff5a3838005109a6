"""Batches: many videos in flight, results handed out in the order they finish.

``Batch`` is an async context manager that owns the task group and hands out a stream
(never a ``yield`` inside a task group). Inside it, one feeder reads the input lazily —
sync or async iterable, a 100,000-prompt generator is never read ahead — submits one request
at a time (the budget paces it), and starts a follower per accepted task. Every input yields
exactly one :class:`BatchResult`; a video's failure, or a bug in its follower, is that
video's ``error``, never the batch's. Leaving the block early cancels everything inside it:
no request is sent afterwards and no task is left running.

With a journal (``_journaled``), the feeder asks it first what each request needs: only
never-sent requests are submitted, running tasks are followed by id, and ended ones are
handed back as recorded; every terminal status is recorded before it is handed out.
"""

from __future__ import annotations

import math
import operator
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._errors import AuthenticationError, InsufficientCreditsError, InvalidRequestError
from ._journal import Journal
from ._journaled import JournaledStart, SubmitHooked
from ._models import BatchResult, Task, VideoRequest

__all__ = ["Batch"]

T = TypeVar("T")

# What the batch needs of the client: submit a request (running a hook once the budget
# admits it, for the journal), follow a task to its result.
Submit = SubmitHooked
Follow = Callable[[Task], Awaitable[BatchResult]]

# Submission errors after which no further request can succeed: stop submitting.
_STOPPERS = (InsufficientCreditsError, AuthenticationError)


def _as_request(item: object) -> VideoRequest:
    if isinstance(item, VideoRequest):
        return item
    if isinstance(item, str):
        return VideoRequest(item)
    raise InvalidRequestError(
        f"a batch takes VideoRequest objects or prompt strings, not {type(item).__name__}"
    )


def _as_task(item: object) -> Task:
    if isinstance(item, Task):
        return item
    if isinstance(item, str) and item.strip():
        return Task(item)
    raise InvalidRequestError(
        f"as_completed takes Task objects or task ids, not {item!r}", error_code="TASK_ID_REQUIRED"
    )


class Batch(Generic[T]):
    """``async with client.batch(requests) as results: async for result in results: ...``"""

    def __init__(
        self,
        items: Iterable[T] | AsyncIterable[T],
        *,
        submit: Submit | None,
        follow: Follow,
        max_in_flight: int | None,
        on_error: Callable[[BatchResult], None] | None = None,
        journal: Journal | None = None,
        resubmit_uncertain: bool = False,
        on_queued: Callable[[int], None] | None = None,
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight!r}")
        self._items = items
        self._submit = submit
        self._follow = follow
        self._slots = anyio.Semaphore(max_in_flight) if max_in_flight else None
        self._on_error = on_error
        self._journaled = (
            JournaledStart(journal, submit, resubmit_uncertain=resubmit_uncertain)
            if journal is not None
            else None
        )
        self._stopped: BaseException | None = None
        # Told how many submissions wait in here, not yet asking the budget (+n / -n).
        self._on_queued = on_queued if submit is not None else None
        self._task_group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[BatchResult] | None = None

    async def __aenter__(self) -> MemoryObjectReceiveStream[BatchResult]:
        send, receive = anyio.create_memory_object_stream[BatchResult](math.inf)
        self._receive = receive
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._feed, send)
        return receive

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        assert self._receive is not None
        # Done or left early: whatever still runs inside is no longer wanted.
        self._task_group.cancel_scope.cancel()
        self._receive.close()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        except BaseException as error:
            # The block's own exception comes back wrapped in an exception group (its
            # followers were only cancelled): let it out as itself, so that `except
            # ValueError` around the block still works.
            if exc is not None and list(getattr(error, "exceptions", ())) == [exc]:
                return False
            raise

    async def _feed(self, send: MemoryObjectSendStream[BatchResult]) -> None:
        # What waits here is demand the planner must know of: no extra poll is worth a slot
        # that these submissions will need. A list says how long it is; a generator says
        # nothing (and is never read ahead), but then its next submission waits in the
        # budget's queue, which the planner sees.
        queued = 0 if isinstance(self._items, AsyncIterable) else operator.length_hint(self._items)
        self._queued(queued)
        try:
            async with send, anyio.create_task_group() as followers:
                if isinstance(self._items, AsyncIterable):
                    async for item in self._items:
                        await self._take(item, send, followers)
                else:
                    for item in self._items:
                        if queued > 0:
                            queued -= 1
                            self._queued(-1)
                        await self._take(item, send, followers)
        finally:
            self._queued(-queued)

    def _queued(self, change: int) -> None:
        if self._on_queued is not None and change:
            self._on_queued(change)

    async def _take(
        self, item: T, send: MemoryObjectSendStream[BatchResult], followers: TaskGroup
    ) -> None:
        if self._stopped is not None:
            await self._deliver(send, BatchResult(self._request_of(item), error=self._stopped))
            return
        if self._slots is not None:
            await self._slots.acquire()
        try:
            task = await self._start(item)
        except Exception as exc:
            if self._slots is not None:
                self._slots.release()
            if isinstance(exc, _STOPPERS):
                self._stopped = exc
            await self._deliver(send, BatchResult(self._request_of(item), error=exc))
            return
        if isinstance(task, BatchResult):  # it ended in an earlier run: the journal's record
            if self._slots is not None:
                self._slots.release()
            await send.send(task)
            return
        followers.start_soon(self._run_follower, task, send)

    def _request_of(self, item: object) -> VideoRequest | None:
        if isinstance(item, Task):
            return item.request
        if isinstance(item, VideoRequest):
            return item
        if self._submit is not None and isinstance(item, str):
            try:
                return VideoRequest(item)
            except InvalidRequestError:
                return None
        return None

    async def _start(self, item: T) -> Task | BatchResult:
        if self._submit is None:
            return _as_task(item)
        if self._journaled is not None:
            return await self._journaled.start(_as_request(item))
        return await self._submit(_as_request(item))

    async def _run_follower(self, task: Task, send: MemoryObjectSendStream[BatchResult]) -> None:
        try:
            if self._journaled is not None:  # under its follower lease; its end recorded
                result = await self._journaled.follow(task, self._follow)
            else:
                result = await self._follow(task)
        except Exception as exc:  # a bug in one follower (or the journal) is that video's error
            result = BatchResult(task.request, task, error=exc)
        finally:
            if self._slots is not None:
                self._slots.release()
        await send.send(result)

    async def _deliver(
        self, send: MemoryObjectSendStream[BatchResult], result: BatchResult
    ) -> None:
        if self._on_error is not None:
            self._on_error(result)
        await send.send(result)
