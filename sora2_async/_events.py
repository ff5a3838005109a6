"""Progress events: one way to watch what the client does, for progress bars and live APIs.

Listeners are plain callables, called synchronously, in order, as things happen; a listener
that raises is logged and otherwise ignored. :meth:`EventHub.stream` wraps a listener in a
memory object stream for async consumers (a server-sent-events endpoint, say).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from types import TracebackType

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._budget import BudgetState
from ._models import Task, TaskStatus, Video, VideoRequest

__all__ = ["Event", "EventHub", "EventKind", "EventStream"]

logger = logging.getLogger("sora2_async")


class EventKind(str, enum.Enum):
    """What happened."""

    SUBMITTED = "submitted"  #: a generate was accepted: ``task``
    POLLED = "polled"  #: a status came back: ``status``
    COMPLETED = "completed"  #: a video is ready: ``video``
    FAILED = "failed"  #: a task or a request ended in error: ``error`` (``status`` if any)
    WAITING_FOR_BUDGET = "waiting_for_budget"  #: a request waits for a slot: ``budget``
    RATE_LIMITED = "rate_limited"  #: the server answered 429: ``budget``


@attrs.frozen
class Event:
    """One progress event. Which fields are set depends on ``kind``."""

    kind: EventKind
    time: float  #: ``anyio.current_time()`` when it happened
    task_id: str | None = None
    task: Task | None = None
    request: VideoRequest | None = None
    status: TaskStatus | None = None
    video: Video | None = None
    error: BaseException | None = None
    budget: BudgetState | None = None


Listener = Callable[[Event], None]


class EventHub:
    """Fans events out to listeners."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def add(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every event; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self.remove(listener)

    def remove(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error if it is not there)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, kind: EventKind, **fields: object) -> None:
        """Build an event and hand it to every listener (cheap when there are none)."""
        if not self._listeners:
            return
        event = Event(kind, anyio.current_time(), **fields)  # type: ignore[arg-type]
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("an event listener raised; ignoring it")

    def stream(self, *, task_id: str | None = None, max_buffer: float = math.inf) -> EventStream:
        """An async context manager giving a receive stream of events (of one task, if given).

        When a consumer falls ``max_buffer`` events behind, newer events are dropped for it
        (``EventStream.dropped`` counts them) rather than blocking the client.
        """
        return EventStream(self, task_id, max_buffer)


class EventStream:
    """``async with hub.stream() as events: async for event in events: ...``"""

    def __init__(self, hub: EventHub, task_id: str | None, max_buffer: float) -> None:
        self._hub = hub
        self._task_id = task_id
        self._max_buffer = max_buffer
        self._send: MemoryObjectSendStream[Event] | None = None
        self._receive: MemoryObjectReceiveStream[Event] | None = None
        self._remove: Callable[[], None] | None = None
        self.dropped = 0

    def _listen(self, event: Event) -> None:
        if self._send is None or (self._task_id is not None and event.task_id != self._task_id):
            return
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async def __aenter__(self) -> MemoryObjectReceiveStream[Event]:
        send, receive = anyio.create_memory_object_stream[Event](self._max_buffer)
        self._send, self._receive = send, receive
        self._remove = self._hub.add(self._listen)
        return receive

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._remove is not None:
            self._remove()
        if self._send is not None and self._receive is not None:
            self._send.close()
            self._receive.close()
