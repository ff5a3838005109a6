"""OpenTelemetry spans and metrics (the ``otel`` extra: ``pip install 'sora2-async[otel]'``).

Without ``opentelemetry-api`` installed every hook here is a no-op; with it, the API's own
no-op providers record nothing until the application configures an SDK provider. What is
recorded:

* a span per API request, ``sora2 generate`` / ``sora2 check_status`` (kind CLIENT), with
  ``sora2.request.kind``, ``sora2.task_id`` (polls), ``sora2.budget.wait_s`` (seconds the
  request waited for the shared budget), ``sora2.attempt`` and ``http.response.status_code``;
* a span per video, ``sora2 video``, from its submission to its result, with its task id,
  tier, duration, the outcome and ``sora2.video.detection_delay_s``;
* metrics: ``sora2.requests`` (by ``sora2.request.kind`` and ``sora2.outcome``),
  ``sora2.budget.used`` and ``sora2.budget.limit`` (gauges), ``sora2.videos.in_flight``, and
  ``sora2.video.detection_delay`` (seconds from the end of a video's generation to the poll
  that saw it).

No API key ever goes into an attribute, and no prompt unless the user opts in with the
environment variable ``SORA2_OTEL_CAPTURE_PROMPTS=1`` (then ``sora2.prompt`` on video spans).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import anyio

from ._limits import Limiter
from ._models import BatchResult, Task

__all__ = ["CAPTURE_PROMPTS_ENV", "RequestRecord", "VideoTelemetry", "api_request"]

CAPTURE_PROMPTS_ENV = "SORA2_OTEL_CAPTURE_PROMPTS"

logger = logging.getLogger("sora2_async")

try:
    from opentelemetry import metrics, trace
except ImportError:  # the 'otel' extra is not installed: record nothing
    metrics = trace = None  # type: ignore[assignment]


def _version() -> str:
    from . import __version__

    return __version__


class _Instruments:
    """The tracer and instruments, made once (they follow the global providers)."""

    def __init__(self) -> None:
        assert trace is not None
        assert metrics is not None
        self.tracer = trace.get_tracer("sora2_async", _version())
        meter = metrics.get_meter("sora2_async", _version())
        self.requests = meter.create_counter(
            "sora2.requests", unit="{request}", description="API requests, by kind and outcome"
        )
        self.budget_used = meter.create_gauge(
            "sora2.budget.used", unit="{request}", description="requests in the budget window"
        )
        self.budget_limit = meter.create_gauge(
            "sora2.budget.limit", unit="{request}", description="the budget's limit in force"
        )
        self.in_flight = meter.create_up_down_counter(
            "sora2.videos.in_flight", unit="{video}", description="videos submitted, not ended"
        )
        self.delay = meter.create_histogram(
            "sora2.video.detection_delay",
            unit="s",
            description="from the end of a video's generation to the poll that saw it",
        )


_instruments: _Instruments | None = None


def _get() -> _Instruments | None:
    """The instruments; ``None`` when nothing would record them.

    That is without ``opentelemetry-api``, and also while the application has set neither
    a tracer nor a meter provider: the API's own defaults record nothing, yet a span of
    theirs and its metrics cost tens of microseconds a request (a sixth of a poll's CPU
    at 1,000 videos in flight). Asked each time, so a provider set later is used from then
    on. (The meter default is known by its class name, the API's only mark of it: were it
    renamed, this would record through the defaults, as before.)
    """
    global _instruments
    if trace is None:
        return None
    if (
        isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
    ):
        return None
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


class RequestRecord:
    """What one API request's span hears of its answer."""

    __slots__ = ("attributes", "span")

    def __init__(self, span: Any, attributes: dict[str, Any]) -> None:
        self.span = span
        self.attributes = attributes

    def answered(self, status_code: int | None, error: BaseException | None = None) -> None:
        """The request got ``status_code`` (``None``: no answer), or ended in ``error``."""
        if status_code is not None:
            self.attributes["http.response.status_code"] = status_code
        if error is not None:
            self.attributes["error.type"] = type(error).__name__
        if status_code is not None and status_code < 400 and error is None:
            outcome = "ok"
        elif status_code == 429:
            outcome = "rate_limited"
        else:
            outcome = "error"
        self.attributes["sora2.outcome"] = outcome


class _Unrecorded(RequestRecord):
    """The record of a request nothing records: it hears of the answer and forgets it."""

    __slots__ = ()

    def answered(self, status_code: int | None, error: BaseException | None = None) -> None:
        """Nothing to note."""


_UNRECORDED = nullcontext(_Unrecorded(None, {}))


def api_request(
    kind: str, body: Mapping[str, Any], attempt: int, budget_wait: float, limiter: Limiter
) -> AbstractContextManager[RequestRecord]:
    """A span around one API request (one attempt, ``body`` its JSON), and its count in the
    metrics; the budget's gauges as ``limiter`` saw it last. With nothing to record them
    (see ``_get``), a shared no-op: not even the attributes are made."""
    got = _get()
    if got is None:
        return _UNRECORDED
    return _recorded(got, kind, body, attempt, budget_wait, limiter)


@contextmanager
def _recorded(
    got: _Instruments,
    kind: str,
    body: Mapping[str, Any],
    attempt: int,
    budget_wait: float,
    limiter: Limiter,
) -> Iterator[RequestRecord]:
    task_id = body.get("taskId") if kind == "check_status" else None
    attributes: dict[str, Any] = {
        "sora2.request.kind": kind,
        "sora2.attempt": attempt,
        "sora2.budget.wait_s": round(budget_wait, 6),
    }
    if isinstance(task_id, str):
        attributes["sora2.task_id"] = task_id
    with got.tracer.start_as_current_span(
        f"sora2 {kind}", kind=trace.SpanKind.CLIENT, record_exception=True
    ) as span:
        record = RequestRecord(span, attributes)
        try:
            yield record
        except BaseException as exc:
            record.answered(None, exc)
            raise
        finally:
            span.set_attributes(record.attributes)
            if record.attributes.get("sora2.outcome", "error") != "ok":
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            outcome = record.attributes.get("sora2.outcome", "error")
            got.requests.add(1, {"sora2.request.kind": kind, "sora2.outcome": outcome})
            budget = limiter.last_state
            got.budget_used.set(budget.used)
            got.budget_limit.set(budget.limit)


class VideoTelemetry:
    """One client's video spans: opened at submission, ended with the result."""

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}
        self._capture_prompts = os.environ.get(CAPTURE_PROMPTS_ENV, "").lower() in ("1", "true")

    def submitted(self, task: Task, started_ns: int) -> None:
        """``task`` was accepted; its generate started at ``started_ns`` (``time.time_ns``)."""
        request = task.request
        if request is not None:
            logger.info(
                "submitted %s (%s, %ss, %d credits)",
                task.task_id,
                request.model_tier.value,
                request.duration,
                request.credits,
            )
        got = _get()
        if got is None:
            return
        attributes: dict[str, Any] = {"sora2.task_id": task.task_id}
        if request is not None:
            attributes["sora2.model_tier"] = request.model_tier.value
            attributes["sora2.duration_s"] = request.duration
            if self._capture_prompts:
                attributes["sora2.prompt"] = request.prompt
        self._open[task.task_id] = got.tracer.start_span(
            "sora2 video", start_time=started_ns, attributes=attributes
        )
        got.in_flight.add(1)

    def ended(self, task: Task, result: BatchResult) -> None:
        """``task`` has its result."""
        video = result._video
        delay = _detection_delay(task, video.generation_time if video is not None else None)
        if result.ok:
            logger.info("completed %s", task.task_id)
        else:
            logger.info("ended %s without a video: %s", task.task_id, type(result.error).__name__)
        span = self._open.pop(task.task_id, None)
        got = _get()
        if got is None or span is None:
            return
        got.in_flight.add(-1)
        span.set_attribute("sora2.outcome", "completed" if result.ok else "failed")
        if result.error is not None:
            span.set_attribute("error.type", type(result.error).__name__)
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        if delay is not None:
            span.set_attribute("sora2.video.detection_delay_s", delay)
            got.delay.record(delay)
        span.end(end_time=time.time_ns())


def _detection_delay(task: Task, generation_time: float | None) -> float | None:
    if generation_time is None or task.submitted_at is None:
        return None
    return max(0.0, anyio.current_time() - task.submitted_at - generation_time)
