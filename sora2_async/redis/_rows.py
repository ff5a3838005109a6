"""The rows of ``RedisJournal``: an entry as the JSON text ``journal.lua`` keeps, and back.

One row per entry, the columns of :mod:`sora2_async._journal_codec` (one list of an entry's
fields for every journal), numbers as strings so that the script rounds nothing, plus the
script's own ``seq`` (the order the entries were first recorded in) and ``created_at``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .._journal import JournalEntry, JournalError, JournalState
from .._journal_codec import COLUMNS, entry_from_row, request_text
from .._models import VideoRequest
from ._limiter import _text

__all__ = ["decode_row", "entry_of", "row_text"]


def _number(value: float | int | None) -> str | None:
    """A number as the row keeps it: a string, so that the script rounds nothing."""
    return None if value is None else repr(value)


def row_text(request: VideoRequest | None, state: JournalState, fields: Mapping[str, Any]) -> str:
    """The row of a write: ``request`` (``None``: the script keeps the entry's), ``state``
    and the entry's other fields (those not given are null)."""
    row: dict[str, Any] = {
        "request": None if request is None else request_text(request),
        "state": state.value,
        "task_id": None,
        "video_url": None,
        "error": None,
        "error_code": None,
        **fields,
        "updated_at": _number(time.time()),
    }
    row["generation_time"] = _number(fields.get("generation_time"))
    row["credits_used"] = _number(fields.get("credits_used"))
    return json.dumps(row, separators=(",", ":"))


def _unreadable(name: str, exc: Exception) -> JournalError:
    return JournalError(f"the Redis journal {name!r} holds a row it cannot read ({exc!r})")


def decode_row(text: Any, name: str) -> dict[str, Any]:
    """A stored row (bytes or text) as a dict with its ``seq``.

    Raises:
        JournalError: it is not a row this SDK wrote (``name`` is the journal's, for it).
    """
    try:
        row = json.loads(_text(text))
        if not isinstance(row, dict):
            raise TypeError(f"a {type(row).__name__}, not an object")
        int(row["seq"])
        return row
    except (ValueError, KeyError, TypeError) as exc:
        raise _unreadable(name, exc) from None


def entry_of(row: Mapping[str, Any], name: str) -> JournalEntry:
    """The entry a decoded row holds.

    Raises:
        JournalError: as :func:`decode_row`.
    """
    try:
        return entry_from_row([row.get(column) for column in COLUMNS])
    except (ValueError, KeyError, TypeError) as exc:
        raise _unreadable(name, exc) from None
