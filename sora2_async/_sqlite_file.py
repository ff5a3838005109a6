"""The budget store's file: its schema, and opening it (refusing a file that is not one)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ._errors import BudgetStoreError

__all__ = ["open_store"]

_APPLICATION_ID = 0x53324275  # "S2Bu": marks the file as ours
_FORMAT = "sora2-async budget 1"

_SCHEMA = """
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
INSERT OR IGNORE INTO meta VALUES ('format', 'sora2-async budget 1');
"""


def open_store(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open (or make) a budget store file; refuse anything else, changing nothing."""
    if path.is_dir():
        raise BudgetStoreError(f"{path} is a folder, not a budget store: pass a file's path")
    existed = path.exists() and path.stat().st_size > 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as exc:
        raise BudgetStoreError(f"cannot open the budget store {path}: {exc}") from None
    try:
        if existed:
            _check_ours(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable against a killed process
        db.execute("BEGIN IMMEDIATE")
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        if application_id not in (0, _APPLICATION_ID):  # made meanwhile by someone else
            raise BudgetStoreError(f"{path} is not a sora2-async budget store")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        db.execute("COMMIT")
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.Error):
            raise BudgetStoreError(
                f"{path} is not a usable sora2-async budget store ({exc}); "
                "nothing was changed: pass another path"
            ) from None
        raise
    return db


def _check_ours(db: sqlite3.Connection, path: Path) -> None:
    (application_id,) = db.execute("PRAGMA application_id").fetchone()
    if application_id == 0 and not db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        return  # an empty database: another process is making the store this very moment
    row: Any = None
    if application_id == _APPLICATION_ID:
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    if row is None or row[0] != _FORMAT:
        raise BudgetStoreError(
            f"{path} is not a sora2-async budget store (it holds something else); "
            "nothing was changed: pass another path"
        )
