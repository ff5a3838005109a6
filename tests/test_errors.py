"""The exception tree and the mapping of API error answers: errorCode first, status second."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sora2_async import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    Sora2Error,
    TaskNotFoundError,
    TaskState,
    TaskStatus,
    WaitTimeoutError,
)
from sora2_async._errors import error_for_response

#: Every errorCode of the contract, with its HTTP status and the class it must become.
CONTRACT = [
    ("LOGIN_REQUIRED", 401, AuthenticationError),
    ("API_KEY_RATE_LIMIT_EXCEEDED", 429, RateLimitError),
    ("INSUFFICIENT_CREDITS", 402, InsufficientCreditsError),
    ("PROMPT_REQUIRED", 400, InvalidRequestError),
    ("IMAGE_REQUIRED", 400, InvalidRequestError),
    ("IMAGE_URLS_REQUIRED", 400, InvalidRequestError),
    ("INVALID_INPUT", 400, InvalidRequestError),
    ("GENERATION_FAILED", 500, ServerError),
    ("TASK_ID_REQUIRED", 400, InvalidRequestError),
    ("TASK_NOT_FOUND", 404, TaskNotFoundError),
    ("INTERNAL_ERROR", 500, ServerError),
]

CODES = {code: cls for code, _, cls in CONTRACT}


def _body(code: str | None, text: str = "the server's own words", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"success": False, "error": text, **extra}
    if code is not None:
        body["errorCode"] = code
    return body


def test_hierarchy() -> None:
    for cls in (
        AuthenticationError,
        InsufficientCreditsError,
        InvalidRequestError,
        TaskNotFoundError,
        RateLimitError,
        ServerError,
    ):
        assert issubclass(cls, APIError)
    for cls in (
        APIError,
        GenerationFailedError,
        APIConnectionError,
        ResponseValidationError,
        WaitTimeoutError,
    ):
        assert issubclass(cls, Sora2Error)
    assert issubclass(Sora2Error, Exception)
    assert issubclass(InvalidRequestError, ValueError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(APITimeoutError, TimeoutError)
    assert issubclass(WaitTimeoutError, TimeoutError)
    assert not issubclass(ServerError, (AuthenticationError, InvalidRequestError))


@pytest.mark.parametrize(("code", "status", "cls"), CONTRACT)
def test_every_contract_code_maps_to_its_class(code: str, status: int, cls: type[APIError]) -> None:
    body = _body(code)
    error = error_for_response(status, body)
    assert type(error) is cls
    assert error.status_code == status
    assert error.error_code == code
    assert error.body == body
    assert code in str(error)
    assert "the server's own words" in str(error)


@pytest.mark.parametrize(("code", "_status", "cls"), CONTRACT)
@pytest.mark.parametrize("other_status", [400, 404, 418, 500])
def test_error_code_wins_over_status(
    code: str, _status: int, cls: type[APIError], other_status: int
) -> None:
    assert type(error_for_response(other_status, _body(code))) is cls


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (402, InsufficientCreditsError),
        (403, AuthenticationError),
        (404, TaskNotFoundError),
        (422, InvalidRequestError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (599, ServerError),
        (409, APIError),
        (418, APIError),
    ],
)
@pytest.mark.parametrize("code", ["SOMETHING_NEW", None, "", 42])
def test_unknown_or_missing_codes_map_by_status(
    status: int, cls: type[APIError], code: Any
) -> None:
    body = {"success": False, "error": "whatever", "errorCode": code}
    error = error_for_response(status, body)
    assert type(error) is cls
    assert error.status_code == status
    if code == "SOMETHING_NEW":
        assert error.error_code == "SOMETHING_NEW"
        assert "SOMETHING_NEW" in str(error)
    else:
        assert error.error_code is None


@pytest.mark.parametrize(("status", "cls"), [(401, AuthenticationError), (502, ServerError)])
def test_a_body_that_is_not_json_maps_by_status(status: int, cls: type[APIError]) -> None:
    error = error_for_response(status, None)
    assert type(error) is cls
    assert error.body is None
    assert str(status) in str(error)


def test_str_says_code_status_and_text() -> None:
    error = error_for_response(404, _body("TASK_NOT_FOUND", "Task not found"))
    assert str(error) == "[TASK_NOT_FOUND 404] Task not found"
    assert "TASK_NOT_FOUND" in repr(error)
    assert "Task not found" in repr(error)


def test_message_falls_back_to_message_then_status() -> None:
    assert "try later" in str(error_for_response(503, {"message": "try later"}))
    assert "try later" in str(error_for_response(503, {"error": "", "message": "try later"}))
    assert "HTTP 503" in str(error_for_response(503, {"error": {"nested": True}}))
    assert "HTTP 503" in str(error_for_response(503, {}))


def test_insufficient_credits_carries_required_credits() -> None:
    error = error_for_response(402, _body("INSUFFICIENT_CREDITS", "need more", requiredCredits=240))
    assert isinstance(error, InsufficientCreditsError)
    assert error.required_credits == 240
    assert "need more" in str(error)


@pytest.mark.parametrize("required", [None, "240", True, 2.5, [240]])
def test_required_credits_is_none_when_absent_or_not_an_int(required: Any) -> None:
    extra = {} if required is None else {"requiredCredits": required}
    error = error_for_response(402, _body("INSUFFICIENT_CREDITS", **extra))
    assert isinstance(error, InsufficientCreditsError)
    assert error.required_credits is None


def test_client_side_invalid_request_error() -> None:
    error = InvalidRequestError("prompt must not be empty", error_code="PROMPT_REQUIRED")
    assert error.status_code is None
    assert str(error) == "[PROMPT_REQUIRED] prompt must not be empty"
    assert str(InvalidRequestError("plain")) == "plain"


def test_generation_failed_error_carries_its_status() -> None:
    status = TaskStatus(
        "task_9",
        TaskState.FAILED,
        error="Video generation failed",
        error_code="GENERATION_FAILED",
    )
    error = GenerationFailedError(status)
    assert error.status is status
    assert "task_9" in str(error)
    assert "GENERATION_FAILED" in str(error)
    assert "Video generation failed" in str(error)


def test_connection_errors_tell_whether_the_request_was_sent() -> None:
    assert APIConnectionError("refused", request_sent=False).request_sent is False
    assert APITimeoutError("slow").request_sent is True
    assert ResponseValidationError("bad", field="taskId").field == "taskId"


# -- arbitrary JSON never breaks the mapping -----------------------------------------------------

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
codes = st.sampled_from([c for c, _, _ in CONTRACT]) | st.text(max_size=20) | json_values
error_bodies = st.fixed_dictionaries(
    {},
    optional={
        "success": json_values,
        "error": st.text() | json_values,
        "errorCode": codes,
        "message": st.text() | json_values,
        "requiredCredits": st.integers() | json_values,
        "taskId": st.text() | json_values,
        "status": st.sampled_from(["processing", "completed", "failed"]) | json_values,
    },
) | st.dictionaries(st.text(max_size=12), json_values, max_size=5)


@settings(max_examples=300, deadline=None)
@given(status=st.integers(min_value=100, max_value=599), body=st.none() | error_bodies)
def test_error_for_response_takes_any_json_object(status: int, body: dict[str, Any] | None) -> None:
    error = error_for_response(status, body)
    assert isinstance(error, APIError)
    assert error.status_code == status
    assert isinstance(str(error), str)
    assert isinstance(repr(error), str)
    if isinstance(error, InsufficientCreditsError):
        assert error.required_credits is None or isinstance(error.required_credits, int)
    code = None if body is None else body.get("errorCode")
    if status >= 500 and not (isinstance(code, str) and code in CODES):
        assert isinstance(error, ServerError)  # an unknown 5xx is still a server error
    if isinstance(code, str) and code in CODES:
        assert type(error) is CODES[code]
