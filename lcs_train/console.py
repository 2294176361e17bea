"""The console conventions of both CLIs (``lcs-train`` and ``lcs-export``), in one module:

- exit codes: 0 success, ``CHECK_FAILED`` (1) a failed check, ``USER_ERROR`` (2) anything a user
  can fix, ``INTERRUPTED`` (130) Ctrl-C;
- one red line per error (``fail``, ``print_error``), one line for Ctrl-C (``interrupted``),
  a clean exit however the run ends (``run_app``, ``exit_quietly``);
- where output goes (``output_console``, ``print_json``) and the progress bar of long steps
  (``make_progress``).

Both CLIs run their commands inside ``reported_user_errors`` and their apps through
``run_app``, so every way a user can end a run reads the same. It lives in ``lcs_train``
because ``lcs_export`` may import ``lcs_train`` and never the reverse.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from lcs_train.errors import LcsError
from lcs_train.files import user_error_from_os_error

console = Console()
error_console = Console(stderr=True)

#: exit code of a failed check (parity, integrity)
CHECK_FAILED = 1
#: exit code of a user error (bad option, missing or corrupt file, a file-system error)
USER_ERROR = 2
#: exit code of a run stopped by Ctrl-C (128 + SIGINT, what shells report)
INTERRUPTED = 130


def _error_line(label: str, markup: str) -> None:
    # Never wrapped, so it stays one line for a script or a log to read.
    error_console.print(f"[bold red]{label}:[/bold red] {markup}", highlight=False, soft_wrap=True)


def print_error(message: str, label: str = "error") -> None:
    """One red line on stderr: ``label: message`` (a failed check says ``parity failed: ...``)."""
    # Messages carry paths and values from the user: escape them, or a "[/x]" in a file name
    # would be read as rich markup (and crash the printing of the error).
    _error_line(label, escape(message))


def fail(error: LcsError) -> NoReturn:
    """Print a user error in one red line with its hint, and exit with code 2."""
    hint = f" [dim]Fix: {escape(error.hint)}[/dim]" if error.hint else ""
    _error_line("error", f"{escape(error.message)}.{hint}")
    raise SystemExit(USER_ERROR)


# Whether this process has printed its Ctrl-C line (run_app prints one if nothing did).
_interrupt_reported = False


def _interrupted_line(outcome: str) -> None:
    said = f"; {escape(outcome)}" if outcome else ""
    error_console.print(f"[bold yellow]interrupted[/bold yellow]{said}", highlight=False, soft_wrap=True)


def interrupted(outcome: str = "") -> NoReturn:
    """Print one line for a Ctrl-C, saying what was kept or not written, and exit with 130."""
    global _interrupt_reported
    _interrupt_reported = True
    _interrupted_line(outcome)
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
        _error_line("error", f"{escape(message.rstrip('.'))}. [dim]Fix: see {escape(name)} --help[/dim]")
        return USER_ERROR
    except (typer.Abort, KeyboardInterrupt):
        _interrupted_line("nothing was written")
        return INTERRUPTED
    except SystemExit as error:
        return error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    code = result if isinstance(result, int) else 0
    if code == INTERRUPTED and not _interrupt_reported:
        # Typer turns a Ctrl-C that lands outside a command body (while parsing the options)
        # into a silent exit 130; no command had started, so nothing was written.
        _interrupted_line("nothing was written")
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


def output_console(json_output: bool) -> Console:
    """Tables go to stdout, or to stderr when stdout carries ``--json``."""
    console = Console(stderr=json_output)
    # Piped output would default to 80 columns, too narrow for the parity table.
    return console if console.is_terminal else Console(stderr=json_output, width=120)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, uncoloured."""
    typer.echo(json.dumps(data, indent=2, allow_nan=False))


def make_progress(console: Console = error_console) -> Progress:
    """The progress bar of long steps (export, validation); vanishes when done. Off when the
    console is not a terminal: there rich would leave a blank line on stderr ahead of the one
    error line a script or a log reads."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal,
    )
