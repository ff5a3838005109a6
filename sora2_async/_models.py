"""Value classes: what a video request is, what a task and its status are, what comes back.

All are frozen, slotted attrs classes. :class:`VideoRequest` validates at construction and
raises :class:`InvalidRequestError` before any request or credit is spent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, NoReturn, TypeAlias, TypeVar

import attrs

from ._errors import GenerationFailedError, InvalidRequestError
from ._inputs import (
    MAX_IMAGE_URL_LENGTH,
    MAX_IMAGE_URLS,
    MAX_PROMPT_LENGTH,
    check_image_urls,
    check_prompt,
)

__all__ = [
    "AspectRatio",
    "AspectRatioValue",
    "BatchResult",
    "Mode",
    "ModeValue",
    "ModelTier",
    "ModelTierValue",
    "PRICE_TABLE",
    "Task",
    "TaskState",
    "TaskStatus",
    "Video",
    "VideoDuration",
    "VideoRequest",
    "video_of",
]


class Mode(str, enum.Enum):
    """Generation mode; the values are the wire values."""

    TEXT_TO_VIDEO = "textToVideo"
    IMAGE_TO_VIDEO = "imageToVideo"


class ModelTier(str, enum.Enum):
    """Model tier; the values are the wire values."""

    SORA2 = "sora2"
    PRO_STANDARD = "sora2-pro-standard"
    PRO_HIGH = "sora2-pro-high"


class AspectRatio(str, enum.Enum):
    """Aspect ratio; the values are the wire values."""

    PORTRAIT = "portrait"
    LANDSCAPE = "landscape"


class TaskState(str, enum.Enum):
    """State of a task on the server; the values are the wire values of ``status``."""

    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Whether the task can no longer change (completed or failed)."""
        return self is not TaskState.PROCESSING


#: Credits per video, by tier and duration in seconds (the provider's price table).
PRICE_TABLE: Mapping[ModelTier, Mapping[int, int]] = {
    ModelTier.SORA2: {10: 4, 15: 8},
    ModelTier.PRO_STANDARD: {10: 60, 15: 100},
    ModelTier.PRO_HIGH: {10: 120, 15: 240},
}

_DURATIONS = (10, 15)


# What each parameter of VideoRequest takes, for type checkers: the enum, or its wire value
# as a string literal. A typo ("sora2-pro-ultra") fails mypy and pyright; any other value
# still fails at run time, with InvalidRequestError.
ModeValue: TypeAlias = Mode | Literal["textToVideo", "imageToVideo"]
ModelTierValue: TypeAlias = ModelTier | Literal["sora2", "sora2-pro-standard", "sora2-pro-high"]
AspectRatioValue: TypeAlias = AspectRatio | Literal["portrait", "landscape"]
VideoDuration: TypeAlias = Literal[10, 15, "10", "15"]

E = TypeVar("E", bound=enum.Enum)


def _to_enum(cls: type[E], what: str, value: object) -> E:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise InvalidRequestError(
            f"unknown {what} {value!r}: expected one of {allowed}", error_code="INVALID_INPUT"
        ) from None


def _optional_mode(value: ModeValue | None) -> Mode | None:
    return None if value is None else _to_enum(Mode, "mode", value)


def _tier(value: ModelTierValue) -> ModelTier:
    return _to_enum(ModelTier, "model tier", value)


def _ratio(value: AspectRatioValue) -> AspectRatio:
    return _to_enum(AspectRatio, "aspect ratio", value)


def _duration(value: VideoDuration) -> int:
    # The wire carries "10"/"15" as strings; accept either form, nothing else (no "1_0",
    # "+10" or "10.0": int() would read some of those, the API would not).
    seconds: int | None = None
    raw: object = value
    if isinstance(raw, int) and not isinstance(raw, bool):
        seconds = raw
    elif isinstance(raw, str) and re.fullmatch(r"[0-9]+", raw.strip()):
        seconds = int(raw.strip())
    if seconds not in _DURATIONS:
        raise InvalidRequestError(
            f"duration must be 10 or 15 seconds, not {value!r}", error_code="INVALID_INPUT"
        )
    return seconds


def _image_urls(urls: Iterable[str]) -> tuple[str, ...]:
    value: Any = urls
    if isinstance(value, str):
        value = (value,)  # one URL given bare: a common slip, and unambiguous
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping)):
        raise InvalidRequestError("image_urls must be a list of URLs", error_code="INVALID_INPUT")
    urls = tuple(value)
    check_image_urls(urls)
    return urls


@attrs.frozen
class VideoRequest:
    """One video to generate.

    Strings convert to :class:`Mode`, :class:`ModelTier` and :class:`AspectRatio`. ``mode``
    defaults to image-to-video when ``image_urls`` is given, else text-to-video.

    Size limits, checked at construction: a prompt of at most ``MAX_PROMPT_LENGTH``
    (10,000) characters, at most ``MAX_IMAGE_URLS`` (10) image URLs of at most
    ``MAX_IMAGE_URL_LENGTH`` (4,096) characters each.

    Raises:
        InvalidRequestError: at construction, when the prompt is empty, blank or only
            invisible characters, holds a NUL or is too long; a tier, ratio or mode is
            unknown; the duration is not 10 or 15 (an int, or the string ``"10"``/``"15"``);
            image-to-video has no images; there are too many image URLs, or one is too long
            or not a public http(s) URL (private, loopback and reserved hosts are refused in
            every spelling).
    """

    MAX_PROMPT_LENGTH: ClassVar[int] = MAX_PROMPT_LENGTH
    MAX_IMAGE_URLS: ClassVar[int] = MAX_IMAGE_URLS
    MAX_IMAGE_URL_LENGTH: ClassVar[int] = MAX_IMAGE_URL_LENGTH

    prompt: str = attrs.field()
    """What the video shows (at most 10,000 characters, something visible)."""
    mode: Mode | None = attrs.field(default=None, kw_only=True, converter=_optional_mode)
    """``"textToVideo"`` or ``"imageToVideo"`` (or a :class:`Mode`); by default image-to-video
    when ``image_urls`` is given, else text-to-video. Never ``None`` once built."""
    model_tier: ModelTier = attrs.field(default=ModelTier.SORA2, kw_only=True, converter=_tier)
    """``"sora2"``, ``"sora2-pro-standard"`` or ``"sora2-pro-high"`` (or a :class:`ModelTier`)."""
    aspect_ratio: AspectRatio = attrs.field(
        default=AspectRatio.PORTRAIT,
        kw_only=True,
        converter=_ratio,
    )
    """``"portrait"`` or ``"landscape"`` (or an :class:`AspectRatio`)."""
    duration: int = attrs.field(default=10, kw_only=True, converter=_duration)
    """Seconds: ``10`` or ``15`` (the strings ``"10"`` and ``"15"`` are read too)."""
    image_urls: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=_image_urls)
    """Public http(s) URLs of the images to animate (at most 10); any iterable of strings."""

    @prompt.validator
    def _check_prompt(self, _: attrs.Attribute[str], value: Any) -> None:
        check_prompt(value)

    def __attrs_post_init__(self) -> None:
        mode = self.mode
        if mode is None:
            mode = Mode.IMAGE_TO_VIDEO if self.image_urls else Mode.TEXT_TO_VIDEO
            object.__setattr__(self, "mode", mode)
        if mode is Mode.IMAGE_TO_VIDEO and not self.image_urls:
            raise InvalidRequestError(
                "image-to-video needs at least one image URL", error_code="IMAGE_REQUIRED"
            )
        if mode is Mode.TEXT_TO_VIDEO and self.image_urls:
            raise InvalidRequestError(
                "text-to-video takes no image URLs; use mode='imageToVideo'",
                error_code="INVALID_INPUT",
            )

    @property
    def credits(self) -> int:
        """What this video costs, from the provider's price table."""
        return PRICE_TABLE[self.model_tier][self.duration]

    def to_wire(self) -> dict[str, Any]:
        """The JSON body of ``POST /api/sora-2/generate``."""
        assert self.mode is not None  # set in __attrs_post_init__
        body: dict[str, Any] = {
            "prompt": self.prompt,
            "mode": self.mode.value,
            "modelTier": self.model_tier.value,
            "aspectRatio": self.aspect_ratio.value,
            "videoDuration": str(self.duration),
        }
        if self.image_urls:
            body["imageUrls"] = list(self.image_urls)
        return body


@attrs.frozen
class Task:
    """A submitted video: the server's ``task_id``, what was asked, and when.

    ``submitted_at`` is on the event loop's clock (``anyio.current_time()``), or ``None``
    for a task known only by its id (submitted elsewhere). ``request`` is ``None`` likewise.
    """

    task_id: str
    """The server's ``taskId``."""
    request: VideoRequest | None = None
    """What was asked (``None`` for a task known only by its id)."""
    submitted_at: float | None = None
    """When it was accepted, on the event loop's clock (``None`` when not known)."""


@attrs.frozen
class TaskStatus:
    """One answer of ``check-status``.

    ``progress`` is the server's free-form stage word, not a percentage. ``generation_time``
    is in seconds. ``error`` and ``error_code`` are set when the task failed.
    """

    task_id: str
    """The task's id."""
    state: TaskState
    """``processing``, ``completed`` or ``failed``."""
    progress: str | None = None
    """The server's stage word (free-form, not a percentage)."""
    video_url: str | None = None
    """Where the finished video is (completed tasks)."""
    generation_time: float | None = None
    """Seconds the server took to make the video."""
    credits_used: int | None = None
    """Credits charged for it, as the server reports."""
    error: str | None = None
    """Why the task failed (failed tasks)."""
    error_code: str | None = None
    """The server's ``errorCode`` of the failure."""
    message: str | None = None
    """The server's ``message``, if any."""
    raw: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    """The answer's JSON object as the server sent it (``None`` for a status not read from
    an answer): the raw value of any optional field the SDK could not read."""

    @property
    def done(self) -> bool:
        """Whether the task has ended (completed or failed)."""
        return self.state.terminal


@attrs.frozen
class Video:
    """A finished video: where to fetch it, what it took and cost, and what was asked."""

    task_id: str
    """The task that made it."""
    url: str
    """Where to fetch it (``client.download`` sends no key there)."""
    generation_time: float | None = None
    """Seconds the server took to make it."""
    credits_used: int | None = None
    """Credits charged for it."""
    request: VideoRequest | None = None
    """What was asked (``None`` for a task followed by its id alone)."""


@attrs.frozen(repr=False)
class BatchResult:
    """The outcome of one request of a batch: a ``video``, or the ``error`` that ended it.

    Built as ``BatchResult(request, task=None, video=None, error=None)``. Check :attr:`ok`,
    then read :attr:`video`: it is typed :class:`Video`, never ``None``, so
    ``if result.ok: result.video.url`` type-checks. Reading ``video`` on a result without one
    raises its ``error`` (as ``future.result()`` does).

    ``request`` is the :class:`VideoRequest` the result answers. Every result of
    ``client.batch(requests)`` has one, except for an item that was not a valid request (a
    blank prompt string): reading it there raises that item's ``InvalidRequestError``. A task
    followed by id alone (``client.as_completed(["task_id"])``) has no request either; use
    :attr:`has_request` or :attr:`task` there.

    ``task`` is ``None`` when the request was never accepted by the API.
    """

    _request: VideoRequest | None
    task: Task | None = None
    """The accepted task (``None`` when the API never accepted the request)."""
    _video: Video | None = None
    error: BaseException | None = None
    """What ended it without a video (``None`` when :attr:`ok`)."""

    @property
    def ok(self) -> bool:
        """Whether the request produced a video (then :attr:`video` is it)."""
        return self._video is not None and self.error is None

    @property
    def video(self) -> Video:
        """The finished video.

        Raises:
            BaseException: this result's ``error``, when there is no video.
        """
        if self._video is None:
            self._missing("video")
        return self._video

    @property
    def request(self) -> VideoRequest:
        """What was asked.

        Raises:
            BaseException: this result's ``error`` (or ``AttributeError``) when the request
                is not known: see :attr:`has_request`.
        """
        if self._request is None:
            self._missing("request")
        return self._request

    @property
    def has_request(self) -> bool:
        """Whether :attr:`request` is known (not for a task followed by its id alone)."""
        return self._request is not None

    def _missing(self, what: str) -> NoReturn:
        if self.error is not None:
            raise self.error
        raise AttributeError(f"this BatchResult has no {what}")

    def __repr__(self) -> str:
        return (
            f"BatchResult(request={self._request!r}, task={self.task!r}, "
            f"video={self._video!r}, error={self.error!r})"
        )


def video_of(task: Task, status: TaskStatus) -> Video:
    """The :class:`Video` of a final status.

    Raises:
        GenerationFailedError: when the status is ``failed``.
    """
    if status.state is not TaskState.COMPLETED or status.video_url is None:
        raise GenerationFailedError(status)
    return Video(
        task.task_id, status.video_url, status.generation_time, status.credits_used, task.request
    )
