"""Opening a journal's SQLite file, and refusing one that is not a journal.

A journal says what was paid for. A file that is a folder, garbage, truncated, another
program's database, or rows this SDK cannot read is refused with :class:`JournalUnreadableError`
before anything is written to it (``CREATE TABLE`` in a stranger's database, or a schema over
a broken file, would hide what it held). Every other SQLite failure (a read-only folder, a
full disk, a lock held too long) is a :class:`JournalError`: a :class:`Sora2Error`, so that
callers (the batch, the command line) handle it as one of ours, never as a traceback.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ._errors import Sora2Error
from ._journal_codec import COLUMNS
from ._sqlite_file import execute_unlocked

__all__ = [
    "META_SCHEMA",
    "JournalError",
    "JournalUnreadableError",
    "SCHEMA",
    "open_journal_db",
    "read_meta",
    "write_meta",
]

_BUSY_TIMEOUT = 5.0  # seconds a statement waits for another process's lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    video_url TEXT,
    generation_time REAL,
    credits_used INTEGER,
    error TEXT,
    error_code TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""
# Facts about the journal itself (the fingerprint of the key it was made with: never a key).
META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
# The columns a journal must have: what an entry is read from, and the order of entries.
_COLUMNS = {*COLUMNS, "created_at"}


class JournalError(Sora2Error):
    """The journal could not be read or written (``path``, ``None`` for a journal that is
    no file, in Redis say): a local problem, not the API's.

    Writes are transactions: a failed one leaves the journal as it was.
    """

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        self.path = path
        super().__init__(message)


class JournalUnreadableError(JournalError):
    """The file is no journal this SDK can read: nothing was sent and nothing overwritten."""


def unreadable(path: Path, what: str) -> JournalUnreadableError:
    """The refusal of the journal at ``path``, saying what is wrong and what to do."""
    return JournalUnreadableError(
        f"the journal {path} {what}. It records what was paid for, so nothing was sent and "
        "nothing overwritten. Restore it from a backup, or, to start afresh on purpose, move "
        "it away (with the folder's manifest.jsonl and videos)",
        path=path,
    )


def open_journal_db(path: Path) -> sqlite3.Connection:
    """Open (or create) the journal database at ``path``, checked, in WAL mode.

    Raises:
        JournalUnreadableError: ``path`` is a folder, not an SQLite database, damaged, or
            another program's database.
        JournalError: any other SQLite failure (permissions, a full disk, a lock).
    """
    if path.is_dir():
        raise unreadable(path, "is a folder, not a file")
    existed = path.exists() and path.stat().st_size > 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JournalError(
            f"cannot make the journal's folder {path.parent}: {exc.strerror or exc}", path=path
        ) from None
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}", path=path) from None
    try:
        if existed:
            _check(db, path)
        execute_unlocked(db, "PRAGMA journal_mode=WAL", _BUSY_TIMEOUT)  # see execute_unlocked
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        db.execute(f"PRAGMA busy_timeout={round(_BUSY_TIMEOUT * 1000)}")
        db.execute(SCHEMA)
        db.execute(META_SCHEMA)
    except JournalError:
        db.close()
        raise
    except sqlite3.OperationalError as exc:
        db.close()
        raise JournalError(f"cannot use the journal {path}: {exc}", path=path) from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        db.close()
        raise unreadable(path, f"is not a readable SQLite database ({exc})") from None
    except BaseException:
        db.close()
        raise
    return db


def _check(db: sqlite3.Connection, path: Path) -> None:
    """Refuse an existing file that is not a whole journal (before anything writes to it)."""
    try:
        verdict = db.execute("PRAGMA quick_check").fetchone()
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    except sqlite3.OperationalError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise unreadable(path, f"is not a readable SQLite database ({exc})") from None
        raise
    if verdict is None or verdict[0] != "ok":
        raise unreadable(path, f"is damaged ({verdict[0] if verdict else 'no check result'})")
    if "entries" not in tables or not columns >= _COLUMNS:
        raise unreadable(path, "is an SQLite database, but not a sora2 journal")


def read_meta(db: sqlite3.Connection, name: str) -> str | None:
    """The journal's fact ``name``, or ``None``."""
    row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def write_meta(db: sqlite3.Connection, name: str, value: str) -> None:
    """Record the journal's fact ``name`` (durably, in one transaction)."""
    with db:
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))
