"""How a journal entry is written down, for every journal store (SQLite columns, Redis JSON).

One encoding: a request is the JSON of its wire body (``request_text``), and an entry is the
row :data:`COLUMNS` names, read back by :func:`entry_from_row`. What a terminal status
records is :func:`status_fields`, so that every store keeps the same fields of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._models import TaskState, TaskStatus, VideoRequest

if TYPE_CHECKING:
    from ._journal import JournalEntry

__all__ = ["COLUMNS", "entry_from_row", "request_from_text", "request_text", "status_fields"]

#: The fields of an entry, in the order :func:`entry_from_row` reads them.
COLUMNS = (
    "key",
    "request",
    "state",
    "task_id",
    "video_url",
    "generation_time",
    "credits_used",
    "error",
    "error_code",
    "updated_at",
)


def request_text(request: VideoRequest) -> str:
    """``request`` as the journal stores it: the JSON of its wire body, keys sorted."""
    return json.dumps(request.to_wire(), sort_keys=True)


def request_from_text(text: str) -> VideoRequest:
    """The request :func:`request_text` wrote.

    Raises:
        ValueError, KeyError, TypeError: ``text`` is no request this SDK wrote.
    """
    wire = json.loads(text)
    return VideoRequest(
        wire["prompt"],
        mode=wire["mode"],
        model_tier=wire["modelTier"],
        aspect_ratio=wire["aspectRatio"],
        duration=wire["videoDuration"],
        image_urls=tuple(wire.get("imageUrls", ())),
    )


def status_fields(status: TaskStatus) -> tuple[str, dict[str, Any]]:
    """The state (``completed`` or ``failed``) and the fields a terminal ``status`` records.

    A failure without a message records ``"video generation failed"``.
    """
    completed = status.state is TaskState.COMPLETED
    return ("completed" if completed else "failed"), {
        "task_id": status.task_id,
        "video_url": status.video_url,
        "generation_time": status.generation_time,
        "credits_used": status.credits_used,
        "error": None if completed else (status.error or "video generation failed"),
        "error_code": None if completed else status.error_code,
    }


def entry_from_row(row: Sequence[Any]) -> JournalEntry:
    """The :class:`JournalEntry` of a row of :data:`COLUMNS`.

    Raises:
        ValueError, KeyError, TypeError: a row no journal of this SDK writes.
    """
    from ._journal import JournalEntry, JournalState  # late: _journal imports this module

    key, request, state, task_id, url, gen_time, credits, error, code, updated = row
    return JournalEntry(
        key=str(key),
        request=request_from_text(str(request)),
        state=JournalState(state),
        task_id=None if task_id is None else str(task_id),
        video_url=None if url is None else str(url),
        generation_time=None if gen_time is None else float(gen_time),
        credits_used=None if credits is None else int(credits),
        error=None if error is None else str(error),
        error_code=None if code is None else str(code),
        updated_at=float(updated),
    )
