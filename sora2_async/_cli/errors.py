"""The command line's one error type: a line for the user, and the exit status with it."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """A one-line error for the user, and the exit status that goes with it."""

    def __init__(self, message: str, *, code: int = 2) -> None:
        self.code = code
        super().__init__(message)
