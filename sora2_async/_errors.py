"""The exceptions of sora2_async, and the one function that maps an API answer to one.

The tree::

    Sora2Error                                  base of everything this SDK raises
    ├── APIError                                the API answered with an error body
    │   ├── AuthenticationError        (401)    LOGIN_REQUIRED
    │   ├── InsufficientCreditsError   (402)    INSUFFICIENT_CREDITS (.required_credits)
    │   ├── InvalidRequestError        (400)    PROMPT_REQUIRED, IMAGE_REQUIRED, ...
    │   │                                       (a ValueError; raised client-side too)
    │   ├── TaskNotFoundError          (404)    TASK_NOT_FOUND
    │   ├── RateLimitError             (429)    API_KEY_RATE_LIMIT_EXCEEDED (.retry_after)
    │   └── ServerError                (5xx)    INTERNAL_ERROR and unknown 5xx
    ├── GenerationFailedError                   a task ended ``failed`` (.status)
    ├── APIConnectionError                      no answer: refused, reset, DNS (.request_sent)
    │   └── APITimeoutError                     no answer in time (also TimeoutError)
    ├── ResponseValidationError                 an answer that breaks the contract (.field)
    ├── BudgetStoreError                        a budget store that cannot be used (a file
    │                                           that is not one, a store out of reach)
    └── WaitTimeoutError                        ``wait(timeout=...)`` ran out (also TimeoutError)

An unknown ``errorCode`` still maps, by HTTP status (:func:`error_for_response`).
No exception text ever contains the API key: messages are built from the server's
``error`` text, the code and the status, never from request headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import TaskStatus

__all__ = [
    "provably_not_created",
    "BudgetStoreError",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "RateLimitError",
    "ResponseValidationError",
    "ServerError",
    "Sora2Error",
    "TaskNotFoundError",
    "WaitTimeoutError",
    "error_for_response",
]


class Sora2Error(Exception):
    """Base class of every exception raised by sora2_async."""


class APIError(Sora2Error):
    """The API answered with an error.

    ``status_code`` is the HTTP status (``None`` for errors raised client-side),
    ``error_code`` the body's ``errorCode`` and ``body`` the parsed JSON body (or ``None``).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.error_code = error_code
        self.body = body
        super().__init__(message)

    def __str__(self) -> str:
        parts = [p for p in (self.error_code, str(self.status_code or "") or None) if p]
        prefix = f"[{' '.join(parts)}] " if parts else ""
        return f"{prefix}{self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r}, "
            f"error_code={self.error_code!r})"
        )


class AuthenticationError(APIError):
    """401 ``LOGIN_REQUIRED``: the API key is missing, wrong or revoked."""


class InsufficientCreditsError(APIError):
    """402 ``INSUFFICIENT_CREDITS``: the account cannot pay for the video.

    ``required_credits`` is what the server said the video needs, when it said it.
    """

    @property
    def required_credits(self) -> int | None:
        """The ``requiredCredits`` of the error body, or ``None`` when absent."""
        value = (self.body or {}).get("requiredCredits")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class InvalidRequestError(APIError, ValueError):
    """400: the request is invalid. Raised client-side too, before any request is sent."""


class TaskNotFoundError(APIError):
    """404 ``TASK_NOT_FOUND``: the task does not exist, or belongs to another key."""


class RateLimitError(APIError):
    """429 ``API_KEY_RATE_LIMIT_EXCEEDED``: the key's hourly budget is spent.

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    retry_after: float | None = None


class ServerError(APIError):
    """5xx: the server failed. For ``generate`` the task may nevertheless exist."""


class GenerationFailedError(Sora2Error):
    """A task ended in the ``failed`` state. ``status`` is its final :class:`TaskStatus`."""

    def __init__(self, status: TaskStatus) -> None:
        self.status = status
        detail = status.error or "video generation failed"
        code = f" [{status.error_code}]" if status.error_code else ""
        super().__init__(f"task {status.task_id} failed{code}: {detail}")


class APIConnectionError(Sora2Error):
    """No answer came back: connection refused or reset, DNS failure, protocol error.

    ``request_sent`` is ``False`` only when the request provably never reached the server
    (the connection was never made); a ``generate`` that may have reached it is not re-sent,
    and its message says that a task may exist.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        self.request_sent = request_sent
        super().__init__(message)


class APITimeoutError(APIConnectionError, TimeoutError):
    """No answer came back in time."""


class ResponseValidationError(Sora2Error):
    """The server's answer breaks the contract. ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class BudgetStoreError(Sora2Error):
    """A budget store cannot be used: a file that is not one (nothing is changed then), a
    database error, a store out of reach."""


class WaitTimeoutError(Sora2Error, TimeoutError):
    """``wait(task, timeout=...)`` ran out before the task finished. The task goes on."""


_BY_CODE: dict[str, type[APIError]] = {
    "LOGIN_REQUIRED": AuthenticationError,
    "API_KEY_RATE_LIMIT_EXCEEDED": RateLimitError,
    "INSUFFICIENT_CREDITS": InsufficientCreditsError,
    "PROMPT_REQUIRED": InvalidRequestError,
    "IMAGE_REQUIRED": InvalidRequestError,
    "IMAGE_URLS_REQUIRED": InvalidRequestError,
    "INVALID_INPUT": InvalidRequestError,
    "TASK_ID_REQUIRED": InvalidRequestError,
    "TASK_NOT_FOUND": TaskNotFoundError,
    "INTERNAL_ERROR": ServerError,
    "GENERATION_FAILED": ServerError,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: AuthenticationError,
    404: TaskNotFoundError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def error_for_response(status_code: int, body: Mapping[str, Any] | None) -> APIError:
    """Build the typed error for an HTTP error answer: by ``errorCode`` first, status second.

    ``body`` is the parsed JSON object, or ``None`` when the body was not one.
    """
    code = body.get("errorCode") if body is not None else None
    code = code if isinstance(code, str) and code else None
    text = body.get("error") if body is not None else None
    if not isinstance(text, str) or not text:
        text = body.get("message") if body is not None else None
    message = text if isinstance(text, str) and text else f"HTTP {status_code}"
    cls = _BY_CODE.get(code) if code else None
    if cls is None:
        cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else APIError
    return cls(message, status_code=status_code, error_code=code, body=body)


def provably_not_created(error: BaseException) -> bool:
    """Whether a failed generate certainly created no task (the API refused it, or it was
    never sent: its budget store failed first); a server error, a lost answer or a broken
    one may hide a task."""
    if isinstance(error, BudgetStoreError):
        return True
    if isinstance(error, APIConnectionError):
        return not error.request_sent
    return isinstance(error, APIError) and not isinstance(error, ServerError)
