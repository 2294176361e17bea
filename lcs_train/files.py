"""Writing output files so that nothing half-written is ever seen or left behind.

Three pieces, used by every file lcs-train writes:

- ``atomic_write``: write a temporary sibling named ``.NAME.PID.RANDOM.tmp``, fsync it,
  rename it over ``NAME`` and fsync the directory. A reader sees the old file or the new
  one, never a partial one, and a crash at any point leaves the old file intact.
- ``remove_stale_temporaries``: a SIGKILL leaves the temporary behind; the pid in its name
  tells a later run whether its writer is dead, so only dead writers' files are removed.
- ``exclusive_output``: an ``fcntl`` lock on ``.NAME.lock`` so that a second process writing
  the same output is refused with a clear message instead of racing the first.

``LCS_TEST_PAUSE_AT=<step>`` (test-only) makes a save stop at a named step (``created``,
``written``, ``synced``, ``renamed``) and wait to be killed, so that tests can interrupt a
save at each step; it prints ``lcs-test-paused <step>`` on stderr when it gets there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from lcs_train.errors import LcsError

#: Environment variable of the test-only pause hook (see the module docstring).
PAUSE_ENV = "LCS_TEST_PAUSE_AT"
#: The steps of ``atomic_write`` a test can pause at, in order.
SAVE_STEPS = ("created", "written", "synced", "renamed")

# Hints for the file-system errors a user can cause, by errno.
_OS_ERROR_HINTS = {
    errno.EACCES: "you have no permission to write there; choose another path or fix its permissions",
    errno.EPERM: "you have no permission to write there; choose another path or fix its permissions",
    errno.EROFS: "that file system is read-only; choose a path on a writable one",
    errno.ENOSPC: "the disk is full; free some space or choose another path",
    errno.EDQUOT: "the disk quota is exhausted; free some space or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a directory; fix the path",
    errno.EISDIR: "the path is a directory; give a file path",
    errno.ENOENT: "a directory on the path does not exist or cannot be created there; check the path",
    errno.EEXIST: "something is already there; remove it or choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.EINVAL: "that file system does not accept such a file; choose a path on an ordinary disk",
}


def user_error_from_os_error(error: OSError, action: str | None = None) -> LcsError:
    """One clear ``LcsError`` for a file-system error: what failed, on which path, and the fix."""
    path = error.filename if error.filename is not None else None
    reason = error.strerror or str(error)
    if path is None:
        message = f"file-system error: {reason}"
    elif action is None:
        message = f"cannot use {os.fsdecode(path)}: {reason}"
    else:
        message = f"cannot {action} {os.fsdecode(path)}: {reason}"
    hint = _OS_ERROR_HINTS.get(error.errno or 0, "check the path and the file system")
    return LcsError(message, hint)


def temporary_sibling(path: Path) -> Path:
    """Where ``atomic_write`` stages ``path``: hidden, in the same directory (so the rename
    is atomic), and named with this process's pid so a later run can tell it is stale."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _writer_pid(path: Path, temporary: Path) -> int | None:
    """The pid in a temporary's name, or None when the name is not one of ours."""
    prefix = f".{path.name}."
    if not (temporary.name.startswith(prefix) and temporary.name.endswith(".tmp")):
        return None
    pid = temporary.name[len(prefix):-len(".tmp")].split(".")[0]
    return int(pid) if pid.isdigit() else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by writers that no longer run (a SIGKILL, a
    power cut). A live writer's temporary is left alone. Returns what was removed."""
    removed = []
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        pid = _writer_pid(path, candidate)
        if pid is None or pid == os.getpid() or process_alive(pid):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except FileNotFoundError:
            pass
    return removed


def pause_point(step: str) -> None:
    """Test-only: stop at ``step`` when ``LCS_TEST_PAUSE_AT`` names it, until killed.

    It says so on stderr (``lcs-test-paused <step>``) and, when ``LCS_TEST_PAUSE_FILE`` is
    set, writes its pid there; it waits ``LCS_TEST_PAUSE_SECONDS`` (default 60, so a
    forgotten variable cannot hang a real run for long). Saves and exports share it.
    """
    if os.environ.get(PAUSE_ENV) != step:
        return
    print(f"lcs-test-paused {step}", file=sys.stderr, flush=True)
    signal_file = os.environ.get("LCS_TEST_PAUSE_FILE")
    if signal_file:
        Path(signal_file).write_text(str(os.getpid()))
    deadline = time.monotonic() + float(os.environ.get("LCS_TEST_PAUSE_SECONDS", "60"))
    while time.monotonic() < deadline:
        time.sleep(0.05)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (some file systems cannot; that is not an error)."""
    try:
        handle = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(handle)`` so that it is replaced whole or not at all.

    The file gets the mode any new file of the user gets (0666 less the umask), like the
    bundles lcs-export writes. Any exception, KeyboardInterrupt included, removes the
    temporary and leaves an existing ``path`` untouched.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    temporary = temporary_sibling(path)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as error:
        raise _cannot("write", "", path, error) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            pause_point("created")
            write(handle)
            handle.flush()
            pause_point("written")
            # Durable before the rename: otherwise a power cut can leave the new name
            # pointing at an empty file.
            os.fsync(handle.fileno())
        pause_point("synced")
        os.replace(temporary, path)
        pause_point("renamed")
        fsync_directory(path.parent)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            # A full disk or a vanished directory mid-write: name the file being written,
            # not its hidden temporary.
            raise _cannot("write", "", path, error) from None
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``atomic_write`` of a bytes object."""
    return atomic_write(path, lambda handle: handle.write(data))


def check_writable_output(path: str | Path, option: str = "--out") -> Path:
    """Fail now, before any work, if ``path`` cannot be written: it is a directory, a part of
    it is a file, the file system is read-only, or the user lacks permission. Probes with a
    temporary file where the real save will put its own (creating missing directories), then
    removes the probe and the directories it created."""
    path = Path(path)
    if path.is_dir():
        raise LcsError(f"{option} {path} is a directory", f"give a file path, e.g. {path / 'subspace.safetensors'}")
    # Directories made only to probe are removed again: a run refused later writes nothing.
    created = [parent for parent in path.parents if not parent.exists()]
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as error:
            raise LcsError(
                f"cannot create the directory of {option} {path}: {error.filename} is a file",
                "a part of the path is a file, not a directory; fix the path",
            ) from None
        except OSError as error:
            raise _cannot("create the directory of", option, path, error) from None
        remove_stale_temporaries(path)
        probe = temporary_sibling(path)
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            probe.unlink()
        except OSError as error:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass
            raise _cannot("write", option, path, error) from None
    finally:
        for directory in created:  # deepest first
            try:
                directory.rmdir()
            except OSError:
                pass
    return path


def _cannot(action: str, option: str, path: Path, error: OSError) -> LcsError:
    """``cannot <action> <option> <path>: <reason>`` with the errno's hint."""
    subject = f"{option} {path}" if option else str(path)
    return LcsError(
        f"cannot {action} {subject}: {error.strerror or error}",
        _OS_ERROR_HINTS.get(error.errno or 0, "check the path and the file system"),
    )


# Locks this process holds, by absolute path, with their depth (the lock is re-entrant, so a
# save inside a training run that holds its output's lock does not lock itself out).
_held_locks: dict[str, int] = {}


def lock_path_for(path: Path) -> Path:
    """The lock file guarding ``path``."""
    return path.parent / f".{path.name}.lock"


@contextmanager
def exclusive_output(path: str | Path, option: str = "--out") -> Iterator[None]:
    """Hold the write lock of ``path`` for the block; refuse (``LcsError``) when another
    process holds it. The lock file is removed when the block ends; one left by a killed
    process is harmless (the kernel released its lock) and removed by the next writer."""
    path = Path(path)
    key = os.path.abspath(path)
    if key in _held_locks:
        _held_locks[key] += 1
        try:
            yield
        finally:
            _held_locks[key] -= 1
        return
    lock_file = lock_path_for(path)
    # Directories made for the lock are removed at the end if the run wrote nothing there.
    created = [parent for parent in path.parents if not parent.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _cannot("create the directory of", option, path, error) from None
    while True:
        try:
            descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as error:
            raise _cannot("write", option, path, error) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise LcsError(
                f"{option} {path} is being written by another process (pid {holder})",
                "wait for that run to finish, or choose another output path",
            ) from None
        # The previous holder unlinks the lock file as it releases it: a lock taken on that
        # unlinked file guards nothing, so start again with the current file.
        try:
            current = os.stat(lock_file).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    _held_locks[key] = 1
    try:
        yield
    finally:
        del _held_locks[key]
        lock_file.unlink(missing_ok=True)
        os.close(descriptor)
        for directory in created:  # deepest first; a directory holding anything stays
            try:
                directory.rmdir()
            except OSError:
                break
