"""Where ``sora2 batch`` keeps its journal, decided before anything is sent, and opening it.

By default the journal is a SQLite file in the output folder. With ``--redis URL`` (or
``$NANOPHOTO_REDIS_URL``) it is a :class:`~sora2_async.redis.RedisJournal` named by the
batch (``--batch-name``, see :mod:`.folder_record`), shared by every host that runs the
batch: a request sent by one is not sent by another, each running task has one follower,
and a killed run's tasks are adopted by any other run of the batch. The folder records
which journal is its own (``.sora2-journal.json``).

A folder never gets a second journal by accident. Refused with
:class:`~.folder_record.JournalMismatchError` (exit status 2, nothing sent):

* a folder whose journal is in Redis, run without a Redis URL, or with ``--journal PATH``;
* a folder with a SQLite journal, run with a Redis URL, unless ``--journal PATH`` says to
  keep that file (the budget is then in Redis, the journal in the file: a documented choice);
* ``--batch-name`` other than the one the folder recorded;
* a folder made with another key (or base URL);
* a journal in Redis that is not the one the folder recorded (another id, or none: its
  data was lost, or this is another server), or a manifest with tasks and no journal.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._journal import Journal, JournalEntry, SQLiteJournal
from .._models import VideoRequest
from .errors import CLIError, sole_exception
from .folder import check_against_journal, check_before_opening, check_journal_key, manifest_tasks
from .folder_record import (
    RECORD,
    FolderRecord,
    JournalMismatchError,
    check_name,
    default_name,
    read_record,
    redact,
    write_record,
)

if TYPE_CHECKING:
    from .runner import BatchOptions

if sys.version_info < (3, 11):  # pragma: no cover - the builtin from 3.11 on
    from exceptiongroup import BaseExceptionGroup

__all__ = ["JOURNAL_NAME", "Opened", "open_journal", "read_redis_journal"]

JOURNAL_NAME = ".sora2-journal.sqlite"
JOURNAL_ID = "journal_id"
_NOTHING_SENT = "Nothing was sent"


@attrs.frozen
class Opened:
    """The batch's journal, open, and how messages name it."""

    journal: Journal
    where: str


def _mismatch(message: str) -> JournalMismatchError:
    return JournalMismatchError(f"{message}. {_NOTHING_SENT}", code=2)


def redis_where(name: str, url: str) -> str:
    """How messages name a journal in Redis (never with a password)."""
    return f"{name!r} in Redis at {redact(url)}"


def _choose_redis(options: BatchOptions, record: FolderRecord | None, sqlite: Path) -> str:
    """The batch's name in Redis (checked against the folder's record)."""
    out = options.out_dir
    if options.journal_path is not None:
        if record is not None:
            raise _mismatch(
                f"{out} keeps its journal in Redis ({record.name!r}, see {out / RECORD}), "
                "not in --journal PATH: drop --journal"
            )
        if options.batch_name is not None:
            raise CLIError("--batch-name names a journal in Redis: it cannot go with --journal")
        return ""  # an explicit SQLite journal, with the budget in Redis
    if record is None and sqlite.exists():
        raise _mismatch(
            f"{out} keeps its journal in the SQLite file {sqlite}, made without --redis: "
            f"pass --journal {sqlite} to keep it (the budget stays in Redis), or run without "
            "--redis (and without $NANOPHOTO_REDIS_URL)"
        )
    if record is None:
        if tasks := manifest_tasks(out):
            raise _mismatch(
                f"{out / 'manifest.jsonl'} lists {len(tasks)} task(s) but {out} has no "
                f"journal ({JOURNAL_NAME} nor {RECORD}): restore it, or use another --out "
                "folder"
            )
        return options.batch_name or ""
    if options.batch_name is not None and options.batch_name != record.name:
        raise _mismatch(
            f"{out} belongs to the batch {record.name!r} (see {out / RECORD}), not "
            f"--batch-name {options.batch_name!r}: drop --batch-name, or use another --out"
        )
    if options.key_fingerprint is not None and options.key_fingerprint != record.key_fingerprint:
        raise _mismatch(
            f"{out}'s journal was made with another API key (or base URL): its tasks belong "
            "to that key. Set NANOPHOTO_API_KEY (and --base-url) as for that run, or use "
            "another --out folder"
        )
    return record.name


@asynccontextmanager
async def open_journal(
    options: BatchOptions, requests: Sequence[VideoRequest]
) -> AsyncIterator[Opened]:
    """The journal ``options`` name, checked against the folder, open for the run.

    Raises:
        JournalMismatchError: the folder's journal is another one (nothing was sent).
        CLIError: the journal cannot be used (nothing was sent).
        JournalError: it cannot be read or written.
    """
    out = options.out_dir
    sqlite = options.journal_path or out / JOURNAL_NAME
    record = read_record(out)
    if options.batch_name is not None:
        check_name(options.batch_name)
    if not options.redis_url:
        if record is not None:
            raise _mismatch(
                f"{out} keeps its journal in Redis ({record.name!r} at {record.redis}, see "
                f"{out / RECORD}): pass --redis URL or set $NANOPHOTO_REDIS_URL"
            )
        if options.batch_name is not None:
            raise CLIError("--batch-name names a journal in Redis: it needs --redis URL")
    name = _choose_redis(options, record, sqlite) if options.redis_url else ""
    if not options.redis_url or options.journal_path is not None:
        check_before_opening(out, sqlite)
        async with SQLiteJournal(sqlite) as journal:
            check_against_journal(out, sqlite, await journal.entries())
            if options.key_fingerprint is not None:
                await check_journal_key(journal, options.key_fingerprint)
            yield Opened(journal, str(sqlite))
        return
    assert options.key_fingerprint is not None  # the batch command always has a key
    name = name or default_name(requests)
    url = options.redis_url
    where = redis_where(name, url)
    async with _redis_journal(url, name, options.key_fingerprint, options.follower_ttl) as journal:
        if record is not None:
            found = await journal.meta(JOURNAL_ID)
            if found != record.journal_id:
                why = "another journal took its name"
                if found is None:
                    why = "it is not there: its data was lost, or this is another server"
                raise _mismatch(
                    f"the journal {where} is not {out}'s ({why}): a run would pay again for what "
                    "the folder has. Pass the --redis URL the folder's runs used, or use "
                    "another --out folder"
                )
        else:
            journal_id = await journal.init_meta(JOURNAL_ID, uuid.uuid4().hex)
            record = FolderRecord(name, options.key_fingerprint, redact(url), journal_id)
            write_record(out, record)  # before anything is sent: a later run finds it
        check_against_journal(out, where, await journal.entries())
        yield Opened(journal, where)


@asynccontextmanager
async def _redis_journal(
    url: str, name: str, namespace: str, follower_ttl: float, **knobs: Any
) -> AsyncIterator[Any]:
    """A :class:`~sora2_async.redis.RedisJournal`, entered (the ``redis`` extra needed)."""
    try:
        from ..redis import RedisJournal
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    try:
        journal = RedisJournal.from_url(
            url, name=name, namespace=namespace, follower_ttl=follower_ttl, **knobs
        )
    except ValueError as exc:  # a URL coredis cannot read
        raise CLIError(f"--redis {redact(url)}: {exc}") from None
    try:
        async with journal:
            yield journal
    except BaseExceptionGroup as group:  # coredis's task group wrapped it: raise it as itself
        sole = sole_exception(group)
        if sole is None:
            raise
        raise sole from None


async def read_redis_journal(
    folder: Path, record: FolderRecord, url: str | None
) -> dict[str, JournalEntry]:
    """The entries of ``folder``'s journal in Redis (read only, for ``sora2 status DIR``), at
    ``url`` or else where the folder recorded it.

    Raises:
        CLIError: Redis is unreachable (after a few seconds), refuses, or does not hold the
            folder's journal.
    """
    from .._journal import JournalError

    url = url or record.redis
    where = redis_where(record.name, url)
    try:
        async with _redis_journal(
            url, record.name, record.key_fingerprint, 60.0, unreachable_timeout=3.0
        ) as journal:
            found = await journal.meta(JOURNAL_ID)
            if found != record.journal_id:
                raise CLIError(
                    f"the journal {where} is not {folder}'s (its data was lost, or this is "
                    "another server): pass the --redis URL the folder's runs used"
                )
            entries: list[JournalEntry] = await journal.entries()
    except JournalError as exc:
        raise CLIError(
            f"cannot read {folder}'s journal: {exc} (pass --redis URL, with its password, "
            "or set $NANOPHOTO_REDIS_URL)"
        ) from None
    return {entry.key: entry for entry in entries}
