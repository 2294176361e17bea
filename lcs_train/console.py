"""Shared console conventions of the CLIs: one red line per user error, exit code 2."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

from rich.console import Console

from lcs_train.errors import LcsError

console = Console()
error_console = Console(stderr=True)

#: exit code of a user error (bad option, missing or corrupt file)
USER_ERROR = 2


def fail(error: LcsError) -> NoReturn:
    """Print a user error in one red line with its hint, and exit with code 2."""
    hint = f" [dim]Fix: {error.hint}[/dim]" if error.hint else ""
    error_console.print(f"[bold red]error:[/bold red] {error.message}.{hint}", highlight=False, soft_wrap=True)
    raise SystemExit(USER_ERROR)


Command = TypeVar("Command", bound=Callable[..., Any])


@contextmanager
def reported_user_errors(debug: bool) -> Iterator[None]:
    """Turn an ``LcsError`` raised inside the block into one red line and exit code 2
    (the traceback only with ``--debug``)."""
    try:
        yield
    except LcsError as error:
        if debug:
            raise
        fail(error)


def user_errors(command: Command) -> Command:
    """Decorate a CLI command: an ``LcsError`` becomes one red line and exit code 2, unless
    the command was given ``--debug`` (then the traceback is shown)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with reported_user_errors(bool(kwargs.get("debug"))):
            return command(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
