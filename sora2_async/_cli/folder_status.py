"""``sora2 status DIR``: what a batch folder holds, read offline — no key, no request.

The journal (opened read-only: a run may be going on) says where each request got to; the
manifest lists the input of the last run, line by line, so requests that were never sent are
known too. From both: the counts by state, the credits spent or committed, the uncertain
submissions, and what running ``sora2 batch`` again on the same input would send.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import attrs

from .._client import API_KEY_ENV
from .._journal import _COLUMNS, JournalEntry, JournalState
from .._journal_codec import entry_from_row
from .._journal_db import read_meta
from .errors import CLIError
from .folder import KEY_FINGERPRINT
from .plan import MANIFEST, manifest_status

__all__ = ["FolderStatus", "key_matches", "read_folder", "render"]

JOURNAL_NAME = ".sora2-journal.sqlite"
_ORDER = ("completed", "failed", "in_flight", "uncertain", "rejected", "not_submitted")


@attrs.frozen
class Row:
    """One request of the folder: its input line (if the manifest has it) and its state."""

    line: int | None
    prompt: str
    status: str
    credits: int  #: spent or committed (list price until the API says)
    list_price: int


@attrs.frozen
class FolderStatus:
    """What ``sora2 status DIR`` shows."""

    folder: Path
    rows: list[Row]
    key_fingerprint: str | None  #: the journal's record of its key (never the key)

    def count(self, status: str) -> int:
        """Requests in ``status`` (a manifest word)."""
        return sum(1 for row in self.rows if row.status == status)

    def to_json(self, key_matches: bool | None) -> dict[str, Any]:
        """The JSON form (``--json``)."""
        send = [r for r in self.rows if r.status in ("not_submitted", "rejected")]
        uncertain = [r for r in self.rows if r.status == "uncertain"]
        return {
            "folder": str(self.folder),
            "requests": len(self.rows),
            "counts": {word: self.count(word) for word in _ORDER},
            "credits": sum(r.credits for r in self.rows),
            "uncertain": [{"line": r.line, "prompt": r.prompt} for r in uncertain],
            "resume": {
                "send": len(send),
                "send_credits": sum(r.list_price for r in send),
                "follow": self.count("in_flight"),
                "uncertain_not_sent": len(uncertain),
            },
            "key_recorded": self.key_fingerprint is not None,
            "key_matches": key_matches,
        }


def read_folder(
    folder: Path, *, journal: tuple[dict[str, JournalEntry], str | None] | None = None
) -> FolderStatus:
    """Read ``folder``'s journal and manifest (read-only); ``journal``: its entries and key
    fingerprint when they were read elsewhere (in Redis), instead of its SQLite file.

    Raises:
        CLIError: the folder has neither, or one is unreadable.
    """
    path = folder / JOURNAL_NAME
    manifest = folder / MANIFEST
    if journal is None and not path.is_file() and not manifest.is_file():
        raise CLIError(f"{folder} is not a batch folder: it has no {JOURNAL_NAME} nor {MANIFEST}")
    if journal is None:
        journal = _read_journal(path) if path.is_file() else ({}, None)
    entries, fingerprint = journal
    rows: list[Row] = []
    seen: set[str] = set()
    for row in _read_manifest(manifest):
        key = row.get("key")
        entry = entries.get(key) if isinstance(key, str) else None
        if isinstance(key, str):
            seen.add(key)
        line = row.get("line") if isinstance(row.get("line"), int) else None
        prompt = str(row.get("prompt", ""))
        if entry is not None:
            rows.append(_row(line, entry))
        else:
            status = str(row.get("status", "not_submitted"))
            credits = row.get("credits") if isinstance(row.get("credits"), int) else 0
            price = _price(row.get("request"))
            rows.append(Row(line, prompt, status, int(credits or 0), price))
    rows += [_row(None, entry) for key, entry in entries.items() if key not in seen]
    return FolderStatus(folder, rows, fingerprint)


def _row(line: int | None, entry: JournalEntry) -> Row:
    status = manifest_status(entry)
    price = entry.request.credits
    if entry.state is JournalState.REJECTED or entry.state is JournalState.FAILED:
        credits = entry.credits_used or 0
    else:
        credits = entry.credits_used if entry.credits_used is not None else price
    return Row(line, entry.request.prompt, status, credits, price)


def _price(wire: object) -> int:
    from .._models import VideoRequest

    if not isinstance(wire, dict):
        return 0
    try:
        request = VideoRequest(
            str(wire.get("prompt", "")),
            model_tier=wire.get("modelTier", "sora2"),
            duration=wire.get("videoDuration", 10),
            image_urls=tuple(wire.get("imageUrls", ())),
            mode=wire.get("mode"),
        )
    except ValueError:
        return 0
    return request.credits


def _read_journal(path: Path) -> tuple[dict[str, JournalEntry], str | None]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CLIError(f"cannot read the journal {path}: {exc}") from None
    try:
        rows = db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY created_at, rowid")
        entries = {entry.key: entry for entry in map(entry_from_row, rows)}
        try:
            fingerprint = read_meta(db, KEY_FINGERPRINT)
        except sqlite3.OperationalError:  # a journal from before keys were recorded
            fingerprint = None
    except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"the journal {path} cannot be read: {exc}") from None
    finally:
        db.close()
    return entries, fingerprint


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read {path}: {exc}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise CLIError(f"{path} line {number} is not JSON") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def key_matches(status: FolderStatus, fingerprint: str | None) -> bool | None:
    """Whether the journal was made with the key at hand (``None``: cannot tell)."""
    if status.key_fingerprint is None or fingerprint is None:
        return None
    return status.key_fingerprint == fingerprint


def render(status: FolderStatus, matches: bool | None) -> str:
    """The text form: a few lines, each under 80 columns where the prompts allow."""
    counts = " · ".join(f"{w.replace('_', ' ')} {status.count(w)}" for w in _ORDER)
    out = [f"{status.folder}: {len(status.rows)} request(s)", f"  {counts}"]
    out.append(f"  credits spent or committed: {sum(r.credits for r in status.rows)}")
    uncertain = [r for r in status.rows if r.status == "uncertain"]
    for row in uncertain[:10]:
        where = f"line {row.line}" if row.line is not None else "a request"
        out.append(f"  uncertain: {where}, {row.prompt[:50]!r} (may exist and be charged)")
    send = [r for r in status.rows if r.status in ("not_submitted", "rejected")]
    ended = status.count("completed") + status.count("failed")
    out.append(
        f"  a resume would send {len(send)} ({sum(r.list_price for r in send)} credits), "
        f"follow {status.count('in_flight')} by task id, skip {ended} ended"
        + (
            f", and send {len(uncertain)} uncertain only with --resubmit-uncertain"
            if uncertain
            else ""
        )
    )
    if matches is not None or status.key_fingerprint is None:
        out.append(
            "  key: "
            + {
                True: f"made with this {API_KEY_ENV}",
                False: f"made with another key than this {API_KEY_ENV}: a resume is refused",
                None: "no key recorded in the journal yet",
            }[matches if status.key_fingerprint is not None else None]
        )
    return "\n".join(out)
