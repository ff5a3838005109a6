"""``Sora2Service``: one client, and the background its videos are followed in, for an app's life.

A web request must not wait minutes for a video, and must not poll either: every HTTP client
that polls the backend would spend the key's budget. So a submission starts the SDK's
``wait`` in a task group the service owns, and everything the routes answer comes from what
the SDK already knows (``known_status``, progress events). However many HTTP clients watch
a video, it has one poller. When the service ends, the task group is cancelled: every
poller stops, and nothing is sent afterwards.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import socket
import sys
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import TypeVar

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from .._client import Sora2Client
from .._errors import InvalidRequestError, Sora2Error
from .._events import Event, EventKind
from .._models import Task, VideoRequest
from .._video_records import VideoStore
from ._accepting import Accepting
from ._memory_store import MemoryVideoStore
from ._views import BatchJob, BatchView, VideoView, view_of_error, view_of_status
from ._worker import VideoWorker

__all__ = ["ShuttingDownError", "Sora2Service"]

logger = logging.getLogger("sora2_async")

_T = TypeVar("_T")

# Services entered and not yet exited, for the uvicorn shutdown hook (see ``_app``).
_LIVE: weakref.WeakSet[Sora2Service] = weakref.WeakSet()


class ShuttingDownError(RuntimeError):
    """The service is shutting down (or has): it takes no new videos. Answer 503."""


@attrs.define(eq=False)
class _Followed:
    task: Task
    following: bool = False  # a background wait (or a batch) is on it now
    error: BaseException | None = None  # why following it ended without a final status


def _several_workers() -> bool:
    """Whether this process is one of several uvicorn workers: a child process of uvicorn
    (``--reload`` makes one too), with ``--workers`` or ``$WEB_CONCURRENCY`` above one."""
    if multiprocessing.parent_process() is None or "uvicorn" not in sys.modules:
        return False
    count = os.environ.get("WEB_CONCURRENCY", "1")
    for i, arg in enumerate(sys.argv):  # a spawned worker keeps its parent's argv
        if arg == "--workers" and i + 1 < len(sys.argv):
            count = sys.argv[i + 1]
        elif arg.startswith("--workers="):
            count = arg.partition("=")[2]
    return count.isdigit() and int(count) > 1


class Sora2Service(Accepting):
    """A client plus the task group that follows its videos in the background.

    Use it as an async context manager around the app's life (``sora2_lifespan`` does that)
    and hand it to routes as a dependency. All its methods are meant for the event loop's
    thread: use ``async def`` routes (FastAPI runs plain ``def`` ones in a thread pool).

    Two ways to take videos:

    * :meth:`accept` / :meth:`accept_batch` answer at once with a service id; the video is
      recorded in ``store``, submitted in the background under the budget, and reported by
      :meth:`video`, :meth:`batch` and :meth:`video_sse`. With a shared store
      (:class:`SQLiteVideoStore` for the workers of one host, ``RedisVideoStore`` across
      hosts) every worker answers for every video, idempotency keys hold across workers and
      restarts, and a dead worker's videos are taken over.
    * :meth:`submit` / :meth:`start_batch` / :meth:`follow` work in this process only,
      reported by :meth:`view`, :meth:`batch_view` and :meth:`sse` (by task id).

    Args:
        client: the client to use; the service does not close it. With several workers, its
            budget must be shared too (``SQLiteLimiter``, ``RedisLimiter``).
        store: where accepted videos live (default: a :class:`MemoryVideoStore`, for one
            worker; it warns when the process looks like one of several). The service does
            not close it.
        owner: this worker's name in the store's leases (default: host, pid, random part).
        remember: how many tasks and batches it keeps answers for (oldest are forgotten).
    """

    def __init__(
        self,
        client: Sora2Client,
        *,
        store: VideoStore | None = None,
        owner: str | None = None,
        remember: int = 10_000,
    ) -> None:
        if remember < 1:
            raise ValueError(f"remember must be at least 1, not {remember!r}")
        self._client = client
        self._store = store if store is not None else MemoryVideoStore(remember=remember)
        owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._worker = VideoWorker(client, self._store, owner)
        self._remember = remember
        self._followed: OrderedDict[str, _Followed] = OrderedDict()
        self._batches: OrderedDict[str, BatchJob] = OrderedDict()
        self._task_group: TaskGroup | None = None
        self._state = "new"  # new -> running -> draining -> closed
        self._running = 0
        self._wakeups: set[anyio.CancelScope] = set()
        self.thread: int | None = None  #: the thread whose event loop runs it

    def __repr__(self) -> str:
        return (
            f"<Sora2Service {self._state} following={self._running} "
            f"holding={self._worker.holding} store={self._store!r}>"
        )

    async def __aenter__(self) -> Sora2Service:
        if self._state != "new":
            raise RuntimeError("a Sora2Service can be entered only once")
        if isinstance(self._store, MemoryVideoStore) and _several_workers():
            logger.warning(
                "Sora2Service keeps its videos in this worker's memory, but the app runs in "
                "several workers: each knows only its own videos. Give it a shared store "
                "(SQLiteVideoStore on one host, RedisVideoStore across hosts)"
            )
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        await task_group.start(self._worker.run)
        self._state = "running"
        self.thread = threading.get_ident()
        _LIVE.add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        _LIVE.discard(self)
        self.drain()
        # Every background wait is cancelled: each gives its promised poll back to the
        # budget on the way out, and no request is sent after this.
        self._task_group.cancel_scope.cancel()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            self._state = "closed"

    @property
    def client(self) -> Sora2Client:
        """The client, for anything the service does not wrap."""
        return self._client

    @property
    def draining(self) -> bool:
        """Whether it has stopped taking new videos (shutdown has begun)."""
        return self._state in ("draining", "closed")

    @property
    def running(self) -> int:
        """Background waits, batches and accepted videos worked on now (0 once the service
        has exited)."""
        return self._running + self._worker.holding

    def drain(self) -> None:
        """Begin shutting down: refuse new videos and end every event stream now.

        Background waits go on until the service exits. Call it from the event loop's
        thread; ``drain_on_uvicorn_shutdown`` does so when uvicorn begins to stop.
        """
        if self._state == "running":
            self._state = "draining"
        for scope in list(self._wakeups):
            scope.cancel()

    async def submit(self, request: VideoRequest) -> Task:
        """Submit a video (one request) and follow it in the background; return its task.

        Raises:
            ShuttingDownError: the service is shutting down; nothing was sent.
            Sora2Error: the errors of :meth:`Sora2Client.generate`.
        """
        self._check_open()
        task = await self._client.generate(request)
        self._track(task)
        return task

    def follow(self, task: Task | str) -> Task:
        """Follow a task submitted elsewhere (by id) in the background, if not already.

        Unlike :meth:`submit` this costs polls for a task the SDK knows nothing of: the
        first look is right away, to learn how far along it is.

        Raises:
            ShuttingDownError: the service is shutting down.
            InvalidRequestError: the id is empty.
        """
        self._check_open()
        if isinstance(task, str):
            if not task.strip():
                raise InvalidRequestError("a task id must be a non-empty string")
            task = Task(task)
        self._track(task)
        return task

    def view(self, task_id: str) -> VideoView | None:
        """What is known of ``task_id`` now, without sending anything; ``None`` if nothing."""
        try:
            status = self._client.known_status(task_id)
        except InvalidRequestError:
            return None
        entry = self._followed.get(task_id)
        if status is not None and (status.done or entry is None or entry.error is None):
            return view_of_status(status)
        if entry is None:
            return None
        if entry.error is not None:
            return view_of_error(task_id, entry.error)
        return VideoView(task_id=task_id, state="processing")

    def start_batch(
        self, requests: Iterable[VideoRequest], *, max_in_flight: int | None = None
    ) -> BatchJob:
        """Run ``client.batch(requests)`` in the background; return its job at once.

        Each accepted video can be watched with :meth:`view` and :meth:`sse` as soon as it
        is submitted; :meth:`batch_view` reports the whole batch.

        Raises:
            ShuttingDownError: the service is shutting down.
            ValueError: ``max_in_flight`` is below 1.
        """
        self._check_open()
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight!r}")
        requests = list(requests)
        job = BatchJob(uuid.uuid4().hex, len(requests))
        self._keep(self._batches, job.batch_id, job)
        assert self._task_group is not None
        self._running += 1
        self._task_group.start_soon(self._run_batch, job, requests, max_in_flight)
        return job

    def batch_view(self, batch_id: str) -> BatchView | None:
        """The state of a batch started here, or ``None`` for an unknown (or forgotten) one."""
        job = self._batches.get(batch_id)
        if job is None:
            return None
        videos = [
            self.view(task.task_id) or VideoView(task_id=task.task_id, state="processing")
            for task in job.tasks
        ]
        rejected = [str(result.error) for result in job.rejected]
        return BatchView(
            batch_id=job.batch_id, total=job.total, done=job.done, videos=videos, rejected=rejected
        )

    async def sse(
        self,
        task_id: str,
        *,
        heartbeat: float = 15.0,
        max_seconds: float | None = None,
        retry: float = 3.0,
    ) -> AsyncIterator[str]:
        """Server-sent events of one video's progress, until it is done: the body of a
        ``StreamingResponse(..., media_type="text/event-stream")``.

        Each message is ``event: <state>`` with the :class:`VideoView` as JSON ``data``:
        the current view first, then one per change. It ends after the final one
        (``completed``, ``failed`` or ``error``), when the service drains, or after
        ``max_seconds``; a browser's ``EventSource`` reconnects after ``retry`` seconds.
        A comment every ``heartbeat`` seconds keeps proxies from closing an idle stream.
        It listens to the SDK's events and sends nothing to the API.
        """
        deadline = math.inf if max_seconds is None else anyio.current_time() + max_seconds
        yield f"retry: {round(retry * 1000)}\n\n"
        # Subscribe before the first look, so that no change falls between the two.
        async with self._client.events(task_id=task_id, max_buffer=64) as events:
            shown: VideoView | None = None
            view = self.view(task_id)
            while view is not None:
                if view != shown:
                    yield f"event: {view.state}\ndata: {view.model_dump_json()}\n\n"
                    shown = view
                if view.done or self.draining or anyio.current_time() >= deadline:
                    return
                event = await self._next_event(events, min(heartbeat, deadline))
                if event is None and not self.draining and anyio.current_time() < deadline:
                    yield ": keep-alive\n\n"
                view = self._view_after(task_id, event)

    async def _next_event(
        self, events: MemoryObjectReceiveStream[Event], wait: float
    ) -> Event | None:
        # The yields of ``sse`` stay outside this scope (no yield inside a cancel scope).
        with self._drainable(wait):
            try:
                return await events.receive()
            except anyio.EndOfStream:
                return None
        return None

    def _view_after(self, task_id: str, event: Event | None) -> VideoView | None:
        # The final event says how it ended even before the background wait has noticed
        # (when another waiter was polling it).
        if event is not None and event.status is not None and event.status.done:
            return view_of_status(event.status)
        if event is not None and event.kind is EventKind.FAILED and event.error is not None:
            return view_of_error(task_id, event.error)
        return self.view(task_id)

    def _check_open(self) -> None:
        if self._state == "new":
            raise RuntimeError("the Sora2Service is not running: use it as 'async with'")
        if self.draining:
            raise ShuttingDownError("the service is shutting down; it takes no new videos")

    def _keep(self, table: OrderedDict[str, _T], key: str, value: _T) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self._remember:
            table.popitem(last=False)

    def _track(self, task: Task) -> None:
        entry = self._followed.get(task.task_id)
        if entry is not None and entry.following:
            return
        entry = _Followed(task, following=True)
        self._keep(self._followed, task.task_id, entry)
        if self._state == "closed":  # accepted while the app stopped: nobody can follow it
            entry.following = False
            return
        assert self._task_group is not None
        self._running += 1  # counted from now, so that a route sees it at once
        self._task_group.start_soon(self._follow, entry, name=f"sora2 wait {task.task_id}")

    async def _follow(self, entry: _Followed) -> None:
        try:
            await self._client.wait(entry.task)
        except Sora2Error as exc:  # the final status or error is what the routes report
            entry.error = exc
        except Exception as exc:  # a bug must not take the app (and its pollers) down
            entry.error = exc
            logger.exception("following task %s failed", entry.task.task_id)
        finally:
            entry.following = False
            self._running -= 1

    async def _run_batch(
        self, job: BatchJob, requests: list[VideoRequest], max_in_flight: int | None
    ) -> None:
        mine = {id(request) for request in requests}  # held alive by ``requests``

        def on_submitted(event: Event) -> None:
            task = event.task
            if event.kind is EventKind.SUBMITTED and task is not None and id(task.request) in mine:
                job.tasks.append(task)
                self._keep(self._followed, task.task_id, _Followed(task, following=True))

        remove = self._client.on_event(on_submitted)
        try:
            async with self._client.batch(requests, max_in_flight=max_in_flight) as results:
                async for result in results:
                    job.results.append(result)
                    entry = self._followed.get(result.task.task_id) if result.task else None
                    if entry is not None:
                        entry.following = False
                        if not result.ok:
                            entry.error = result.error
            job.done = True
        finally:
            remove()
            self._running -= 1
