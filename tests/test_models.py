"""VideoRequest validation, prices and wire form; the value classes' shapes."""

from __future__ import annotations

import attrs
import pytest

from sora2_async import (
    PRICE_TABLE,
    AspectRatio,
    BatchResult,
    InvalidRequestError,
    Mode,
    ModelTier,
    Sora2Error,
    Task,
    TaskState,
    TaskStatus,
    Video,
    VideoRequest,
)

IMAGE = "https://images.example.com/cat.png"


def _invalid(**kwargs: object) -> InvalidRequestError:
    prompt = kwargs.pop("prompt", "a corgi surfing")
    with pytest.raises(InvalidRequestError) as info:
        VideoRequest(prompt, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- defaults and conversion ---------------------------------------------------------------------


def test_defaults_are_the_contracts() -> None:
    request = VideoRequest("a corgi surfing")
    assert request.prompt == "a corgi surfing"
    assert request.mode is Mode.TEXT_TO_VIDEO
    assert request.model_tier is ModelTier.SORA2
    assert request.aspect_ratio is AspectRatio.PORTRAIT
    assert request.duration == 10
    assert request.image_urls == ()


def test_strings_convert_to_enums() -> None:
    request = VideoRequest(
        "a corgi surfing",
        mode="imageToVideo",
        model_tier="sora2-pro-high",
        aspect_ratio="landscape",
        image_urls=[IMAGE],
    )
    assert request.mode is Mode.IMAGE_TO_VIDEO
    assert request.model_tier is ModelTier.PRO_HIGH
    assert request.aspect_ratio is AspectRatio.LANDSCAPE
    assert request.image_urls == (IMAGE,)  # a list becomes a tuple: the class stays hashable
    hash(request)


def test_enum_values_are_the_wire_values() -> None:
    assert {m.value for m in Mode} == {"textToVideo", "imageToVideo"}
    assert {t.value for t in ModelTier} == {"sora2", "sora2-pro-standard", "sora2-pro-high"}
    assert {r.value for r in AspectRatio} == {"portrait", "landscape"}
    assert {s.value for s in TaskState} == {"processing", "completed", "failed"}


def test_mode_defaults_to_image_to_video_when_images_are_given() -> None:
    assert VideoRequest("animate it", image_urls=[IMAGE]).mode is Mode.IMAGE_TO_VIDEO
    assert VideoRequest("animate it", image_urls=IMAGE).image_urls == (IMAGE,)


@pytest.mark.parametrize(("given", "expected"), [(10, 10), (15, 15), ("10", 10), ("15", 15)])
def test_duration_accepts_10_and_15_as_ints_or_strings(given: object, expected: int) -> None:
    request = VideoRequest("x", duration=given)  # type: ignore[arg-type]
    assert request.duration == expected
    assert type(request.duration) is int


# -- validation: every bad input fails at construction ---------------------------------------------


@pytest.mark.parametrize("prompt", ["", " ", "\n\t  ", None, 42])
def test_empty_or_blank_prompt_is_refused(prompt: object) -> None:
    error = _invalid(prompt=prompt)
    assert error.error_code == "PROMPT_REQUIRED"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_tier": "sora3"},
        {"model_tier": "SORA2"},
        {"model_tier": ""},
        {"aspect_ratio": "square"},
        {"aspect_ratio": "Portrait"},
        {"mode": "videoToVideo"},
        {"mode": "text"},
    ],
)
def test_unknown_tier_ratio_or_mode_is_refused(kwargs: dict[str, object]) -> None:
    error = _invalid(**kwargs)
    (value,) = kwargs.values()
    assert repr(value) in str(error)  # says what was wrong


@pytest.mark.parametrize("duration", [5, 0, -10, 12, 20, "5", "ten", "", None, 10.0, True, [10]])
def test_duration_other_than_10_or_15_is_refused(duration: object) -> None:
    error = _invalid(duration=duration)
    assert "10 or 15" in str(error)


def test_image_to_video_without_images_is_refused() -> None:
    assert _invalid(mode="imageToVideo").error_code == "IMAGE_REQUIRED"
    assert _invalid(mode=Mode.IMAGE_TO_VIDEO, image_urls=[]).error_code == "IMAGE_REQUIRED"


def test_text_to_video_with_images_is_refused() -> None:
    _invalid(mode="textToVideo", image_urls=[IMAGE])


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk",
        "file:///home/me/cat.png",
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk",  # bare base64
        "/home/me/cat.png",
        "ftp://images.example.com/cat.png",
        "s3://bucket/cat.png",
        "https://",
        "",
        "   ",
        "http://localhost/cat.png",
        "http://app.localhost:8000/cat.png",
        "http://127.0.0.1/cat.png",
        "https://127.0.0.1:8443/cat.png",
        "http://[::1]/cat.png",
        "http://10.0.0.5/cat.png",
        "http://192.168.1.20/cat.png",
        "http://172.16.0.1/cat.png",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/cat.png",
        "http://2130706433/cat.png",  # 127.0.0.1 written as one number
    ],
)
def test_image_urls_that_are_not_public_http_are_refused(url: str) -> None:
    error = _invalid(image_urls=[IMAGE, url])
    assert isinstance(error, ValueError)
    assert isinstance(error, Sora2Error)
    assert error.status_code is None  # raised client-side: nothing was sent


@pytest.mark.parametrize("bad", [None, 42, b"https://images.example.com/cat.png"])
def test_image_urls_of_the_wrong_type_are_refused(bad: object) -> None:
    _invalid(image_urls=[bad])


def test_image_urls_must_be_a_collection() -> None:
    _invalid(image_urls=42)


@pytest.mark.parametrize(
    "url",
    [
        "https://images.example.com/cat.png",
        "http://images.example.com/cat.png?size=large",
        "https://8.8.8.8/cat.png",
    ],
)
def test_public_image_urls_are_accepted(url: str) -> None:
    assert VideoRequest("animate", image_urls=[url]).image_urls == (url,)


def test_invalid_request_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="prompt"):
        VideoRequest("")


# -- price and wire form -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "duration", "credits"),
    [
        ("sora2", 10, 4),
        ("sora2", 15, 8),
        ("sora2-pro-standard", 10, 60),
        ("sora2-pro-standard", 15, 100),
        ("sora2-pro-high", 10, 120),
        ("sora2-pro-high", 15, 240),
    ],
)
def test_credits_follow_the_price_table(tier: str, duration: int, credits: int) -> None:
    assert VideoRequest("x", model_tier=tier, duration=duration).credits == credits
    assert VideoRequest("x", model_tier=tier, duration=str(duration)).credits == credits  # type: ignore[arg-type]
    assert PRICE_TABLE[ModelTier(tier)][duration] == credits


def test_price_table_covers_every_tier_and_duration() -> None:
    assert set(PRICE_TABLE) == set(ModelTier)
    assert all(set(prices) == {10, 15} for prices in PRICE_TABLE.values())


def test_to_wire_text_to_video() -> None:
    body = VideoRequest(
        "a corgi surfing", model_tier="sora2-pro-standard", aspect_ratio="landscape", duration=15
    ).to_wire()
    assert body == {
        "prompt": "a corgi surfing",
        "mode": "textToVideo",
        "modelTier": "sora2-pro-standard",
        "aspectRatio": "landscape",
        "videoDuration": "15",
    }
    assert "imageUrls" not in body


def test_to_wire_image_to_video() -> None:
    body = VideoRequest("animate", image_urls=(IMAGE,)).to_wire()
    assert body["mode"] == "imageToVideo"
    assert body["imageUrls"] == [IMAGE]
    assert body["videoDuration"] == "10"
    assert all(type(v) is str for k, v in body.items() if k != "imageUrls")  # plain str, no enums


# -- value classes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        VideoRequest("x"),
        Task("task_1"),
        TaskStatus("task_1", TaskState.PROCESSING),
        Video("task_1", "https://video.nanophoto.ai/a.mp4"),
        BatchResult(None),
    ],
)
def test_value_classes_are_frozen_and_slotted(value: object) -> None:
    assert attrs.has(type(value))
    assert not hasattr(value, "__dict__")
    first = attrs.fields(type(value))[0].name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(value, first, "changed")


def test_task_state_terminal_and_status_done() -> None:
    assert not TaskState.PROCESSING.terminal
    assert TaskState.COMPLETED.terminal
    assert TaskState.FAILED.terminal
    assert not TaskStatus("t", TaskState.PROCESSING).done
    assert TaskStatus("t", TaskState.COMPLETED, video_url="https://v/a.mp4").done
    assert TaskStatus("t", TaskState.FAILED).done


def test_batch_result_ok() -> None:
    request = VideoRequest("x")
    video = Video("t", "https://video.nanophoto.ai/a.mp4", request=request)
    assert BatchResult(request, Task("t", request), video).ok
    assert not BatchResult(request, Task("t", request), video, RuntimeError("boom")).ok
    assert not BatchResult(request, None, None, InvalidRequestError("no")).ok
    assert not BatchResult(request).ok


def test_batch_result_video_and_request_are_typed_not_optional() -> None:
    request = VideoRequest("x")
    video = Video("t", "https://video.nanophoto.ai/a.mp4", request=request)
    done = BatchResult(request, Task("t", request), video)
    assert done.video is video
    assert done.request is request
    assert done.has_request
    assert "video=Video(" in repr(done)
    failed = BatchResult(request, Task("t", request), error=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        _ = failed.video  # the error that ended it, as future.result() would
    refused = BatchResult(None, error=InvalidRequestError("blank"))
    assert not refused.has_request
    with pytest.raises(InvalidRequestError):
        _ = refused.request
    with pytest.raises(AttributeError, match="no request"):
        _ = BatchResult(None, Task("t")).request
    assert attrs.evolve(done, error=RuntimeError("late")).video is video
