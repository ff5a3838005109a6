"""The output folder's own checks, before a batch spends anything, and its leftovers.

A folder's journal says what was paid for. Before a run: a journal that is wiped (0 bytes) or
not a file is refused, and so is a folder whose ``manifest.jsonl`` names tasks its journal
does not know (a journal restored from an older copy, or deleted): either way a run would
submit, and pay for, videos the folder already has. The refusal says what to do; nothing is
sent and nothing overwritten. Part files of downloads a killed run left behind are removed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from .._journal import JournalEntry, SQLiteJournal
from .errors import CLIError
from .plan import MANIFEST

__all__ = [
    "KEY_FINGERPRINT",
    "check_against_journal",
    "check_before_opening",
    "check_journal_key",
    "remove_part_files",
]

#: The journal's record of the key it was made with: a fingerprint (SHA-256), never the key.
KEY_FINGERPRINT = "key_fingerprint"

# ``.{video}.{12 hex}.part`` (the SDK's download) and ``.manifest.*.part`` (write_manifest).
_PART = re.compile(r"^\.(?:.+\.[0-9a-f]{12}|manifest\..+)\.part$")

_WHAT_TO_DO = (
    "Nothing was sent and nothing overwritten. Restore the journal from a backup, or, to "
    "start afresh on purpose, use another --out folder"
)


def _refuse(message: str) -> CLIError:
    return CLIError(f"{message}. {_WHAT_TO_DO}", code=2)


def check_before_opening(out_dir: Path, journal: Path) -> None:
    """Refuse a journal that is not a file, or is empty, or missing beside a manifest.

    Raises:
        CLIError: saying what is wrong and what to do (nothing was sent).
    """
    if journal.is_dir():
        raise _refuse(f"the journal {journal} is a folder, not a file")
    if journal.exists() and not journal.is_file():
        raise _refuse(f"the journal {journal} is not a regular file")
    if journal.is_file() and journal.stat().st_size == 0:
        raise _refuse(
            f"the journal {journal} is empty (0 bytes): it was wiped, so the folder's "
            "record of what was paid for is gone"
        )
    if not journal.exists():
        tasks = manifest_tasks(out_dir)
        if tasks:
            raise _refuse(
                f"{out_dir / MANIFEST} lists {len(tasks)} task(s) but the journal {journal} "
                "is missing"
            )


def check_against_journal(
    out_dir: Path, journal: Path | str, entries: Iterable[JournalEntry]
) -> None:
    """Refuse a folder whose manifest names tasks the journal does not know.

    Raises:
        CLIError: saying what is wrong and what to do (nothing was sent).
    """
    known = {entry.task_id for entry in entries if entry.task_id}
    strangers = sorted(manifest_tasks(out_dir) - known)
    if strangers:
        shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
        raise _refuse(
            f"{out_dir / MANIFEST} lists {len(strangers)} task(s) the journal {journal} does "
            f"not know ({shown}): the journal is not this folder's, or an older copy"
        )


async def check_journal_key(journal: SQLiteJournal, fingerprint: str) -> None:
    """Refuse a journal made with another key (or base URL); record the key of a new one.

    Its tasks belong to the key that made them: followed with another, each would end in
    TASK_NOT_FOUND, and its uncertain requests could not be judged.

    Raises:
        CLIError: saying so (nothing was sent).
    """
    stored = await journal.meta(KEY_FINGERPRINT)
    if stored is None:
        await journal.set_meta(KEY_FINGERPRINT, fingerprint)
    elif stored != fingerprint:
        raise CLIError(
            f"the journal {journal.path} was made with another API key (or base URL): its "
            "tasks belong to that key, and this one would be told TASK_NOT_FOUND for each. "
            "Nothing was sent. Set NANOPHOTO_API_KEY (and --base-url) as for that run, or "
            "use another --out folder",
            code=2,
        )


def manifest_tasks(out_dir: Path) -> set[str]:
    """The task ids ``manifest.jsonl`` names (none when it is absent).

    Raises:
        CLIError: the manifest is there but unreadable (it is written atomically: a bad
            one was not written by ``sora2``).
    """
    path = out_dir / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError) as exc:
        raise _refuse(f"cannot read {path}: {exc}") from None
    tasks = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise _refuse(f"{path} line {number} is not JSON") from None
        task_id = row.get("task_id") if isinstance(row, dict) else None
        if isinstance(task_id, str) and task_id:
            tasks.add(task_id)
    return tasks


def remove_part_files(out_dir: Path) -> int:
    """Remove the part files a killed run left in ``out_dir``; return how many."""
    removed = 0
    for path in out_dir.glob(".*.part"):
        if _PART.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
