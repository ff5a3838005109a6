"""The one seam every API request passes: budget → HTTP → typed result, with retries.

Each attempt takes a permit from the shared limiter, so every retry spends budget as the
server counts it. What is retried follows the API's idempotency:

* ``check-status`` is idempotent: connection errors, timeouts, 5xx and 429 are retried.
* ``generate`` is not: a retry after the request may have reached the server can create and
  charge a second video. It is retried only after a 429 or a connection that was never made;
  otherwise the error says that the task may exist.
* A failed task answered as HTTP 500 ``GENERATION_FAILED`` with a ``taskId`` is a terminal
  :class:`TaskStatus`, not a server error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from ._budget import Limiter, RequestKind
from ._errors import (
    APIConnectionError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    Sora2Error,
    error_for_response,
)
from ._events import EventHub, EventKind
from ._http import Answer, HTTPLayer
from ._models import TaskState, TaskStatus, VideoRequest
from ._parse import parse_status, parse_task_id
from ._retry import RetryPolicy

__all__ = ["APICaller", "Hook"]

#: Awaited once a generate is admitted, before it is sent.
Hook = Callable[[], Awaitable[None]]

logger = logging.getLogger("sora2_async")

GENERATE_PATH = "/api/sora-2/generate"
STATUS_PATH = "/api/sora-2/check-status"

_MAY_EXIST = (
    " The generate request may have reached the server, so the task may exist and may have "
    "been charged; it was not re-sent. Check your tasks before submitting it again."
)


class APICaller:
    """Calls the two endpoints through the limiter and the HTTP layer."""

    def __init__(
        self, http: HTTPLayer, limiter: Limiter, retry: RetryPolicy, events: EventHub
    ) -> None:
        self.http = http
        self.limiter = limiter
        self.retry = retry
        self.events = events

    async def generate(
        self,
        request: VideoRequest,
        *,
        reserve: int = 0,
        horizon: float = 0.0,
        before_send: Hook | None = None,
    ) -> str:
        """Submit ``request``; return its ``taskId``.

        ``reserve`` polls are promised with it, due in about ``horizon`` seconds.
        ``before_send`` is awaited once the budget admits the generate and before it is sent
        (a journal records the intent there: not earlier, for a generate still waiting for
        budget has sent nothing). Cancellation cannot interrupt the hook, nor the generate
        once it is on its way: its answer, the task id, is worth the wait (the HTTP timeout
        bounds it), or a paid task would be lost.

        Raises:
            APIError: the API refused it (a subclass by code); a ``ServerError`` says the task
                may exist.
            APIConnectionError: no answer; ``request_sent`` says whether the task may exist.
            ResponseValidationError: an accepted answer without a usable ``taskId``.
        """
        held = [0]  # polls reserved once the first attempt is admitted
        try:
            answer = await self._call(
                GENERATE_PATH,
                request.to_wire(),
                RequestKind.GENERATE,
                idempotent=False,
                reserve=reserve,
                horizon=horizon,
                held=held,
                before_send=before_send,
            )
            assert answer is not None  # only extra polls are ever skipped
            if answer.body is None:
                assert answer.error is not None
                raise ResponseValidationError(f"{answer.error}.{_MAY_EXIST}", field="<body>")
            try:
                return parse_task_id(answer.body)
            except ResponseValidationError as exc:  # accepted without a usable id: it exists
                raise ResponseValidationError(f"{exc}.{_MAY_EXIST}", field=exc.field) from None
        except BaseException:
            self.limiter.release(held[0])  # no task to poll: give its polls back
            raise

    async def check_status(
        self, task_id: str, *, kind: RequestKind = RequestKind.POLL, retry: bool = True
    ) -> TaskStatus | None:
        """One status of ``task_id`` (retried as needed; every attempt spends budget).

        ``retry=False`` makes one attempt: the scheduler's pollers retry on their own plan,
        never faster than the minimum poll interval.

        Raises:
            TaskNotFoundError: unknown task, or another key's.
            APIError, APIConnectionError: when retries are exhausted.
            ResponseValidationError: an answer that breaks the contract.
        """
        answer = await self._call(
            STATUS_PATH, {"taskId": task_id}, kind, idempotent=True, retry=retry
        )
        if answer is None:
            return None
        body = answer.body
        assert body is not None
        if answer.status_code >= 400 and "status" not in body:
            body = {**body, "status": TaskState.FAILED.value}  # a failed task's 500 body
        return parse_status(body, task_id=task_id)

    async def _call(
        self,
        path: str,
        body: Mapping[str, Any],
        kind: RequestKind,
        *,
        idempotent: bool,
        reserve: int = 0,
        horizon: float = 0.0,
        held: list[int] | None = None,
        before_send: Hook | None = None,
        retry: bool = True,
    ) -> Answer | None:
        max_retries = self.retry.max_retries if retry else 0
        max_rate_limited = self.retry.max_rate_limit_retries if retry else 0
        retries = rate_limited = 0
        while True:
            attempt = retries + rate_limited + 1
            error: Sora2Error
            retry_after: float | None = None
            rate_limited_now = False
            if kind is RequestKind.EXTRA_POLL:
                # Spends only idle budget: when none is free now, skip rather than wait.
                admitted = self.limiter.try_permit(kind)
                if admitted is None:
                    return None
                kind = RequestKind.POLL  # a retry of it has to happen, so it may wait
            else:
                if self.events:  # a progress display wants to know why nothing moves
                    state = self.limiter.state()
                    if state.available <= reserve or state.blocked_for > 0:
                        self.events.emit(EventKind.WAITING_FOR_BUDGET, budget=state)
                admitted = self.limiter.permit(kind, reserve=reserve, horizon=horizon)
            async with admitted as permit:
                if held is not None:
                    held[0] += reserve
                hook, before_send = before_send, None  # once: on the first admission
                try:
                    answer = await self.http.post(
                        path, body, attempt=attempt, shield=not idempotent, before_send=hook
                    )
                except ResponseValidationError as exc:  # sent, but undecodable
                    if not idempotent:
                        raise ResponseValidationError(
                            f"{exc}.{_MAY_EXIST}", field=exc.field
                        ) from None
                    error = exc
                except APIConnectionError as exc:
                    if not idempotent and exc.request_sent:
                        raise type(exc)(f"{exc}.{_MAY_EXIST}", request_sent=True) from None
                    error = exc
                else:
                    if answer.status_code == 429:
                        permit.rate_limited(answer.retry_after)
                        rate_limited_now = True
                    if _is_failed_task(path, answer) or (
                        200 <= answer.status_code < 300
                        and (answer.body is not None or not idempotent)
                    ):
                        return answer
                    if answer.body is None and answer.status_code < 300:
                        # A status cut off on the way: as passing as a 5xx, and as safe to ask
                        # again (a lost paid video is the alternative).
                        assert answer.error is not None
                        error = answer.error
                    else:
                        error = error_for_response(answer.status_code, answer.body)
                    retry_after = answer.retry_after
                    if isinstance(error, RateLimitError):
                        error.retry_after = retry_after
            # Retry outside the permit: its slot is stamped and the waits below hold none.
            if rate_limited_now:
                self.events.emit(EventKind.RATE_LIMITED, budget=self.limiter.state())
            reserve = 0  # promises are made on the first admission
            if isinstance(error, RateLimitError):
                rate_limited += 1
                if rate_limited > max_rate_limited:
                    raise error
                # The limiter now holds everyone back until the window frees; a short,
                # jittered pause keeps retries of many callers from landing in one instant.
                await anyio.sleep(self.retry.backoff(1, retry_after=retry_after))
                continue
            if isinstance(error, ServerError) and not idempotent:
                error.message += _MAY_EXIST
                raise error
            if not isinstance(error, (ServerError, APIConnectionError, ResponseValidationError)):
                raise error
            retries += 1
            if retries > max_retries:
                raise error
            logger.debug("retrying POST %s after %s (retry %d)", path, error, retries)
            await anyio.sleep(self.retry.backoff(retries, retry_after=retry_after))


def _is_failed_task(path: str, answer: Answer) -> bool:
    """A check-status answered 500 GENERATION_FAILED with a taskId: a status, not an error."""
    body = answer.body
    return (
        path == STATUS_PATH
        and body is not None
        and body.get("errorCode") == "GENERATION_FAILED"
        and isinstance(body.get("taskId"), str)
        and body.get("status", TaskState.FAILED.value) == TaskState.FAILED.value
    )
