"""Response parsing: the contract's bodies, malformed ones, and arbitrary JSON."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sora2_async import ResponseValidationError, Sora2Error, TaskState
from sora2_async._errors import error_for_response
from sora2_async._parse import decode_json_object, parse_status, parse_task_id

PROCESSING = {
    "success": True,
    "status": "processing",
    "progress": "generating",
    "message": "Video is being generated",
    "taskId": "task_abc123",
}
COMPLETED = {
    "success": True,
    "status": "completed",
    "videoUrl": "https://video.nanophoto.ai/sora/task_abc123.mp4",
    "taskId": "task_abc123",
    "generationTime": 120,
    "creditsUsed": 4,
}
FAILED = {
    "success": False,
    "status": "failed",
    "error": "Video generation failed",
    "errorCode": "GENERATION_FAILED",
    "taskId": "task_abc123",
}


# -- the contract's bodies -----------------------------------------------------------------------


def test_processing() -> None:
    status = parse_status(PROCESSING)
    assert status.task_id == "task_abc123"
    assert status.state is TaskState.PROCESSING
    assert status.progress == "generating"
    assert status.message == "Video is being generated"
    assert status.video_url is None
    assert not status.done


def test_completed() -> None:
    status = parse_status(COMPLETED)
    assert status.state is TaskState.COMPLETED
    assert status.video_url == "https://video.nanophoto.ai/sora/task_abc123.mp4"
    assert status.generation_time == 120.0
    assert status.credits_used == 4
    assert status.done


def test_failed() -> None:
    status = parse_status(FAILED)
    assert status.state is TaskState.FAILED
    assert status.error == "Video generation failed"
    assert status.error_code == "GENERATION_FAILED"
    assert status.video_url is None
    assert status.done


def test_unknown_fields_are_ignored() -> None:
    body = {**COMPLETED, "resolution": "1080p", "extra": {"nested": [1, 2]}, "success": "yes"}
    assert parse_status(body) == parse_status(COMPLETED)


def test_asked_task_id_fills_in_when_the_body_omits_it() -> None:
    body = {k: v for k, v in PROCESSING.items() if k != "taskId"}
    assert parse_status(body, task_id="task_asked").task_id == "task_asked"
    assert parse_status(PROCESSING, task_id="task_abc123").task_id == "task_abc123"
    # Another task's answer is no answer about this one (its video would be misattributed).
    with pytest.raises(ResponseValidationError, match="task_asked") as info:
        parse_status(PROCESSING, task_id="task_asked")
    assert info.value.field == "taskId"


def test_numbers_given_as_strings_are_read() -> None:
    status = parse_status({**COMPLETED, "generationTime": "95.5", "creditsUsed": "8"})
    assert status.generation_time == 95.5
    assert status.credits_used == 8


def test_task_id_of_an_accepted_generate() -> None:
    body = {"success": True, "status": "processing", "taskId": "task_abc123", "message": "ok"}
    assert parse_task_id(body) == "task_abc123"


# -- malformed bodies name the field -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in COMPLETED.items() if k != "videoUrl"}, "videoUrl"),
        ({**COMPLETED, "videoUrl": None}, "videoUrl"),
        ({**COMPLETED, "videoUrl": ""}, "videoUrl"),
        ({**COMPLETED, "videoUrl": 7}, "videoUrl"),
        ({k: v for k, v in PROCESSING.items() if k != "status"}, "status"),
        ({**PROCESSING, "status": "done"}, "status"),
        ({**PROCESSING, "status": 1}, "status"),
        ({**PROCESSING, "status": ["processing"]}, "status"),
        ({k: v for k, v in PROCESSING.items() if k != "taskId"}, "taskId"),
        ({**PROCESSING, "taskId": 123}, "taskId"),
        ({**PROCESSING, "taskId": ""}, "taskId"),
        ({**COMPLETED, "videoUrl": "/sora/relative.mp4"}, "videoUrl"),
    ],
)
def test_parse_status_names_the_broken_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ResponseValidationError) as info:
        parse_status(body)
    assert info.value.field == field
    assert field in str(info.value)


# -- optional fields of the wrong type are logged and left out, never fatal -------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**COMPLETED, "generationTime": "two minutes"}, "generationTime"),
        ({**COMPLETED, "generationTime": True}, "generationTime"),
        ({**COMPLETED, "generationTime": float("nan")}, "generationTime"),
        ({**COMPLETED, "generationTime": "inf"}, "generationTime"),
        ({**COMPLETED, "generationTime": 10**400}, "generationTime"),
        ({**COMPLETED, "creditsUsed": [4]}, "creditsUsed"),
        ({**COMPLETED, "creditsUsed": {"n": 4}}, "creditsUsed"),
        ({**FAILED, "error": {"message": "no"}}, "error"),
        ({**FAILED, "errorCode": ["GENERATION_FAILED"]}, "errorCode"),
        ({**PROCESSING, "message": False}, "message"),
    ],
)
def test_an_optional_field_of_the_wrong_type_is_logged_and_left_out(
    body: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    status = parse_status(body)
    attribute = {
        "generationTime": "generation_time",
        "creditsUsed": "credits_used",
        "errorCode": "error_code",
    }.get(field, field)
    assert getattr(status, attribute) is None
    assert status.raw is not None
    assert repr(status.raw[field]) == repr(body[field])
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert repr(field) in record.getMessage()


@pytest.mark.parametrize(
    "body",
    [{}, {"taskId": None}, {"taskId": ""}, {"taskId": 42}, {"taskId": ["t"]}, {"task_id": "t"}],
)
def test_parse_task_id_names_the_field(body: dict[str, Any]) -> None:
    with pytest.raises(ResponseValidationError) as info:
        parse_task_id(body)
    assert info.value.field == "taskId"


@pytest.mark.parametrize(
    "content",
    [
        b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
        b"",
        b"   ",
        b"not json",
        b'{"taskId": "t"',
        b"\xff\xfe\x00garbage",
        b'["task_abc123"]',
        b'"task_abc123"',
        b"42",
        b"null",
        b"true",
    ],
)
def test_decode_json_object_refuses_anything_but_an_object(content: bytes) -> None:
    with pytest.raises(ResponseValidationError) as info:
        decode_json_object(content, content_type="text/html")
    assert info.value.field == "<body>"


def test_decode_json_object_refuses_absurdly_deep_nesting() -> None:
    depth = 100_000
    with pytest.raises(ResponseValidationError):
        decode_json_object(b"[" * depth + b"]" * depth)
    with pytest.raises(ResponseValidationError):
        decode_json_object(b'{"a":' * depth + b"1" + b"}" * depth)


def test_decode_json_object_reads_utf8_objects() -> None:
    body = {"taskId": "task_\u00e9", "n": 1}
    assert decode_json_object(json.dumps(body, ensure_ascii=False).encode()) == body


# -- arbitrary JSON raises nothing but Sora2Error ------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
plausible_strings = st.sampled_from(
    ["", "task_abc123", "processing", "completed", "failed", "https://video.nanophoto.ai/a.mp4"]
)
numbers_as_strings = st.sampled_from(["120", "1e400", "-inf", "nan", "12.5", " 3 ", "0x10"])
huge_ints = st.integers(min_value=2**1024) | st.integers(max_value=-(2**1024))  # beyond float
field_values = json_values | plausible_strings | numbers_as_strings | huge_ints
contract_fields = [
    "success",
    "status",
    "taskId",
    "progress",
    "message",
    "videoUrl",
    "generationTime",
    "creditsUsed",
    "error",
    "errorCode",
    "requiredCredits",
]
contract_like = st.fixed_dictionaries(
    {},
    optional={name: field_values for name in contract_fields},
)
with_states = st.fixed_dictionaries(
    {"status": st.sampled_from(["processing", "completed", "failed"])},
    optional={name: field_values for name in contract_fields if name != "status"},
)
objects = (
    contract_like
    | with_states
    | st.dictionaries(st.text(max_size=12), json_values, max_size=6)
    | st.builds(lambda a, b: {**a, **b}, with_states, st.dictionaries(st.text(), json_values))
)


@settings(max_examples=400, deadline=None)
@given(body=objects, task_id=st.none() | st.text(max_size=10))
def test_parse_status_raises_only_sora2_errors(body: dict[str, Any], task_id: str | None) -> None:
    try:
        status = parse_status(body, task_id=task_id)
    except ResponseValidationError as exc:
        assert exc.field  # noqa: PT017 (always says which field broke the contract)
        return
    assert status.state in TaskState
    assert isinstance(status.task_id, str)
    if status.state is TaskState.COMPLETED:
        assert isinstance(status.video_url, str)
        assert status.video_url
    assert status.credits_used is None or isinstance(status.credits_used, int)


@settings(max_examples=300, deadline=None)
@given(body=objects)
def test_parse_task_id_raises_only_sora2_errors(body: dict[str, Any]) -> None:
    try:
        task_id = parse_task_id(body)
    except ResponseValidationError as exc:
        assert exc.field == "taskId"  # noqa: PT017
        return
    assert isinstance(task_id, str)
    assert task_id


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = (
    st.binary(max_size=200)
    | json_values.map(_json_bytes)
    | objects.map(_json_bytes)
    | st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass"))
    | st.sampled_from([b"<html>502</html>", b"\xef\xbb\xbf{}", b"{}", b"[]", b"NaN"])
)


@settings(max_examples=400, deadline=None)
@given(content=bodies, content_type=st.none() | st.text(max_size=20))
def test_decode_then_parse_raises_only_sora2_errors(
    content: bytes, content_type: str | None
) -> None:
    """The whole chain the HTTP layer runs on a body: decode, then parse or map to an error."""
    try:
        body = decode_json_object(content, content_type=content_type)
    except Sora2Error:
        return
    assert isinstance(body, dict)
    for parse in (parse_status, parse_task_id):
        with contextlib.suppress(Sora2Error):
            parse(body)
    assert isinstance(str(error_for_response(500, body)), str)
