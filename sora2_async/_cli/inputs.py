"""Reading a batch's PROMPTS file: JSONL (one request a line) or plain text (one prompt a line).

Every line is checked before anything is spent: :func:`read_requests` returns all requests or
raises :class:`InputError` naming each bad line (its number and what is wrong). JSONL fields
may use the SDK's names (``model_tier``) or the wire's (``modelTier``), not both at once.
Blank lines and lines starting with ``#`` are skipped in either format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import InvalidRequestError
from .._models import VideoRequest

__all__ = ["FIELDS", "InputError", "Line", "decode", "parse_lines", "read_requests"]

#: Accepted JSONL field names: each Python name, and its wire name.
FIELDS: Mapping[str, str] = {
    "prompt": "prompt",
    "mode": "mode",
    "model_tier": "model_tier",
    "modelTier": "model_tier",
    "aspect_ratio": "aspect_ratio",
    "aspectRatio": "aspect_ratio",
    "duration": "duration",
    "videoDuration": "duration",
    "image_urls": "image_urls",
    "imageUrls": "image_urls",
}

_MAX_SHOWN = 10  # bad lines listed before "and N more"
_log = logging.getLogger("sora2_async.cli")


@attrs.frozen
class Line:
    """One request of the input, and the line it came from (1-based)."""

    number: int
    request: VideoRequest


class InputError(ValueError):
    """Some lines of the input are bad; ``problems`` holds ``(line number, what is wrong)``."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.source = source
        self.problems = problems
        shown = [f"{source}:{number}: {what}" for number, what in problems[:_MAX_SHOWN]]
        if len(problems) > _MAX_SHOWN:
            shown.append(f"... and {len(problems) - _MAX_SHOWN} more bad lines")
        super().__init__("\n".join(shown))


def read_requests(path: str | Path) -> list[Line]:
    """Every request of the file at ``path``.

    Raises:
        InputError: when any line is bad, or the file holds no request.
        OSError: when the file cannot be read.
    """
    source = str(path)
    text = decode(Path(path).read_bytes(), source)
    jsonl = _looks_like_jsonl(path, text)
    lines = parse_lines(text.splitlines(), source=source, jsonl=jsonl)
    if not jsonl:
        _warn_about_json(lines, source)
    return lines


def decode(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text (a BOM is dropped).

    Raises:
        InputError: naming the first line that is not UTF-8 (or a file that is not text).
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        what = "a binary file, not text" if b"\0" in data[:4096] else "not UTF-8"
        raise InputError(
            source,
            [
                (
                    number,
                    f"{what} (byte 0x{data[exc.start]:02x} at column {column}): save the file "
                    "as UTF-8, one prompt a line or JSONL",
                )
            ],
        ) from None


def _warn_about_json(lines: list[Line], source: str) -> None:
    # A plain-text file's line is a prompt, whole: a JSON object there is a slip (a .jsonl
    # file saved as .txt, say) that would be sent as the words of a prompt.
    suspects = [line.number for line in lines if _is_json_object(line.request.prompt)]
    if suspects:
        shown = ", ".join(str(n) for n in suspects[:10]) + (", ..." if len(suspects) > 10 else "")
        _log.warning(
            "%s: line(s) %s look like JSON, but the file is read as plain text (one prompt a "
            "line), so each whole line would be a prompt; name it .jsonl to read it as JSONL",
            source,
            shown,
        )


def _is_json_object(text: str) -> bool:
    if not (text.startswith("{") and text.endswith("}")):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _looks_like_jsonl(path: str | Path, text: str) -> bool:
    if str(path).endswith((".jsonl", ".ndjson")):
        return True
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped.startswith("{")
    return False


def parse_lines(lines: Iterable[str], *, source: str = "<input>", jsonl: bool) -> list[Line]:
    """Parse ``lines`` as JSONL or plain text; see :func:`read_requests`.

    Raises:
        InputError: naming every bad line, or when there is no request at all.
    """
    good: list[Line] = []
    problems: list[tuple[int, str]] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            request = _from_json(text) if jsonl else VideoRequest(text)
        except (InvalidRequestError, _BadLine) as exc:
            problems.append((number, _what(exc)))
            continue
        good.append(Line(number, request))
    if problems:
        raise InputError(source, problems)
    if not good:
        raise InputError(source, [(0, "no requests in it (blank lines and # comments only)")])
    return good


class _BadLine(ValueError):
    pass


def _what(exc: Exception) -> str:
    return exc.message if isinstance(exc, InvalidRequestError) else str(exc)


def _from_json(text: str) -> VideoRequest:
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadLine(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise _BadLine(f"expected a JSON object, got {type(data).__name__}")
    fields: dict[str, Any] = {}
    for name, value in data.items():
        field = FIELDS.get(name)
        if field is None:
            allowed = ", ".join(sorted(FIELDS))
            raise _BadLine(f"unknown field {name!r} (expected one of: {allowed})")
        if field in fields:
            raise _BadLine(f"field {field!r} is given twice (Python and wire names)")
        fields[field] = value
    if "prompt" not in fields:
        raise _BadLine("no 'prompt' field")
    prompt = fields.pop("prompt")
    if fields.get("image_urls") is None:
        fields.pop("image_urls", None)
    return VideoRequest(prompt, **fields)
