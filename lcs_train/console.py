"""Shared console conventions of the CLIs: one red line per user error (exit code 2), one
line for Ctrl-C (exit code 130), and a clean exit however the run ends.

Both ``lcs-train`` and ``lcs-export`` run their commands inside ``reported_user_errors`` and
their apps through ``run_app``, so every way a user can end a run reads the same.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from lcs_train.errors import LcsError
from lcs_train.files import user_error_from_os_error

console = Console()
error_console = Console(stderr=True)

#: exit code of a user error (bad option, missing or corrupt file, a file-system error)
USER_ERROR = 2
#: exit code of a run stopped by Ctrl-C (128 + SIGINT, what shells report)
INTERRUPTED = 130


def fail(error: LcsError) -> NoReturn:
    """Print a user error in one red line with its hint, and exit with code 2."""
    # Messages carry paths and values from the user: escape them, or a "[/x]" in a file name
    # would be read as rich markup (and crash the printing of the error).
    hint = f" [dim]Fix: {escape(error.hint)}[/dim]" if error.hint else ""
    error_console.print(f"[bold red]error:[/bold red] {escape(error.message)}.{hint}", highlight=False, soft_wrap=True)
    raise SystemExit(USER_ERROR)


# Whether this process has printed its Ctrl-C line (run_app prints one if nothing did).
_interrupt_reported = False


def interrupted(outcome: str) -> NoReturn:
    """Print one line for a Ctrl-C, saying what was kept or not written, and exit with 130."""
    global _interrupt_reported
    _interrupt_reported = True
    error_console.print(f"[bold yellow]interrupted[/bold yellow]; {escape(outcome)}", highlight=False, soft_wrap=True)
    raise SystemExit(INTERRUPTED)


@contextmanager
def reported_user_errors(debug: bool, on_interrupt: str | Callable[[], str] = "nothing was written") -> Iterator[None]:
    """Turn what a user can cause inside the block into one line and an exit code (the
    traceback only with ``--debug``):

    - ``LcsError``: one red line with the fix, exit 2;
    - ``OSError`` (a read-only file system, no permission, a path under a file, a full
      disk): one red line naming the path and the fix, exit 2. It is the user's
      environment, not a failed check, so never exit 1;
    - ``KeyboardInterrupt`` (Ctrl-C): ``interrupted; <on_interrupt>``, exit 130.
      ``on_interrupt`` says what was kept, or is a callable asked at that moment.
    """
    try:
        yield
    except LcsError as error:
        if debug:
            raise
        fail(error)
    except OSError as error:
        if debug:
            raise
        fail(user_error_from_os_error(error))
    except KeyboardInterrupt:
        if debug:
            raise
        interrupted(on_interrupt() if callable(on_interrupt) else on_interrupt)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold a Ctrl-C until the block has finished, then raise it.

    For code that must not be interrupted half-way: a KeyboardInterrupt inside a C
    extension's initialisation (matplotlib's ft2font, for one) surfaces as "ImportError:
    initialization failed" with a traceback, and leaves the module half-imported.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """Click's exception base (Typer vendors click in recent versions)."""
    try:
        from typer._click.exceptions import ClickException  # type: ignore[import-not-found]
    except ImportError:  # Typer releases that depend on click itself
        from click.exceptions import ClickException  # type: ignore[no-redef]
    return (ClickException,)


def run_app(app: typer.Typer, args: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run a Typer app as a command line and return its exit code.

    A usage error (an unknown option, a value of the wrong type, a missing argument) is one
    red line and exit 2 like every other user error, instead of Typer's boxed panel; a
    Ctrl-C outside any command body is one line and exit 130.
    """
    global _interrupt_reported
    _interrupt_reported = False
    name = prog_name or "lcs"
    try:
        command = typer.main.get_command(app)
        result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except _usage_error_types() as error:
        message = error.format_message()  # type: ignore[attr-defined]
        error_console.print(
            f"[bold red]error:[/bold red] {escape(message.rstrip('.'))}. [dim]Fix: see {escape(name)} --help[/dim]",
            highlight=False, soft_wrap=True,
        )
        return USER_ERROR
    except (typer.Abort, KeyboardInterrupt):
        error_console.print("[bold yellow]interrupted[/bold yellow]; nothing was written", highlight=False)
        return INTERRUPTED
    except SystemExit as error:
        return error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    code = result if isinstance(result, int) else 0
    if code == INTERRUPTED and not _interrupt_reported:
        # Typer turns a Ctrl-C that lands outside a command body (while parsing the options)
        # into a silent exit 130; no command had started, so nothing was written.
        error_console.print("[bold yellow]interrupted[/bold yellow]; nothing was written", highlight=False)
    return code


def exit_quietly(code: int) -> NoReturn:
    """Leave the interpreter with ``code`` once the command is done.

    Output is flushed first and Ctrl-C is ignored from here on: a SIGINT that lands during
    interpreter teardown (torch's and matplotlib's exit handlers, daemon threads) would
    otherwise kill the process by signal with its last output unflushed, or abort it with
    "Fatal Python error" (exit 134), after the work was already done. Only for the console
    scripts: the ignored SIGINT also passes to any process started afterwards, so code that
    runs a command in-process calls ``run_app`` instead.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)

