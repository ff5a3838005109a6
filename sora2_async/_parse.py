"""Turning the API's JSON answers into typed results.

Unknown fields are ignored. What identifies a task and its video (``taskId``, ``status``, a
completed task's ``videoUrl``) is checked strictly: a missing or bad one raises
:class:`ResponseValidationError` naming it. The optional fields are read leniently: a value of
the wrong type is logged and left out, never a reason to lose a paid video. Nothing here
raises ``KeyError`` or ``TypeError`` on any JSON value.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import urllib.parse
from collections.abc import Mapping
from typing import Any

from ._errors import ResponseValidationError
from ._models import TaskState, TaskStatus

__all__ = ["decode_json_object", "parse_status", "parse_task_id"]

logger = logging.getLogger("sora2_async")


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
            f"the response's {field!r} is {_shown(value)}, not a non-empty string", field=field
        )
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _lenient(task_id: str, field: str, value: Any, expected: str) -> None:
    # An optional field the contract types otherwise: the status is still good (a paid
    # video must not be lost over a "2 min"), and the raw value stays in ``TaskStatus.raw``.
    logger.warning(
        "task %s: the status's %r is %s, not %s; ignored (kept in TaskStatus.raw)",
        task_id,
        field,
        _shown(value),
        expected,
    )


def _optional_text(body: Mapping[str, Any], field: str, task_id: str) -> str | None:
    value = body.get(field)
    if value is None or isinstance(value, str):
        return value
    # progress: 100 is as readable as "100"; a list or an object is not text at all.
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    text = str(value) if number else None
    _lenient(task_id, field, value, "a string" if text is None else f"a string (read as {text!r})")
    return text


def _number(body: Mapping[str, Any], field: str, task_id: str) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    number = value
    if isinstance(number, str):  # lenient: "120" is as clear as 120
        with contextlib.suppress(ValueError):
            number = float(number)
    if isinstance(number, int) and not isinstance(number, bool):
        with contextlib.suppress(OverflowError):  # JSON ints can be too large for a float
            number = float(number)
    if not isinstance(number, float) or not math.isfinite(number) or number < 0:
        _lenient(task_id, field, value, "a number of at least 0")
        return None
    return number


def _credits(body: Mapping[str, Any], task_id: str) -> int | None:
    number = _number(body, "creditsUsed", task_id)
    if number is None:
        return None
    if not number.is_integer():
        _lenient(task_id, "creditsUsed", body.get("creditsUsed"), "a whole number")
        return None
    return int(number)


def _video_url(body: Mapping[str, Any]) -> str:
    url = _string(body, "videoUrl", required=True)
    assert url is not None
    try:
        parsed = urllib.parse.urlsplit(url)
        host = parsed.hostname
    except ValueError:  # a broken IPv6 literal
        host, parsed = None, None
    if (
        parsed is None
        or parsed.scheme.lower() not in ("http", "https")
        or not host
        or any(c.isspace() or not c.isprintable() for c in url)
    ):
        # Relative, file:, javascript:, data: ... none is a video to fetch: the task is not
        # taken as completed (it stays followable), rather than journaled with a bad URL.
        raise ResponseValidationError(
            f"the response's 'videoUrl' is {_shown(url)}, not an absolute http(s) URL",
            field="videoUrl",
        )
    return url


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

    Strict about what identifies the video, lenient about the rest: an optional field of
    the wrong type (``progress: 100``, ``generationTime: "2 min"``, ``creditsUsed: "4
    credits"``, ``error: {}`` on a completed task) is read as best it can be or left out,
    with a WARNING log line; the whole answer stays in :attr:`TaskStatus.raw`.

    Raises:
        ResponseValidationError: when ``status`` is missing or unknown; ``taskId`` is
            missing (and none was asked about), not a non-empty string, or another task's;
            or a completed status has no absolute http(s) ``videoUrl``.
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
    if task_id is not None and answered_id is not None and answered_id != task_id:
        raise ResponseValidationError(
            f"the response's 'taskId' is {answered_id!r}, not the task asked about, {task_id!r}",
            field="taskId",
        )
    the_id = answered_id or task_id or ""
    completed = state is TaskState.COMPLETED
    video_url = _video_url(body) if completed else None
    if completed:
        # A completed task has no error: whatever sits beside its video is noise.
        if body.get("error") not in (None, ""):
            _lenient(the_id, "error", body["error"], "absent on a completed task")
        error = None
    else:
        error = _optional_text(body, "error", the_id)
    return TaskStatus(
        task_id=the_id,
        state=state,
        progress=_optional_text(body, "progress", the_id),
        video_url=video_url,
        generation_time=_number(body, "generationTime", the_id),
        credits_used=_credits(body, the_id),
        error=error,
        error_code=_optional_text(body, "errorCode", the_id),
        message=_optional_text(body, "message", the_id),
        raw=dict(body),
    )
