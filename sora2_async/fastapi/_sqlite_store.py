"""``SQLiteVideoStore``: a service's records in one SQLite file, shared by the workers of a host.

WAL mode, one ``BEGIN IMMEDIATE`` transaction per change (so two workers never claim one
record), ``synchronous=FULL`` (an accepted video survives a crash of the machine), a busy
timeout for the moments another worker writes. Each call runs in a worker thread, so the
event loop never waits on the disk. Leases are on the wall clock (``time.time``): every
worker of one host shares it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import attrs

from .._sqlite_file import FileKind, execute_unlocked, open_owned
from .._video_records import (
    FIELDS,
    BatchRecord,
    Created,
    IdempotencyConflictError,
    VideoRecord,
    VideoStoreError,
    poll_for_change,
    record_fields,
    record_from_fields,
)
from .._video_rules import claimable, claimed, released, renewed, updated

__all__ = ["SQLiteVideoStore"]

R = TypeVar("R")

_KIND = FileKind(
    what="video store",
    application_id=0x53325669,  # "S2Vi"
    format="sora2-async videos 1",
    schema="""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    id TEXT PRIMARY KEY, request TEXT NOT NULL, state TEXT NOT NULL, task_id TEXT,
    progress TEXT, video_url TEXT, generation_time REAL, credits_used INTEGER, error TEXT,
    error_code TEXT, batch_id TEXT, owner TEXT, lease_until REAL NOT NULL,
    version INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    submitted_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS videos_open ON videos (lease_until)
    WHERE state NOT IN ('completed', 'failed', 'error');
CREATE INDEX IF NOT EXISTS videos_ended ON videos (updated_at)
    WHERE state IN ('completed', 'failed', 'error');
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, video_ids TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, target TEXT NOT NULL, digest TEXT NOT NULL, created_at REAL NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('format', 'sora2-async videos 1');
""",
    error=VideoStoreError,
)
_COLUMNS = ", ".join(FIELDS)
_PLACES = ", ".join(f":{name}" for name in FIELDS)
_UPSERT = (
    f"INSERT INTO videos ({_COLUMNS}) VALUES ({_PLACES}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in FIELDS if name != "id")
)
_OPEN = "state NOT IN ('completed', 'failed', 'error')"
_SHORT_BUSY = 0.002  # SQLite's own wait for a lock, before ``_begin`` tries again


class SQLiteVideoStore:
    """A :class:`VideoStore` in the SQLite file ``path`` (made on first use, with its folder).

    Every worker of a host that opens the same file shares the videos: any of them answers
    for any video, and a worker that dies has its videos taken over. Use it as
    ``async with SQLiteVideoStore(path) as store`` (or call :meth:`aclose`).

    Args:
        path: the file.
        lease_ttl: seconds a worker's lease lasts unless renewed: a dead worker's videos
            are taken over after at most this long.
        retention: seconds an ended video (and an idempotency key) is kept.
        poll_interval: how often an event stream looks for a change another worker wrote.
        clock: the lease clock (``time.time``), shared by every process of the host.

    Raises:
        VideoStoreError: on first use, when the file is not a video store of this SDK (it is
            then left unchanged) or cannot be opened.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        lease_ttl: float = 30.0,
        retention: float = 7 * 86_400.0,
        poll_interval: float = 0.25,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 30.0,
    ) -> None:
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be positive, not {lease_ttl!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval!r}")
        self._path = Path(path)
        self._ttl = float(lease_ttl)
        self._retention = retention
        self._poll = poll_interval
        self._clock = clock
        self._busy_timeout = busy_timeout
        # Two connections: a write may wait (seconds, under contention) for another worker's
        # transaction, and the reads (every GET, every event stream) must not wait behind it.
        self._locks = {"read": threading.Lock(), "write": threading.Lock()}
        self._dbs: dict[str, sqlite3.Connection] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<SQLiteVideoStore {str(self._path)!r}>"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts unless renewed."""
        return self._ttl

    async def __aenter__(self) -> SQLiteVideoStore:
        await self._run(lambda db: None, write=True)  # open (and make) it now: fail early
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the file (a closed store refuses further calls)."""

        def close() -> None:
            with self._locks["read"], self._locks["write"]:
                self._closed = True
                for db in self._dbs.values():
                    db.close()
                self._dbs.clear()

        await anyio.to_thread.run_sync(close)

    async def create(
        self,
        videos: Sequence[VideoRecord],
        *,
        batch: BatchRecord | None = None,
        idempotency_key: str | None = None,
        digest: str = "",
    ) -> Created:
        """Record new videos (and a batch); see :meth:`VideoStore.create`."""
        now, wall = self._clock(), time.time()
        target = batch.id if batch is not None else videos[0].id

        def work(db: sqlite3.Connection) -> Created:
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT target, digest FROM idempotency WHERE key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    if row[1] != digest:
                        raise IdempotencyConflictError(idempotency_key, row[0])
                    return Created(row[0], created=False)
                db.execute(
                    "INSERT INTO idempotency VALUES (?, ?, ?, ?)",
                    (idempotency_key, target, digest, wall),
                )
            for record in videos:
                lease_until = now + self._ttl if record.owner else 0.0
                stamped = attrs.evolve(
                    record, lease_until=lease_until, created_at=wall, updated_at=wall
                )
                _write(db, stamped)
            if batch is not None:
                db.execute(
                    "INSERT INTO batches VALUES (?, ?, ?)",
                    (batch.id, json.dumps(batch.video_ids), wall),
                )
            return Created(target, created=True)

        return await self._transaction(work, durable=True)

    async def video(self, video_id: str) -> VideoRecord | None:
        """The record of ``video_id``, or ``None``."""
        return await self._run(lambda db: _read(db, video_id))

    async def batch(self, batch_id: str) -> tuple[BatchRecord, list[VideoRecord]] | None:
        """A batch and its videos' records, or ``None``."""

        def work(db: sqlite3.Connection) -> tuple[BatchRecord, list[VideoRecord]] | None:
            row = db.execute(
                "SELECT video_ids, created_at FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
            if row is None:
                return None
            record = BatchRecord(batch_id, tuple(json.loads(row[0])), float(row[1]))
            found = (_read(db, video_id) for video_id in record.video_ids)
            return record, [video for video in found if video is not None]

        return await self._run(work)

    async def update(
        self, video_id: str, owner: str, changes: Mapping[str, Any]
    ) -> VideoRecord | None:
        """Apply ``changes`` if ``owner`` holds the record; see :meth:`VideoStore.update`."""
        now, wall = self._clock(), time.time()

        def work(db: sqlite3.Connection) -> VideoRecord | None:
            record = _read(db, video_id)
            if record is None:
                return None
            new = updated(record, owner, changes, now=now, ttl=self._ttl, now_wall=wall)
            if new is not None:
                _write(db, new)
            return new

        # A state or a task id is synced to the disk; a progress word need not be.
        durable = "state" in changes or "task_id" in changes
        return await self._transaction(work, durable=durable)

    async def claim(self, owner: str, limit: int) -> list[VideoRecord]:
        """Take up to ``limit`` unfinished records whose lease lapsed, oldest first (and
        forget the videos that ended longer than ``retention`` ago)."""
        now, wall = self._clock(), time.time()

        def work(db: sqlite3.Connection) -> list[VideoRecord]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM videos WHERE {_OPEN} AND lease_until <= ? "
                "ORDER BY rowid LIMIT ?",
                (now, limit),
            ).fetchall()
            taken = []
            for row in rows:
                record = record_from_fields(dict(zip(FIELDS, row, strict=True)))
                if claimable(record, now):
                    taken.append(claimed(record, owner, now=now, ttl=self._ttl))
                    _write(db, taken[-1])
            cutoff = wall - self._retention
            db.execute(
                "DELETE FROM videos WHERE state IN ('completed', 'failed', 'error') "
                "AND updated_at < ?",
                (cutoff,),
            )
            db.execute("DELETE FROM idempotency WHERE created_at < ?", (cutoff,))
            db.execute("DELETE FROM batches WHERE created_at < ?", (cutoff,))
            return taken

        return await self._transaction(work)

    async def renew(self, owner: str, video_ids: Sequence[str]) -> set[str]:
        """Push the leases ``owner`` still holds among ``video_ids``."""
        now = self._clock()
        return await self._each(video_ids, lambda r: renewed(r, owner, now=now, ttl=self._ttl))

    async def release(self, owner: str, video_ids: Sequence[str]) -> None:
        """End ``owner``'s leases on ``video_ids`` now."""
        await self._each(video_ids, lambda record: released(record, owner))

    async def wait_change(self, video_id: str, version: int, within: float) -> None:
        """Return once the record's version moved, looking every ``poll_interval``, or
        after ``timeout``."""
        await poll_for_change(self.video, video_id, version, within, self._poll)

    async def _each(
        self, video_ids: Sequence[str], change: Callable[[VideoRecord], VideoRecord | None]
    ) -> set[str]:
        def work(db: sqlite3.Connection) -> set[str]:
            done = set()
            for video_id in video_ids:
                record = _read(db, video_id)
                new = None if record is None else change(record)
                if new is not None:
                    _write(db, new)
                    done.add(video_id)
            return done

        if not video_ids:
            return set()
        return await self._transaction(work)

    async def _transaction(
        self, work: Callable[[sqlite3.Connection], R], *, durable: bool = False
    ) -> R:
        """``work`` in one write transaction. ``durable`` ones (an accepted video, the intent
        to send a generate, a task id, an outcome) are synced to the disk before they return
        (``synchronous=FULL``: they survive a power cut); lease bookkeeping only survives a
        crash of the process (``NORMAL``), which is all it needs: a lost renewal lapses."""

        def atomic(db: sqlite3.Connection) -> R:
            db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._begin(db)
            try:
                result = work(db)
                db.execute("COMMIT")
                return result
            finally:
                if db.in_transaction:  # the work, or the COMMIT itself, failed
                    db.execute("ROLLBACK")

        return await self._run(atomic, write=True)

    def _begin(self, db: sqlite3.Connection) -> None:
        # One writer at a time, across processes, waited for with short tries of our own.
        execute_unlocked(db, "BEGIN IMMEDIATE", self._busy_timeout)

    async def _run(self, work: Callable[[sqlite3.Connection], R], *, write: bool = False) -> R:
        use = "write" if write else "read"

        def call() -> R:
            with self._locks[use]:
                if self._closed:
                    raise RuntimeError(f"{self!r} is closed")
                if use not in self._dbs:
                    self._dbs[use] = _open(self._path, self._busy_timeout)
                try:
                    return work(self._dbs[use])
                except sqlite3.Error as exc:  # a lock held too long, a full disk, damage
                    raise VideoStoreError(
                        f"cannot use the video store {self._path}: {exc}"
                    ) from None

        # Not abandoned on cancellation: a write that started finishes (or rolls back).
        return await anyio.to_thread.run_sync(call)


def _read(db: sqlite3.Connection, video_id: str) -> VideoRecord | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM videos WHERE id = ?", (video_id,)).fetchone()
    return None if row is None else record_from_fields(dict(zip(FIELDS, row, strict=True)))


def _write(db: sqlite3.Connection, record: VideoRecord) -> None:
    # An upsert, not INSERT OR REPLACE: the row keeps its rowid, the order claims go in.
    db.execute(_UPSERT, record_fields(record))


def _open(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open (or make) a video store file; refuse anything else, changing nothing."""
    db = open_owned(path, _KIND, busy_timeout)
    db.execute(f"PRAGMA busy_timeout = {round(_SHORT_BUSY * 1000)}")  # then: see ``_begin``
    return db
