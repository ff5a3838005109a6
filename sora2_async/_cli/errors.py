"""The command line's one error type: a line for the user, and the exit status with it."""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # pragma: no cover - the builtin from 3.11 on
    from exceptiongroup import BaseExceptionGroup

__all__ = ["CLIError", "sole_exception"]


class CLIError(Exception):
    """A one-line error for the user, and the exit status that goes with it."""

    def __init__(self, message: str, *, code: int = 2) -> None:
        self.code = code
        super().__init__(message)


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` (nested groups looked into), or ``None``.

    coredis's client runs a task group for as long as it is open, so an error raised while
    a Redis store is open comes out of it wrapped: it is still the user's one line.
    """
    inner = group.exceptions
    if len(inner) != 1:
        return None
    return sole_exception(inner[0]) if isinstance(inner[0], BaseExceptionGroup) else inner[0]
