"""Opening a SQLite file of ours (the budget store, a service's video store), refusing any other.

A file that is a folder, another program's database or one of ours of another kind is
refused with the kind's error, and left byte-for-byte unchanged: ``CREATE TABLE`` in a
stranger's database would hide what it held. Several processes may make one new file at
once: the schema goes in under ``BEGIN IMMEDIATE``, and an empty database is one being made.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import attrs

from ._errors import BudgetStoreError

__all__ = ["BUDGET", "FileKind", "execute_unlocked", "open_owned", "open_store"]


@attrs.frozen
class FileKind:
    """What makes a file one of ours of one kind: its mark, its format line, its schema."""

    what: str  #: how messages name it ("budget store")
    application_id: int  #: ``PRAGMA application_id``: marks the file as ours
    format: str  #: the ``format`` row of its ``meta`` table
    schema: str  #: ``;``-separated statements, each safe to run again
    error: type[Exception]  #: what a refusal raises


BUDGET = FileKind(
    what="budget store",
    application_id=0x53324275,  # "S2Bu"
    format="sora2-async budget 1",
    schema="""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, kind INTEGER NOT NULL,
    until REAL NOT NULL, answered INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS entries_until ON entries (until);
CREATE TABLE IF NOT EXISTS owners (
    id TEXT PRIMARY KEY, alive_until REAL NOT NULL, leases INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, owner TEXT NOT NULL, due REAL NOT NULL);
CREATE TABLE IF NOT EXISTS fronts (
    owner TEXT NOT NULL, kind INTEGER NOT NULL, since REAL NOT NULL, promise REAL,
    alive_until REAL NOT NULL, PRIMARY KEY (owner, kind));
CREATE TABLE IF NOT EXISTS ceiling (
    id INTEGER PRIMARY KEY CHECK (id = 1), lowered_to INTEGER, lowered_at REAL NOT NULL,
    blocked_until REAL NOT NULL, rate_limited INTEGER NOT NULL);
INSERT OR IGNORE INTO ceiling VALUES (1, NULL, -1e308, -1e308, 0);
CREATE TABLE IF NOT EXISTS ceiling_learnt (
    id INTEGER PRIMARY KEY CHECK (id = 1), failed INTEGER, repeats INTEGER NOT NULL,
    learnt_at REAL);
INSERT OR IGNORE INTO ceiling_learnt VALUES (1, NULL, 0, NULL);
INSERT OR IGNORE INTO meta VALUES ('format', 'sora2-async budget 1');
""",
    error=BudgetStoreError,
)


def open_store(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open (or make) a budget store file; refuse anything else, changing nothing."""
    return open_owned(path, BUDGET, busy_timeout)


def open_owned(path: Path, kind: FileKind, busy_timeout: float) -> sqlite3.Connection:
    """Open (or make) a file of ``kind`` in WAL mode; refuse anything else, changing nothing.

    Raises:
        kind.error: ``path`` is a folder, not a database, or not a file of this kind.
    """
    if path.is_dir():
        raise kind.error(f"{path} is a folder, not a {kind.what}: pass a file's path")
    existed = path.exists() and path.stat().st_size > 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as exc:
        raise kind.error(f"cannot open the {kind.what} {path}: {exc}") from None
    try:
        if existed:
            _check_ours(db, path, kind)
        execute_unlocked(db, "PRAGMA journal_mode = WAL", busy_timeout)
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable against a killed process
        db.execute("BEGIN IMMEDIATE")
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        if application_id not in (0, kind.application_id):  # made meanwhile by someone else
            raise kind.error(f"{path} is not a sora2-async {kind.what}")
        for statement in kind.schema.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA application_id = {kind.application_id}")
        db.execute("COMMIT")
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.Error):
            raise kind.error(
                f"{path} is not a usable sora2-async {kind.what} ({exc}); "
                "nothing was changed: pass another path"
            ) from None
        raise
    return db


def execute_unlocked(db: sqlite3.Connection, statement: str, timeout: float) -> None:
    """Run ``statement``, trying again for up to ``timeout`` seconds while the file is locked.

    For the statements whose lock SQLite's busy handler waits for badly or not at all:
    ``BEGIN IMMEDIATE`` (the handler backs off to 100 ms sleeps; several workers writing
    small transactions wait less, and more fairly, with short jittered tries) and switching
    a new file to WAL (answered "database is locked" at once while another process holds a
    lock on it: the workers of a first ``uvicorn --workers 4`` start all make the file).
    A blocking wait, like the busy handler's own.

    Raises:
        sqlite3.OperationalError: still locked after ``timeout``, or another failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute(statement)
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or (
                time.monotonic() >= deadline
            ):
                raise
        time.sleep(random.uniform(0.0005, 0.003))


def _check_ours(db: sqlite3.Connection, path: Path, kind: FileKind) -> None:
    # One read transaction, one snapshot: read apart, a file that another process finished
    # making in between would look half-made (no mark, yet tables), that is foreign.
    db.execute("BEGIN")
    try:
        _check_snapshot(db, path, kind)
    finally:
        db.execute("COMMIT")


def _check_snapshot(db: sqlite3.Connection, path: Path, kind: FileKind) -> None:
    (application_id,) = db.execute("PRAGMA application_id").fetchone()
    if application_id == 0 and not db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        return  # an empty database: another process is making the store this very moment
    row: Any = None
    if application_id == kind.application_id:
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    if row is None or row[0] != kind.format:
        raise kind.error(
            f"{path} is not a sora2-async {kind.what} (it holds something else); "
            "nothing was changed: pass another path"
        )
