"""The public surface: ``__all__`` pinned, and every name of the design importable and shaped."""

from __future__ import annotations

import inspect

import attrs
import pytest

import sora2_async

#: Changing this list changes the public API: do it on purpose, with the design in hand.
PINNED_ALL = [
    "PRICE_TABLE",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AspectRatio",
    "AuthenticationError",
    "BatchResult",
    "BudgetState",
    "Event",
    "EventKind",
    "EventStream",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "Journal",
    "JournalEntry",
    "JournalState",
    "Limiter",
    "Mode",
    "ModelTier",
    "Permit",
    "PollPolicy",
    "RateLimit",
    "RateLimitError",
    "RequestKind",
    "ResponseValidationError",
    "RetryPolicy",
    "SQLiteJournal",
    "ServerError",
    "SlidingWindowLimiter",
    "Tracked",
    "SQLiteLimiter",
    "PollPlanner",
    "PollPlan",
    "Planner",
    "Lease",
    "Demand",
    "BudgetStoreError",
    "Sora2Client",
    "Sora2Error",
    "Task",
    "TaskNotFoundError",
    "TaskState",
    "TaskStatus",
    "UncertainSubmissionError",
    "Video",
    "VideoRequest",
    "WaitTimeoutError",
    "__version__",
]

#: The names DESIGN.md fixes ("Public surface").
DESIGN_NAMES = [
    "Sora2Client",
    "VideoRequest",
    "RateLimit",
    "Mode",
    "ModelTier",
    "AspectRatio",
    "Task",
    "TaskStatus",
    "TaskState",
    "Video",
    "BatchResult",
    "Sora2Error",
    "APIError",
    "AuthenticationError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "TaskNotFoundError",
    "RateLimitError",
    "ServerError",
    "GenerationFailedError",
    "APIConnectionError",
    "APITimeoutError",
    "ResponseValidationError",
    "WaitTimeoutError",
]


def test_all_is_pinned() -> None:
    assert len(set(sora2_async.__all__)) == len(sora2_async.__all__), "duplicates in __all__"
    assert sorted(sora2_async.__all__) == sorted(PINNED_ALL)


def test_every_name_in_all_exists() -> None:
    for name in sora2_async.__all__:
        assert getattr(sora2_async, name, None) is not None, name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from sora2_async import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(PINNED_ALL)


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_design_names_import_from_the_package(name: str) -> None:
    assert name in sora2_async.__all__
    namespace: dict[str, object] = {}
    exec(f"from sora2_async import {name}", namespace)
    assert namespace[name] is getattr(sora2_async, name)


def test_public_classes_say_they_live_in_the_package_modules() -> None:
    for name in DESIGN_NAMES:
        assert getattr(sora2_async, name).__module__.startswith("sora2_async")


def test_version_is_a_string() -> None:
    assert isinstance(sora2_async.__version__, str)
    assert sora2_async.__version__.count(".") >= 1


def test_client_signature_follows_the_design() -> None:
    params = inspect.signature(sora2_async.Sora2Client).parameters
    assert next(iter(params)) == "api_key"
    assert params["api_key"].default is None
    for name in ("base_url", "rate_limit", "http_client", "timeout", "max_retries"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert params["base_url"].default is None
    for method in ("generate", "check_status", "download", "aclose", "__aenter__", "__aexit__"):
        assert callable(getattr(sora2_async.Sora2Client, method)), method


def test_default_rate_limit_is_100_per_hour() -> None:
    assert sora2_async.RateLimit() == sora2_async.RateLimit(100, per=3600.0)


def test_video_request_signature_follows_the_design() -> None:
    params = inspect.signature(sora2_async.VideoRequest).parameters
    assert list(params) == [
        "prompt",
        "mode",
        "model_tier",
        "aspect_ratio",
        "duration",
        "image_urls",
    ]
    assert params["prompt"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(params.values())[1:])
    defaults = {name: p.default for name, p in params.items() if name != "prompt"}
    assert defaults == {
        "mode": None,
        "model_tier": sora2_async.ModelTier.SORA2,
        "aspect_ratio": sora2_async.AspectRatio.PORTRAIT,
        "duration": 10,
        "image_urls": (),
    }


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        ("Task", ["task_id", "request", "submitted_at"]),
        ("Video", ["task_id", "url", "generation_time", "credits_used", "request"]),
        ("BatchResult", ["request", "task", "video", "error"]),
    ],
)
def test_value_class_fields_follow_the_design(cls: str, fields: list[str]) -> None:
    # The constructor's names (attrs' aliases: BatchResult keeps its video and request in
    # private fields behind typed properties).
    assert [f.alias for f in attrs.fields(getattr(sora2_async, cls))] == fields


def test_task_status_fields_follow_the_design() -> None:
    names = [f.name for f in attrs.fields(sora2_async.TaskStatus)]
    expected = [
        "task_id",
        "state",
        "progress",
        "video_url",
        "generation_time",
        "credits_used",
        "error",
        "error_code",
    ]
    assert names[: len(expected)] == expected


def test_error_attributes_follow_the_design() -> None:
    error = sora2_async.APIError("x", status_code=500, error_code="E", body={"a": 1})
    assert (error.status_code, error.error_code, error.body) == (500, "E", {"a": 1})
    assert hasattr(sora2_async.InsufficientCreditsError, "required_credits")
    assert hasattr(sora2_async.BatchResult, "ok")
    assert hasattr(sora2_async.VideoRequest, "credits")
