"""Turning the API's JSON answers into typed results.

Unknown fields are ignored; a missing or mistyped required field raises
:class:`ResponseValidationError` naming it. Nothing here raises ``KeyError`` or ``TypeError``
on any JSON value.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from typing import Any

from ._errors import ResponseValidationError
from ._models import TaskState, TaskStatus

__all__ = ["decode_json_object", "parse_status", "parse_task_id"]


def decode_json_object(content: bytes, *, content_type: str | None = None) -> dict[str, Any]:
    """Decode a response body that must be a JSON object.

    Raises:
        ResponseValidationError: when the body is not JSON (an HTML error page, say) or is
            JSON but not an object.
    """
    try:
        value = json.loads(content)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        kind = f" ({content_type})" if content_type else ""
        snippet = content[:80].decode("utf-8", "replace")
        raise ResponseValidationError(
            f"the response body{kind} is not JSON: {snippet!r}", field="<body>"
        ) from None
    if not isinstance(value, dict):
        raise ResponseValidationError(
            f"the response body is JSON {type(value).__name__}, not an object", field="<body>"
        )
    return value


def _string(body: Mapping[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise ResponseValidationError(f"the response has no {field!r}", field=field)
        return None
    if not isinstance(value, str) or (required and not value):
        raise ResponseValidationError(
            f"the response's {field!r} is {value!r}, not a non-empty string", field=field
        )
    return value


def _number(body: Mapping[str, Any], field: str) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, str):  # lenient: "120" is as clear as 120
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # JSON ints can be too large for a float
            value = float(value)
    if not isinstance(value, float) or not math.isfinite(value):
        raise ResponseValidationError(
            f"the response's {field!r} is {value!r}, not a number", field=field
        )
    return float(value)


def parse_task_id(body: Mapping[str, Any]) -> str:
    """The ``taskId`` of an accepted ``generate`` answer.

    Raises:
        ResponseValidationError: when ``taskId`` is missing or not a non-empty string.
    """
    task_id = _string(body, "taskId", required=True)
    assert task_id is not None
    return task_id


def parse_status(body: Mapping[str, Any], *, task_id: str | None = None) -> TaskStatus:
    """A :class:`TaskStatus` from a ``check-status`` answer (or a failed task's 500 body).

    ``task_id`` is the id that was asked about; it fills in when the body omits ``taskId``.

    Raises:
        ResponseValidationError: when ``status`` is missing or unknown, a completed status has
            no ``videoUrl``, or a field has the wrong type.
    """
    raw_state = _string(body, "status", required=True)
    try:
        state = TaskState(raw_state)
    except ValueError:
        raise ResponseValidationError(
            f"the response's 'status' is {raw_state!r}, not one of processing, completed, failed",
            field="status",
        ) from None
    answered_id = _string(body, "taskId", required=task_id is None)
    video_url = _string(body, "videoUrl", required=state is TaskState.COMPLETED)
    credits = _number(body, "creditsUsed")
    return TaskStatus(
        task_id=answered_id or task_id or "",
        state=state,
        progress=_string(body, "progress", required=False),
        video_url=video_url,
        generation_time=_number(body, "generationTime"),
        credits_used=None if credits is None else int(credits),
        error=_string(body, "error", required=False),
        error_code=_string(body, "errorCode", required=False),
        message=_string(body, "message", required=False),
    )
