"""Writing output files so that nothing half-written is ever seen or left behind.

The file-safety primitives of lcs, one implementation each; lcs-train's checkpoints and
reports and lcs-export's bundles (``lcs_export.atomic``, which adds only what is particular
to a directory: its staging names, modes and swap) both use them:

- ``atomic_write``: write a temporary sibling named ``.NAME.PID.RANDOM.tmp``, fsync it,
  rename it over ``NAME`` and fsync the directory. A reader sees the old file or the new
  one, never a partial one, and a crash at any point leaves the old file intact. It raises
  ``LcsError``; ``replace_atomically`` is the same write raising the ``OSError`` itself, for
  callers that handle a failed write (``write_json_atomic`` is one).
- ``remove_stale_siblings``: a SIGKILL leaves a temporary (or a bundle's staging directory)
  behind; the pid in its name, ``.NAME.PID.RANDOM.SUFFIX`` (``sibling_name``), tells a later
  run whether its writer is dead, so only dead writers' leftovers are removed.
- ``FileLock``: an ``fcntl.flock`` on ``.NAME.lock``, exclusive or shared, waiting a while or
  not at all, removed by its last holder. ``exclusive_output`` is lcs-train's re-entrant
  use of it: a second process writing the same output is refused with a clear message
  instead of racing the first.

``LCS_TEST_PAUSE_AT=<step>`` (test-only) makes a save stop at a named step (``created``,
``written``, ``synced``, ``renamed``) and wait to be killed, so that tests can interrupt a
save at each step; it prints ``lcs-test-paused <step>`` on stderr when it gets there.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Self

from lcs_train.errors import LcsError

#: Environment variable of the test-only pause hook (see the module docstring).
PAUSE_ENV = "LCS_TEST_PAUSE_AT"
#: The steps of ``atomic_write`` a test can pause at, in order.
SAVE_STEPS = ("created", "written", "synced", "renamed")
#: The suffix of ``atomic_write``'s temporaries.
TEMPORARY_SUFFIX = ".tmp"

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


def sibling_name(path: Path, suffix: str) -> Path:
    """A new hidden sibling of ``path`` for staging it, ``.NAME.PID.RANDOM<suffix>``: in the
    same directory (so the rename is atomic), with this process's pid so that a later run can
    tell it is stale (``remove_stale_siblings``)."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def temporary_sibling(path: Path) -> Path:
    """Where ``atomic_write`` stages ``path``: ``.NAME.PID.RANDOM.tmp``."""
    return sibling_name(path, TEMPORARY_SUFFIX)


def writer_pid(name: str, target_name: str, suffixes: tuple[str, ...]) -> int | None:
    """The pid in ``name`` when it is a ``sibling_name`` of ``target_name`` with one of
    ``suffixes``, else None (another file's, or not one of ours)."""
    prefix = f".{target_name}."
    if not name.startswith(prefix) or not name.endswith(suffixes):
        return None
    parts = name[len(prefix):].split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0])


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


def remove_tree(path: Path) -> None:
    """Delete a directory tree (or file, or link), ignoring what is already gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_siblings(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Remove the ``sibling_name``s of ``path`` with one of ``suffixes`` left by writers that
    no longer run (a SIGKILL, a power cut): files and directory trees alike. A live writer's
    are left alone, and so are other outputs'. Returns what was removed."""
    removed = []
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        pid = writer_pid(candidate.name, path.name, suffixes)
        if pid is None or pid == os.getpid() or process_alive(pid):
            continue
        remove_tree(candidate)
        removed.append(candidate)
    return removed


def remove_stale_temporaries(path: Path) -> list[Path]:
    """``remove_stale_siblings`` for ``atomic_write``'s temporaries of ``path``."""
    return remove_stale_siblings(path, (TEMPORARY_SUFFIX,))


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


def fsync_path(path: str | Path, directory: bool = False) -> None:
    """fsync a file, or a directory's entry list; a file system that cannot fsync a directory
    (EINVAL, EROFS) is no error, any other failure is raised."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        os.close(descriptor)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable. Called once the rename is done, so a failure
    here cannot undo it and is no error: some file systems cannot."""
    try:
        fsync_path(directory, directory=True)
    except OSError:
        pass


def replace_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(handle)`` so that it is replaced whole or not at all.

    The file gets the mode any new file of the user gets (0666 less the umask), like the
    bundles lcs-export writes. Any exception, KeyboardInterrupt included, removes the
    temporary and leaves an existing ``path`` untouched; an ``OSError`` is raised as it is
    (``atomic_write`` turns it into a user error).
    """
    path = Path(path)
    remove_stale_temporaries(path)
    temporary = temporary_sibling(path)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
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
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """``replace_atomically``, a failure being one ``LcsError`` that names ``path`` (a full
    disk or a vanished directory mid-write), not its hidden temporary."""
    try:
        return replace_atomically(path, write)
    except OSError as error:
        raise _cannot("write", "", Path(path), error) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``atomic_write`` of a bytes object."""
    return atomic_write(path, lambda handle: handle.write(data))


def json_bytes(data: Any) -> bytes:
    """How lcs writes a JSON file: indented, NaN and Infinity refused (``ValueError``), a
    final newline."""
    return (json.dumps(data, indent=2, allow_nan=False) + "\n").encode()


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON (``json_bytes``) to ``path`` with ``replace_atomically``.
    Raises ``OSError`` when it cannot be written: a caller may have somewhere else to put it."""
    encoded = json_bytes(data)
    return replace_atomically(path, lambda handle: handle.write(encoded))


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
        _remove_created(created)
    return path


def _cannot(action: str, option: str, path: Path, error: OSError) -> LcsError:
    """``cannot <action> <option> <path>: <reason>`` with the errno's hint."""
    subject = f"{option} {path}" if option else str(path)
    return LcsError(
        f"cannot {action} {subject}: {error.strerror or error}",
        _OS_ERROR_HINTS.get(error.errno or 0, "check the path and the file system"),
    )


def lock_path_for(path: Path) -> Path:
    """The lock file guarding ``path``: ``.NAME.lock`` next to it."""
    return path.parent / f".{path.name}.lock"


class FileLock:
    """An ``fcntl.flock`` on ``lock_path_for(path)``, held from ``acquire`` to ``release``.

    ``exclusive`` for writers, shared for readers; a lock another process holds is tried
    again for ``wait`` seconds, then refused with ``busy(holder)`` (``holder``: the pid an
    exclusive holder wrote into the file, or ``unknown``). When the lock file cannot be
    created, ``unwritable(error)`` is raised; where ``unwritable`` is None (or returns None)
    an existing lock file is locked read-only instead, or the block runs without a lock (a
    read-only place: nobody can write there either). Whoever can hold the lock alone as it
    releases it removes the file, so nothing is left behind; one left by a killed process is
    harmless (the kernel released its lock). Not re-entrant: a second ``FileLock`` on the
    same path in the same process is another holder.
    """

    def __init__(
        self,
        path: str | Path,
        exclusive: bool,
        wait: float,
        busy: Callable[[str], LcsError],
        unwritable: Callable[[OSError], LcsError | None] | None = None,
    ) -> None:
        self.target = Path(os.path.abspath(path))
        self.path = lock_path_for(self.target)
        self.exclusive = exclusive
        self.wait = wait
        self.busy = busy
        self.unwritable = unwritable
        self.fd: int | None = None

    def acquire(self) -> Self:
        deadline = time.monotonic() + self.wait
        mode = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        while True:
            descriptor = self._open()
            if descriptor is None:
                return self
            try:
                fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    try:
                        holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
                    except OSError:
                        holder = "unknown"
                    os.close(descriptor)
                    raise self.busy(holder) from None
                os.close(descriptor)
                time.sleep(0.05)
                continue
            # The previous holder unlinks the lock file as it releases it: a lock taken on
            # that unlinked file guards nothing, so start again with the current file.
            try:
                current = os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(descriptor)
        if self.exclusive:
            try:  # who holds it, for the message of the next one refused
                os.ftruncate(descriptor, 0)
                os.write(descriptor, f"{os.getpid()}\n".encode())
            except OSError:  # a lock file locked read-only
                pass
        self.fd = descriptor
        return self

    def _open(self) -> int | None:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as error:
            refusal = self.unwritable(error) if self.unwritable is not None else None
            if refusal is not None:
                raise refusal from None
        try:  # a read-only place: an existing lock file can still be locked
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            # Whoever can hold it alone removes the file; a failed upgrade only means
            # another reader still has it, and that one will remove it.
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                os.unlink(self.path)
            except OSError:
                pass
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _remove_created(created: list[Path]) -> None:
    """Remove the directories a run created (deepest first) where it left nothing in them."""
    for directory in created:
        try:
            directory.rmdir()
        except OSError:
            break


# Outputs this process holds the lock of, by absolute path, with their depth (the lock is
# re-entrant, so a save inside a training run that holds its output's lock does not lock
# itself out).
_held_locks: dict[str, int] = {}


@contextmanager
def exclusive_output(path: str | Path, option: str = "--out") -> Iterator[None]:
    """Hold the write lock (``FileLock``) of ``path`` for the block; refuse (``LcsError``) at
    once when another process holds it. Re-entrant within a process."""
    path = Path(path)
    key = os.path.abspath(path)
    if key in _held_locks:
        _held_locks[key] += 1
        try:
            yield
        finally:
            _held_locks[key] -= 1
        return
    # Directories made for the lock are removed at the end if the run wrote nothing there.
    created = [parent for parent in path.parents if not parent.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _cannot("create the directory of", option, path, error) from None
    lock = FileLock(
        path, exclusive=True, wait=0,
        busy=lambda holder: LcsError(
            f"{option} {path} is being written by another process (pid {holder})",
            "wait for that run to finish, or choose another output path",
        ),
        unwritable=lambda error: _cannot("write", option, path, error),
    )
    try:
        lock.acquire()
    except BaseException:
        _remove_created(created)
        raise
    _held_locks[key] = 1
    try:
        yield
    finally:
        del _held_locks[key]
        lock.release()
        _remove_created(created)
