"""What a batch run will do, from the journal, before anything is spent; and the manifest after.

:func:`make_plan` sorts the input's requests by what the journal knows of them (to send,
running, ended, uncertain) and prices what is to be sent. :func:`write_manifest` lists every
request of the input with its task, status, file and credits in ``manifest.jsonl``, written
atomically (a temporary file renamed over the old one).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .._journal import Journal, JournalEntry, JournalState, RequestKeys
from .._models import VideoRequest
from .inputs import Line

__all__ = ["Item", "Plan", "make_plan", "manifest_status", "video_filename", "write_manifest"]

MANIFEST = "manifest.jsonl"

# The manifest's word for each journal state (``not_submitted`` when there is no entry).
_STATUS = {
    JournalState.INTENT: "uncertain",
    JournalState.SUBMITTED: "in_flight",
    JournalState.COMPLETED: "completed",
    JournalState.FAILED: "failed",
    JournalState.REJECTED: "rejected",
}


def manifest_status(entry: JournalEntry | None) -> str:
    """``completed``, ``failed``, ``uncertain``, ``in_flight``, ``rejected`` or
    ``not_submitted``."""
    return "not_submitted" if entry is None else _STATUS[entry.state]


def video_filename(request: VideoRequest, task_id: str) -> str:
    """The file a video is saved as: a slug of its prompt, then its task id (unique)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.prompt.lower()).strip("-")[:40].rstrip("-")
    safe_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", task_id)
    return f"{slug or 'video'}-{safe_id}.mp4"


@attrs.frozen
class Item:
    """One request of the input, its journal key, and what the journal knew at the start."""

    line: Line
    key: str
    entry: JournalEntry | None


@attrs.frozen
class Plan:
    """The input sorted by what each request needs."""

    items: Sequence[Item]
    resubmit_uncertain: bool

    def _where(self, *states: JournalState | None) -> list[Item]:
        return [i for i in self.items if (i.entry.state if i.entry else None) in states]

    @property
    def to_send(self) -> list[Item]:
        """Never sent, or refused before (and uncertain ones, when they are to be re-sent)."""
        states: tuple[JournalState | None, ...] = (None, JournalState.REJECTED)
        if self.resubmit_uncertain:
            states += (JournalState.INTENT,)
        return self._where(*states)

    @property
    def running(self) -> list[Item]:
        """Accepted earlier and not known to have ended: followed by task id."""
        return self._where(JournalState.SUBMITTED)

    @property
    def ended(self) -> list[Item]:
        """Completed or failed in an earlier run."""
        return self._where(JournalState.COMPLETED, JournalState.FAILED)

    @property
    def uncertain(self) -> list[Item]:
        """Sent earlier without an answer, and not to be re-sent."""
        return [] if self.resubmit_uncertain else self._where(JournalState.INTENT)

    @property
    def credits(self) -> int:
        """What the requests to send cost, at list price."""
        return sum(item.line.request.credits for item in self.to_send)


async def make_plan(journal: Journal, lines: Sequence[Line], *, resubmit_uncertain: bool) -> Plan:
    """Look every line up in ``journal`` (with the keys the batch will use)."""
    known = {entry.key: entry for entry in await journal.entries()}  # one read, not one a line
    keys = RequestKeys()
    items = []
    for line in lines:
        key = keys.next(line.request)
        items.append(Item(line, key, known.get(key)))
    return Plan(items, resubmit_uncertain)


def _credits(entry: JournalEntry | None, request: VideoRequest) -> int:
    if entry is None or entry.state is JournalState.REJECTED:
        return 0
    if entry.credits_used is not None:
        return entry.credits_used
    # Failed tasks are refunded; the others are (or may be) charged at list price.
    return 0 if entry.state is JournalState.FAILED else request.credits


def write_manifest(
    out_dir: Path,
    plan: Plan,
    entries: Mapping[str, JournalEntry],
    files: Mapping[str, Path],
    errors: Mapping[str, str],
    unsent: Mapping[VideoRequest, str],
) -> Path:
    """Write ``out_dir/manifest.jsonl``: one line per input request, in input order.

    ``entries`` are the journal's entries by key (as they are now), ``files`` the saved
    videos by task id, ``errors`` what went wrong this run by task id, and ``unsent`` why a
    request got no task this run.
    """
    rows: list[dict[str, Any]] = []
    for item in plan.items:
        entry = entries.get(item.key)
        request = item.line.request
        task_id = entry.task_id if entry else None
        file = files.get(task_id) if task_id else None
        row: dict[str, Any] = {
            "line": item.line.number,
            "prompt": request.prompt,
            "request": request.to_wire(),
            "key": item.key,
            "task_id": task_id,
            "status": manifest_status(entry),
            "file": str(file) if file else None,
            "credits": _credits(entry, request),
            "video_url": entry.video_url if entry else None,
        }
        error = errors.get(task_id) if task_id else unsent.get(request)
        error = error or (entry.error if entry else None)
        if error:
            row["error"] = error
        rows.append(row)
    target = out_dir / MANIFEST
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".part", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
