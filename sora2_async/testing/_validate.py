"""Reading request bodies the way the API does: every bad body is a typed 400, never a crash.

:func:`parse_generate` and :func:`parse_check_status` raise :class:`BadRequest` with the
contract's ``errorCode``; nothing here lets ``KeyError``, ``TypeError`` or a JSON error out.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import attrs

from .._models import AspectRatio, Mode, ModelTier

__all__ = ["BadRequest", "GenerateParams", "parse_check_status", "parse_generate"]

# Fields a web client might send images in: their presence without imageUrls means
# "this caller tried to upload an image", which the API refuses with IMAGE_URLS_REQUIRED.
_IMAGE_UPLOAD_FIELDS = ("image", "images", "imageBase64", "imageData", "imageUrl", "imageFile")


class BadRequest(Exception):
    """A request the API refuses with 400: ``code`` is its ``errorCode``."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@attrs.frozen
class GenerateParams:
    """A valid ``generate`` body."""

    prompt: str
    mode: Mode
    model_tier: ModelTier
    aspect_ratio: AspectRatio
    video_duration: int
    image_urls: tuple[str, ...]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise BadRequest("INVALID_INPUT", "Request body must be valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("INVALID_INPUT", "Request body must be a JSON object")
    return value


def _choice(body: dict[str, Any], field: str, kind: type[Any], default: Any) -> Any:
    value = body.get(field)
    if value is None:
        if default is None:
            raise BadRequest("INVALID_INPUT", f"{field} is required")
        return default
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    allowed = ", ".join(member.value for member in kind)
    shown = repr(value)[:60]
    raise BadRequest("INVALID_INPUT", f"Invalid {field} {shown}: expected one of {allowed}")


def _video_duration(value: Any) -> int:
    # The wire carries "10" or "15"; a plain 10 or 15 is accepted too (as a lenient server
    # that parses the number would), but nothing else: no 10.0, no True, no "10s".
    if value is None:
        return 10
    if isinstance(value, str) and value.strip() in ("10", "15"):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in (10, 15):
        return value
    raise BadRequest("INVALID_INPUT", f"Invalid videoDuration {repr(value)[:40]}: use 10 or 15")


def _image_urls(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("imageUrls")
    if value is None or value == []:
        if any(body.get(field) for field in _IMAGE_UPLOAD_FIELDS):
            raise BadRequest(
                "IMAGE_URLS_REQUIRED", "API calls must pass images as imageUrls (public URLs)"
            )
        raise BadRequest("IMAGE_REQUIRED", "Image is required for imageToVideo mode")
    if not isinstance(value, list):
        raise BadRequest("INVALID_INPUT", "imageUrls must be an array of URLs")
    for url in value:
        if not isinstance(url, str):
            raise BadRequest("INVALID_INPUT", "imageUrls must be an array of URL strings")
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise BadRequest(
                "IMAGE_URLS_REQUIRED",
                "imageUrls must be public http(s) URLs; base64 images are not supported",
            )
    return tuple(value)


def parse_generate(body: bytes) -> GenerateParams:
    """The parameters of a ``generate`` body, checked in the API's order.

    Raises:
        BadRequest: ``INVALID_INPUT`` for a body that is not a JSON object or a bad mode,
            tier, ratio or duration; ``PROMPT_REQUIRED`` for a missing or blank prompt;
            ``IMAGE_REQUIRED`` / ``IMAGE_URLS_REQUIRED`` for image-to-video without usable
            image URLs.
    """
    fields = _json_object(body)
    prompt = fields.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise BadRequest("PROMPT_REQUIRED", "Prompt is required")
    if not isinstance(prompt, str):
        raise BadRequest("INVALID_INPUT", "prompt must be a string")
    mode: Mode = _choice(fields, "mode", Mode, None)
    tier: ModelTier = _choice(fields, "modelTier", ModelTier, ModelTier.SORA2)
    ratio: AspectRatio = _choice(fields, "aspectRatio", AspectRatio, AspectRatio.PORTRAIT)
    duration = _video_duration(fields.get("videoDuration"))
    # Text-to-video ignores any imageUrls it is sent, as a lenient server would.
    urls = _image_urls(fields) if mode is Mode.IMAGE_TO_VIDEO else ()
    return GenerateParams(prompt, mode, tier, ratio, duration, urls)


def parse_check_status(body: bytes) -> str:
    """The ``taskId`` of a ``check-status`` body.

    Raises:
        BadRequest: ``INVALID_INPUT`` for a body that is not a JSON object or a ``taskId``
            that is not a string; ``TASK_ID_REQUIRED`` when it is missing or empty.
    """
    fields = _json_object(body)
    task_id = fields.get("taskId")
    if task_id is None or task_id == "":
        raise BadRequest("TASK_ID_REQUIRED", "Task ID is required")
    if not isinstance(task_id, str):
        raise BadRequest("INVALID_INPUT", "taskId must be a string")
    return task_id
