"""Errors a user can cause: each one carries the fix, and the CLIs turn it into exit code 2."""

from __future__ import annotations


class LcsError(Exception):
    """A problem with the user's input (a file, an option, a value), with a hint for the fix.

    The CLIs print ``message`` and ``hint`` in one red line and exit with code 2; anything
    else that escapes is a bug and keeps its traceback.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (fix: {self.hint})"
