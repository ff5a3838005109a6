"""The one seam every API request passes: budget → HTTP → typed result, with retries.

Each attempt is three steps: *admit* (a permit from the shared limiter, so every retry
spends budget as the server counts it), *send* (one exchange over the HTTP layer), and
*classify* (a result, an error to retry, or an error to raise). After a 429, every request
of the client first waits out a pause (``_calm``), and one admitted after a 429 that came
while it waited may stay unsent (see ``_held_back``). What is retried follows the API's
idempotency:

* ``check-status`` is idempotent: connection errors, timeouts, 5xx, 429 and answers that
  are not in the contract's shape (a proxy's HTML page) are retried.
* ``generate`` is not: a retry after the request may have reached the server can create and
  charge a second video. It is retried only after a 429 or a connection that was never made;
  otherwise the error says that the task may exist.
* A failed task answered as HTTP 500 ``GENERATION_FAILED`` is a terminal
  :class:`TaskStatus`, not a server error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from typing import Any, Protocol

import anyio

from ._calm import Calm
from ._errors import (
    APIConnectionError,
    APIError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    Sora2Error,
    error_for_response,
)
from ._events import EventHub, EventKind
from ._http import Answer, HTTPLayer
from ._limits import Lease, Limiter, Permit, RequestKind
from ._models import TaskState, TaskStatus, VideoRequest
from ._parse import parse_status, parse_task_id
from ._retry import Backoff, RetryPolicy
from ._telemetry import api_request

__all__ = ["APICaller", "SendHooks", "is_transient"]

logger = logging.getLogger("sora2_async")

GENERATE_PATH = "/api/sora-2/generate"
STATUS_PATH = "/api/sora-2/check-status"

_MAY_EXIST = (
    " The generate request may have reached the server, so the task may exist and may have "
    "been charged; it was not re-sent. Look for it in the nanophoto.ai dashboard before "
    "submitting it again."
)


class SendHooks(Protocol):
    """What a journal wants to hear of a generate's attempts."""

    async def before_send(self) -> None:
        """Just before the request's bytes go on the wire (record the intent)."""

    async def not_sent(self, reason: str) -> None:
        """The attempt provably created no task (a 429, a refused connection): clear it."""


class _Retry:
    """An error the caller may retry (``rate_limited``: a 429, on its own backoff)."""

    __slots__ = ("error", "not_sent", "retry_after")

    def __init__(
        self, error: Sora2Error, *, retry_after: float | None = None, not_sent: bool = False
    ) -> None:
        self.error = error
        self.retry_after = retry_after
        self.not_sent = not_sent  # provably created nothing: even a generate may go again


class APICaller:
    """Calls the two endpoints through the limiter and the HTTP layer."""

    def __init__(
        self, http: HTTPLayer, limiter: Limiter, retry: RetryPolicy, events: EventHub
    ) -> None:
        self.http = http
        self.limiter = limiter
        self.retry = retry
        self.events = events
        self.calm = Calm(limiter.rate_limit.per)  # the pause after 429s in a row
        # Requests admitted after a 429 that came while they waited go one at a time (not
        # the scheduler's edge lock: its holder waits for admission holding it, and these
        # hold a slot each; with a limit tightened below their number, neither would go).
        self._after_429 = anyio.Lock()
        # The others, while 429s come in a row (see _calmed): one lock for polls, one for
        # generates, as a generate's admission may wait for the final polls promised to
        # the videos before it (a poll waiting behind it would never come).
        self._in_a_run = {generate: anyio.Lock() for generate in (False, True)}

    async def generate(
        self,
        request: VideoRequest,
        *,
        promise: float | None = None,
        hooks: SendHooks | None = None,
    ) -> tuple[str, Lease | None]:
        """Submit ``request``; return its ``taskId`` and the lease of its final poll.

        With ``promise`` (seconds from now), the generate waits until its video's final poll
        fits when it falls due, and promises it (the returned lease; ``None`` without).
        Cancellation cannot interrupt the generate once it is on its way: its answer, the
        task id, is worth the wait (the HTTP timeout bounds it), or a paid task would be
        lost. ``hooks`` hear of each attempt (a journal records the intent there).

        Raises:
            APIError: the API refused it (a subclass by code); a ``ServerError`` says the task
                may exist.
            APIConnectionError: no answer; ``request_sent`` says whether the task may exist.
            ResponseValidationError: an accepted answer without a usable ``taskId``.
        """
        answer, lease = await self._call(
            GENERATE_PATH, request.to_wire(), RequestKind.GENERATE, promise=promise, hooks=hooks
        )
        try:
            if answer.body is None:
                assert answer.error is not None
                raise ResponseValidationError(f"{answer.error}.{_MAY_EXIST}", field="<body>")
            try:
                return parse_task_id(answer.body), lease
            except ResponseValidationError as exc:  # accepted without a usable id: it exists
                raise ResponseValidationError(f"{exc}.{_MAY_EXIST}", field=exc.field) from None
        except BaseException:
            await self._give_back(lease)  # no task to poll
            raise

    async def check_status(
        self,
        task_id: str,
        *,
        kind: RequestKind = RequestKind.POLL,
        retry: bool = True,
    ) -> TaskStatus | None:
        """One status of ``task_id`` (retried as needed; every attempt spends budget).

        ``retry=False`` makes one attempt: the scheduler's pollers retry on their own plan,
        never faster than the minimum poll interval.

        After a 429, every request of this client waits out a pause (see ``_calm``). One
        admitted after a 429 that came while it waited for admission goes after the pause,
        one at a time with any others so admitted, and not at all if another 429 comes
        meanwhile (it would only be refused too): with ``retry=False`` it is given up
        (``None``: a poller plans it again), else it asks the budget again.

        ``None`` when nothing was sent: an extra poll the budget could not spare now (or
        asked during the pause), or a poll held back as above.

        Raises:
            TaskNotFoundError: unknown task, or another key's.
            APIError, APIConnectionError: when retries are exhausted.
            ResponseValidationError: an answer that breaks the contract.
        """
        try:
            answer, _ = await self._call(STATUS_PATH, {"taskId": task_id}, kind, retry=retry)
        except _Skipped:
            return None
        body = answer.body
        assert body is not None
        if answer.status_code >= 400:  # a failed task's 500 body
            body = {"taskId": task_id, "status": TaskState.FAILED.value, **body}
        return parse_status(body, task_id=task_id)

    # -- one call: admit, send, classify, retry --------------------------------------------------

    async def _call(
        self,
        path: str,
        body: Mapping[str, Any],
        kind: RequestKind,
        *,
        promise: float | None = None,
        hooks: SendHooks | None = None,
        retry: bool = True,
    ) -> tuple[Answer, Lease | None]:
        idempotent = path == STATUS_PATH
        errors = self.retry.for_errors(retries=None if retry else 0)
        rate_limits = self.retry.for_rate_limits(retries=None if retry else 0)
        lease: Lease | None = None
        attempt = 0
        try:
            while True:
                attempt += 1
                asked = anyio.current_time()
                # The turns taken after a 429 are let go after the permit ends: by then the
                # store has counted a 429 of this one, for the next in turn to see.
                async with AsyncExitStack() as turns:
                    await self._calmed(kind, turns)
                    refused = self.limiter.last_state.rate_limited
                    admitted = await self._admit(kind, promise)
                    async with admitted as permit:
                        lease = lease or permit.lease
                        promise = None  # promised on the first admission only
                        held = await self._held_back(refused, turns)
                        if not held:
                            outcome = await self._attempt(path, body, attempt, asked, hooks)
                            if isinstance(outcome, _Retry) and isinstance(
                                outcome.error, RateLimitError
                            ):
                                permit.rate_limited(outcome.retry_after)
                if held:
                    if idempotent and not retry:
                        raise _Skipped  # its poller plans it again
                    attempt -= 1
                    continue
                if isinstance(outcome, Answer):
                    return outcome, lease
                kind = RequestKind.POLL if kind is RequestKind.EXTRA_POLL else kind  # a retry waits
                await self._before_retry(outcome, path, errors, rate_limits, hooks)
        except BaseException:
            await self._give_back(lease)
            raise

    async def _attempt(
        self,
        path: str,
        body: Mapping[str, Any],
        attempt: int,
        asked: float,
        hooks: SendHooks | None,
    ) -> Answer | _Retry:
        """One admitted attempt: sent, recorded, and told to the pause after 429s."""
        sent_at = anyio.current_time()
        with api_request(_KIND[path], body, attempt, sent_at - asked, self.limiter) as record:
            outcome = await self._send(path, body, attempt, path == STATUS_PATH, hooks)
            record.answered(*_answered(outcome))
        if isinstance(outcome, _Retry) and isinstance(outcome.error, RateLimitError):
            self.calm.refused(sent_at)
        elif isinstance(outcome, Answer):
            self.calm.answered(sent_at)
        return outcome

    async def _held_back(self, refused: int, turns: AsyncExitStack) -> bool:
        """Whether an admitted request stays unsent.

        A 429 came while it waited for admission (what let it go with others, a share of
        the window seen before, is stale): it waits for the others so admitted, one at a
        time, and the pause, and stays unsent if another 429 came meanwhile (the server's
        window is full: it would be refused too). Its slot stays spent: the stores count
        what they admitted. (The turn is ``turns``' to let go, after the permit ends.)
        """
        if self.limiter.last_state.rate_limited <= refused:
            return False
        refused = self.limiter.last_state.rate_limited
        await turns.enter_async_context(self._after_429)
        await self.calm.wait()
        return self.limiter.last_state.rate_limited > refused

    async def _calmed(self, kind: RequestKind, turns: AsyncExitStack) -> None:
        """Wait out the pause after 429s; until an answer ends their run, one request at a
        time (after a pause, the limiter would let all that waited go at once, into a
        window that may be as full as it was). An extra poll is not worth it: skipped."""
        if kind is RequestKind.EXTRA_POLL and (self.calm.pausing() or self.calm.in_a_run()):
            raise _Skipped
        if self.calm.in_a_run():
            await turns.enter_async_context(self._in_a_run[kind is RequestKind.GENERATE])
        await self.calm.wait()

    async def _admit(
        self, kind: RequestKind, promise: float | None
    ) -> AbstractAsyncContextManager[Permit]:
        if kind is RequestKind.EXTRA_POLL:
            # Spends only idle budget: when none is free now, skip rather than wait.
            admitted = await self.limiter.try_permit(kind)
            if admitted is None:
                raise _Skipped
            return admitted
        if self.events:  # a progress display wants to know why nothing moves
            state = self.limiter.last_state
            if state.available <= int(promise is not None) or state.blocked_for > 0:
                self.events.emit(EventKind.WAITING_FOR_BUDGET, budget=state)
        return self.limiter.permit(kind, promise=promise)

    async def _send(
        self,
        path: str,
        body: Mapping[str, Any],
        attempt: int,
        idempotent: bool,
        hooks: SendHooks | None,
    ) -> Answer | _Retry:
        """One exchange, classified: a result, or a ``_Retry``; a final error is raised."""
        async with self.http.slot():
            # A generate on its way is worth its answer: from the intent on, nothing cancels
            # it (the HTTP timeout bounds the wait). A poll needs no scope (one costs 7 µs
            # on asyncio, 17 on trio, of each poll).
            with _UNSHIELDED if idempotent else anyio.CancelScope(shield=True):
                if hooks is not None:
                    await hooks.before_send()
                try:
                    answer = await self.http.send(path, body, attempt=attempt)
                except ResponseValidationError as exc:  # sent, but undecodable
                    if not idempotent:
                        raise ResponseValidationError(
                            f"{exc}.{_MAY_EXIST}", field=exc.field
                        ) from None
                    return _Retry(exc)
                except APIConnectionError as exc:
                    if exc.request_sent:
                        if not idempotent:
                            raise type(exc)(f"{exc}.{_MAY_EXIST}", request_sent=True) from None
                        return _Retry(exc)
                    return _Retry(exc, not_sent=True)
        return _classify(path, answer, idempotent)

    async def _before_retry(
        self,
        outcome: _Retry,
        path: str,
        errors: Backoff,
        rate_limits: Backoff,
        hooks: SendHooks | None,
    ) -> None:
        """Wait before the next attempt, or raise the error when retries are spent."""
        error = outcome.error
        if hooks is not None and outcome.not_sent:
            with anyio.CancelScope(shield=True):
                await hooks.not_sent(str(error))
        if isinstance(error, RateLimitError):
            self.events.emit(EventKind.RATE_LIMITED, budget=self.limiter.last_state)
            # The limiter now holds everyone back until the window frees; a short,
            # jittered pause keeps retries of many callers from landing in one instant.
            wait = rate_limits.next(retry_after=outcome.retry_after)
        else:
            wait = errors.next(retry_after=outcome.retry_after)
        if wait is None:
            raise error
        logger.debug("retrying POST %s after %s (retry %d)", path, error, errors.retries)
        await anyio.sleep(wait)

    async def _give_back(self, lease: Lease | None) -> None:
        if lease is not None:
            with anyio.CancelScope(shield=True):
                await self.limiter.release(lease)


_KIND = {GENERATE_PATH: "generate", STATUS_PATH: "check_status"}
_UNSHIELDED = nullcontext()  # reusable: it holds no state


def _answered(outcome: Answer | _Retry) -> tuple[int | None, BaseException | None]:
    if isinstance(outcome, Answer):
        return outcome.status_code, None
    status = outcome.error.status_code if isinstance(outcome.error, APIError) else None
    return status, outcome.error


class _Skipped(Exception):
    """Nothing was sent: an extra poll found no idle budget or the pause after a 429, or a
    poll admitted after a 429 saw another come while it waited its turn."""


def _classify(path: str, answer: Answer, idempotent: bool) -> Answer | _Retry:
    """The result of one answer: itself, a ``_Retry``, or a final error (raised)."""
    status = answer.status_code
    if _is_failed_task(path, answer) or (
        200 <= status < 300 and (answer.body is not None or not idempotent)
    ):
        return answer
    if answer.body is None and status < 300:
        # A status cut off on the way: as passing as a 5xx, and as safe to ask again
        # (a lost paid video is the alternative).
        assert answer.error is not None
        return _Retry(answer.error)
    error = error_for_response(status, answer.body)
    if isinstance(error, RateLimitError):
        error.retry_after = answer.retry_after
        return _Retry(error, retry_after=answer.retry_after, not_sent=True)
    if isinstance(error, ServerError):
        if not idempotent:
            error.message += _MAY_EXIST
            raise error
        return _Retry(error, retry_after=answer.retry_after)
    if idempotent and is_transient(error):
        # A proxy's page (HTML 404, 401 without the API's errorCode) says nothing of the
        # task: passing, like a 5xx.
        return _Retry(error)
    raise error


def is_transient(error: Sora2Error) -> bool:
    """Whether a failed status check may succeed when asked again: no answer, a 5xx, a 429,
    a broken answer, or an error page that is not the API's (a proxy's)."""
    if isinstance(error, (APIConnectionError, ResponseValidationError, ServerError)):
        return True
    if isinstance(error, RateLimitError):
        return True
    return isinstance(error, APIError) and not _in_contract_shape(error)


def _in_contract_shape(error: APIError) -> bool:
    return error.body is not None and error.error_code is not None


def _is_failed_task(path: str, answer: Answer) -> bool:
    """A check-status answered GENERATION_FAILED: the polled task's status, not an error.

    The contract sends it as HTTP 500 with the ``taskId``; without one it still speaks of
    the task that was asked about.
    """
    body = answer.body
    if path != STATUS_PATH or body is None or body.get("errorCode") != "GENERATION_FAILED":
        return False
    task_id = body.get("taskId")
    return (task_id is None or isinstance(task_id, str)) and body.get(
        "status", TaskState.FAILED.value
    ) == TaskState.FAILED.value
