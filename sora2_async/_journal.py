"""The batch journal: nothing lost, nothing paid twice, across crashes and restarts.

A :class:`Journal` remembers, per request of a batch, how far it got: the intent to submit
(written durably *before* the generate goes out), the accepted ``taskId`` (written before
anything else happens to the task), and the terminal status. A batch run again with the same
journal resumes from there: finished requests are not sent again, running tasks are followed
by id, and a request whose generate went out without an answer coming back is *uncertain* —
the API cannot tell whether the task exists — and is not re-sent unless asked.

:class:`SQLiteJournal` is the stdlib ``sqlite3`` implementation (one file, WAL, every write
committed with ``synchronous=FULL`` before the call returns), run in worker threads so that
the event loop never waits on the disk. Another store (Redis, say) implements the protocol.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar, runtime_checkable

import anyio
import attrs

from ._errors import Sora2Error
from ._journal_codec import COLUMNS, entry_from_row, request_text, status_fields
from ._journal_db import (
    JournalError,
    JournalUnreadableError,
    open_journal_db,
    read_meta,
    unreadable,
    write_meta,
)
from ._models import TaskState, TaskStatus, VideoRequest

__all__ = [
    "FollowerLeases",
    "Journal",
    "JournalError",
    "JournalUnreadableError",
    "JournalEntry",
    "JournalState",
    "SQLiteJournal",
    "RequestKeys",
    "UncertainSubmissionError",
    "request_key",
]

R = TypeVar("R")


class JournalState(str, enum.Enum):
    """How far one request of a batch got."""

    INTENT = "intent"  #: its generate was about to go out; no answer recorded (uncertain)
    SUBMITTED = "submitted"  #: the API accepted it: ``task_id`` is known, not finished yet
    COMPLETED = "completed"  #: the video is ready: ``video_url``
    FAILED = "failed"  #: the task ended failed (``error``, ``error_code``)
    REJECTED = "rejected"  #: the API refused the generate: no task exists, it may be re-sent


@attrs.frozen
class JournalEntry:
    """What a journal knows of one request: ``key`` identifies it within its batch."""

    key: str
    request: VideoRequest
    state: JournalState
    task_id: str | None = None
    video_url: str | None = None
    generation_time: float | None = None
    credits_used: int | None = None
    error: str | None = None
    error_code: str | None = None
    updated_at: float = 0.0  #: wall-clock time (``time.time()``) of the last change

    @property
    def uncertain(self) -> bool:
        """Whether its generate may have created a task that nobody knows the id of."""
        return self.state is JournalState.INTENT

    def final_status(self) -> TaskStatus | None:
        """The terminal :class:`TaskStatus` it recorded, or ``None`` if it has none."""
        if self.task_id is None or self.state not in (JournalState.COMPLETED, JournalState.FAILED):
            return None
        state = TaskState.COMPLETED if self.state is JournalState.COMPLETED else TaskState.FAILED
        return TaskStatus(
            self.task_id,
            state,
            video_url=self.video_url,
            generation_time=self.generation_time,
            credits_used=self.credits_used,
            error=self.error,
            error_code=self.error_code,
        )


class UncertainSubmissionError(Sora2Error):
    """A journaled request's generate went out before, and no answer was recorded.

    The task may exist (and may have been charged); the API cannot list tasks, so it was not
    sent again. Pass ``resubmit_uncertain=True`` (``--resubmit-uncertain``) to send it anyway.
    """

    def __init__(self, key: str, request: VideoRequest) -> None:
        self.key = key
        self.request = request
        super().__init__(
            f"the generate of {request.prompt[:60]!r} went out in an earlier run and its "
            "answer was lost: the task may exist and may have been charged; not re-sent"
        )


@runtime_checkable
class Journal(Protocol):
    """Where a batch records its progress (see the module's docstring for the contract).

    Every ``record_*`` must be durable when it returns: a crash right after it loses nothing.
    """

    async def lookup(self, key: str) -> JournalEntry | None:
        """What is recorded for ``key``, or ``None`` if nothing is."""

    async def entries(self) -> list[JournalEntry]:
        """Every entry, oldest first."""

    async def record_intent(self, key: str, request: VideoRequest) -> None:
        """``request``'s generate is about to be sent (state :attr:`JournalState.INTENT`)."""

    async def record_task(self, key: str, request: VideoRequest, task_id: str) -> None:
        """The API accepted ``request`` as ``task_id`` (state ``SUBMITTED``)."""

    async def record_rejected(self, key: str, request: VideoRequest, error: str) -> None:
        """The API refused the generate, so no task exists (state ``REJECTED``)."""

    async def record_status(self, key: str, status: TaskStatus) -> None:
        """The task of ``key`` ended with ``status`` (``COMPLETED`` or ``FAILED``)."""


@runtime_checkable
class FollowerLeases(Protocol):
    """What a journal shared by many processes adds: one follower per running task.

    A process that follows a ``SUBMITTED`` task holds its lease (this journal's owner id and
    an expiry ``follower_ttl`` seconds ahead, on the store's clock) and renews it while it
    follows; a task whose follower died is *adoptable* once its lease lapsed, and whoever
    adopts it holds the lease from then on. Claims are atomic: two owners never hold one
    task. A batch uses these through its journal by itself (``_journaled``); a journal
    without them (``SQLiteJournal``) works as before: whoever resumes it follows its tasks.
    """

    @property
    def follower_ttl(self) -> float:
        """Seconds a lease lasts unless renewed."""

    async def claim(self, key: str) -> bool:
        """Hold the lease on the ``SUBMITTED`` task of ``key``: ``True`` when this owner holds
        it now (it was free, lapsed or its own), ``False`` when another owner's lease is live
        or the entry is not ``SUBMITTED``."""

    async def renew(self, key: str) -> bool:
        """Push the lease of ``key`` a ``follower_ttl`` ahead; ``False`` when another owner
        took it (this one's lapsed meanwhile) or the task is no longer ``SUBMITTED``."""

    async def reserve(self, key: str) -> bool | None:
        """Hold the lease of ``key`` as its submitter, before its generate goes out (a
        request not yet submitted, or refused, or uncertain): ``True`` when this owner holds
        it now, ``False`` when another owner's is live (that one is sending it), ``None``
        when the entry is submitted or ended. The lease becomes the follower's when the
        task id is recorded, so that two processes never send one request."""

    async def release(self, key: str) -> None:
        """Give up the lease of ``key`` if this owner holds it (an unfinished task becomes
        adoptable at once); harmless otherwise."""

    async def adoptable(self, limit: int | None = None) -> list[JournalEntry]:
        """Claim (atomically) up to ``limit`` ``SUBMITTED`` tasks whose lease lapsed or that
        have none, oldest first, and return their entries: this owner follows them now."""

    async def held_elsewhere(self) -> int:
        """How many ``SUBMITTED`` tasks another owner's live lease holds."""

    async def task_key(self, task_id: str) -> str | None:
        """The key of the entry whose task is ``task_id``, or ``None``."""


def request_key(request: VideoRequest, occurrence: int = 0) -> str:
    """A stable key for ``request``: its wire body's digest, and which copy of it this is.

    Content, not position, identifies a request, so a batch file that is edited (lines added
    or moved) still finds its earlier entries; the ``occurrence`` tells identical requests of
    one batch apart.
    """
    body = json.dumps(request.to_wire(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:24]
    return f"{digest}-{occurrence}"


class RequestKeys:
    """Keys for the requests of one batch, in order: the n-th copy of a request gets ``n``."""

    def __init__(self) -> None:
        self._copies: Counter[str] = Counter()

    def next(self, request: VideoRequest) -> str:
        """The key of ``request``, the next request of the batch."""
        plain = request_key(request)
        key = request_key(request, self._copies[plain])
        self._copies[plain] += 1
        return key


_COLUMNS = ", ".join(COLUMNS)
# One upsert for every state change; a NULL argument keeps what the row already had, so a
# late write cannot erase a task id.
_UPSERT = """
INSERT INTO entries (key, request, state, task_id, video_url, generation_time, credits_used,
                     error, error_code, created_at, updated_at)
VALUES (:key, :request, :state, :task_id, :video_url, :generation_time, :credits_used,
        :error, :error_code, :now, :now)
ON CONFLICT (key) DO UPDATE SET
    state = excluded.state,
    task_id = COALESCE(excluded.task_id, entries.task_id),
    video_url = excluded.video_url,
    generation_time = excluded.generation_time,
    credits_used = excluded.credits_used,
    error = excluded.error,
    error_code = excluded.error_code,
    updated_at = excluded.updated_at
"""


class SQLiteJournal:
    """A :class:`Journal` in one SQLite file (created on first use, with its folder).

    Writes are committed in WAL mode with ``synchronous=FULL`` before they return, so they
    survive a crash of the process or the machine. Each call runs in a worker thread
    (``anyio.to_thread``), one at a time. Use ``async with SQLiteJournal(path) as journal``,
    or call :meth:`aclose` when done.
    """

    def __init__(self, path: str | PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()  # one connection, used by one worker thread at a time
        self._db: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<SQLiteJournal {str(self._path)!r}>"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def __aenter__(self) -> SQLiteJournal:
        await self._run(lambda db: None)  # open (and create) it now: fail early
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the database (a closed journal refuses further calls)."""
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Close the database from synchronous code."""
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None

    async def lookup(self, key: str) -> JournalEntry | None:
        """What is recorded for ``key``, or ``None``."""

        def query(db: sqlite3.Connection) -> JournalEntry | None:
            row = db.execute(f"SELECT {_COLUMNS} FROM entries WHERE key = ?", (key,)).fetchone()
            return None if row is None else entry_from_row(row)

        return await self._run(query)

    async def entries(self) -> list[JournalEntry]:
        """Every entry, in the order they were first recorded."""

        def query(db: sqlite3.Connection) -> list[JournalEntry]:
            rows = db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY created_at, rowid")
            return [entry_from_row(row) for row in rows]

        return await self._run(query)

    async def meta(self, name: str) -> str | None:
        """A fact recorded about the journal itself (``key_fingerprint``), or ``None``."""
        return await self._run(lambda db: read_meta(db, name))

    async def set_meta(self, name: str, value: str) -> None:
        """Durably record a fact about the journal itself (never a secret)."""
        await self._run(lambda db: write_meta(db, name, value))

    async def record_intent(self, key: str, request: VideoRequest) -> None:
        """Durably: ``request``'s generate is about to be sent."""
        await self._write(key, request, JournalState.INTENT)

    async def record_task(self, key: str, request: VideoRequest, task_id: str) -> None:
        """Durably: the API accepted ``request`` as ``task_id``."""
        await self._write(key, request, JournalState.SUBMITTED, task_id=task_id)

    async def record_rejected(self, key: str, request: VideoRequest, error: str) -> None:
        """Durably: the API refused ``request``; no task exists."""
        await self._write(key, request, JournalState.REJECTED, error=error)

    async def record_status(self, key: str, status: TaskStatus) -> None:
        """Durably: the task of ``key`` ended with ``status``.

        Raises:
            KeyError: when nothing is recorded for ``key``.
            JournalError: the journal could not be written (it is left as it was).
        """
        entry = await self.lookup(key)
        if entry is None:
            raise KeyError(f"no journal entry for {key!r}")
        state, fields = status_fields(status)
        await self._write(key, entry.request, JournalState(state), **fields)

    async def _write(
        self,
        key: str,
        request: VideoRequest,
        state: JournalState,
        *,
        task_id: str | None = None,
        video_url: str | None = None,
        generation_time: float | None = None,
        credits_used: int | None = None,
        error: str | None = None,
        error_code: str | None = None,
    ) -> None:
        row = {
            "key": key,
            "request": request_text(request),
            "state": state.value,
            "task_id": task_id,
            "video_url": video_url,
            "generation_time": generation_time,
            "credits_used": credits_used,
            "error": error,
            "error_code": error_code,
            "now": time.time(),
        }

        def write(db: sqlite3.Connection) -> None:
            with db:  # one transaction, committed (and synced) on leaving
                db.execute(_UPSERT, row)

        await self._run(write)

    async def _run(self, work: Callable[[sqlite3.Connection], R]) -> R:
        def call() -> R:
            with self._lock:
                db = self._connect()
                try:
                    return work(db)
                except sqlite3.OperationalError as exc:  # a full disk, a lock, a read-only file
                    raise JournalError(
                        f"cannot use the journal {self._path}: {exc}", path=self._path
                    ) from None
                except sqlite3.DatabaseError as exc:  # damaged after it was opened
                    raise unreadable(self._path, f"is damaged ({exc})") from None
                except (ValueError, KeyError, TypeError) as exc:  # a row no journal writes
                    raise unreadable(self._path, f"holds a row it cannot read ({exc!r})") from None

        # Not abandoned on cancellation: a write that started finishes, so it is either
        # wholly in the journal or not at all, and the caller knows which.
        return await anyio.to_thread.run_sync(call)

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._db is None:
            self._db = open_journal_db(self._path)
        return self._db
