"""Writing a bundle safely: one lock per output, a staging directory, fsync, and one atomic swap.

The sequence every writer follows (``bundle.staged_bundle``):

1. ``prepare_parent``: the output's parent is created if missing; a file in the way, a
   read-only file system or a place like /proc is a user error *before* any work starts.
2. ``BundleLock``: an ``fcntl.flock`` on ``.<name>.lock`` next to the bundle
   (``lcs_train.files.FileLock``, the lock lcs-train's outputs use too). Exports and
   ``validate`` hold it exclusively, ``inspect`` shared; a second process waits up to
   ``LOCK_WAIT_SECONDS`` and is then refused with a message (exit 2). The last holder
   removes the lock file, so nothing is left next to a bundle after a command ends.
3. ``remove_stale_staging``: staging (``.<name>.<pid>.<random>.partial``) and retired
   (``.<name>.<pid>.<random>.old``) directories whose process is dead (SIGKILL, power loss)
   are deleted; the pid is part of the name (``lcs_train.files.remove_stale_siblings``, which
   also cleans lcs-train's temporaries).
4. The new bundle is written and validated in its staging directory.
5. ``commit``: file and directory modes are set from the umask (files 0666 & ~umask,
   directories 0777 & ~umask: 0644 / 0755 with the usual 022), every file and directory is
   fsynced, and the staging directory is put in place with ``renameat2(RENAME_NOREPLACE)``
   (new output) or ``renameat2(RENAME_EXCHANGE)`` (replacing an old bundle: one atomic
   step, there is never a moment without a bundle at the output). The parent is fsynced.
   Where renameat2 is missing (not Linux, or a file system without it) the fallback is two
   renames, old bundle aside first, deleted only once the new one is in place.
   Ctrl-C is held off for the few system calls of the swap so that it cannot split it.

Test hook (tests only, never set it in production): ``LCS_TEST_PAUSE_AT=<step>`` with
``LCS_TEST_PAUSE_FILE=<path>`` makes the process write its pid to that file at the named
step (see ``PAUSE_STEPS``) and sleep, so a test can send SIGINT or SIGKILL at exactly that
point of an export (``lcs_train.files.pause_point``, shared with checkpoint saves).

The primitives themselves (the lock, stale cleanup, fsync, the pause hook, atomic file
writes) are ``lcs_train.files``'s; this module keeps what is particular to a bundle
directory.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lcs_train.errors import LcsError
from lcs_train.files import FileLock, fsync_path, remove_stale_siblings, sibling_name

STAGING_SUFFIX = ".partial"
RETIRED_SUFFIX = ".old"
#: How long a second process waits for a bundle another one holds before it is refused.
LOCK_WAIT_SECONDS = float(os.environ.get("LCS_LOCK_WAIT", "2"))
#: The points of an export the test hook can stop at, in order.
PAUSE_STEPS = ("staged", "artifacts", "manifest", "validated", "swapped")

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def umask() -> int:
    """The process umask (reading it means setting it; it is restored at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe(error: OSError) -> str:
    return error.strerror or type(error).__name__


def prepare_parent(output: Path) -> Path:
    """Create the output's parent directory; refuse a parent that is a file or not writable.

    Returns the absolute output path. Raises ``LcsError`` (exit 2) naming the place and why.
    """
    output = Path(os.path.abspath(output))
    if output.name in ("", ".", ".."):
        raise LcsError(f"output {output} is not a directory name", "give a new directory path with -o/--out")
    for ancestor in [output.parent, *output.parent.parents]:
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise LcsError(f"cannot write the bundle at {output}: {ancestor} is a file, not a directory",
                               "choose an --out path whose parent is a directory")
            break
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LcsError(f"cannot create {output.parent} for the bundle: {_describe(error)}",
                       "choose an --out path on a writable file system") from None
    return output


class BundleBusyError(LcsError):
    """Another process holds the bundle's lock."""


class BundleLock(FileLock):
    """``FileLock`` on ``.<name>.lock`` next to a bundle; see the module docstring.

    ``exclusive`` for writers (export, validate), shared for readers (inspect); a second
    process waits ``LOCK_WAIT_SECONDS`` unless ``wait`` says otherwise. Unless ``required``
    (export), a command on a file system where it cannot create the lock file proceeds
    without one: nobody can write there either.
    """

    def __init__(self, bundle: Path, exclusive: bool, wait: float | None = None, required: bool = False) -> None:
        self.bundle = Path(os.path.abspath(bundle))
        self.required = required
        super().__init__(self.bundle, exclusive, LOCK_WAIT_SECONDS if wait is None else wait,
                         busy=self._busy, unwritable=self._unwritable)

    def _busy(self, holder: str) -> LcsError:
        return BundleBusyError(
            f"bundle {self.bundle} is in use by another lcs-export process (lock {self.path.name})",
            "wait for it to finish, then run this again",
        )

    def _unwritable(self, error: OSError) -> LcsError | None:
        if not self.required:
            return None
        return LcsError(f"cannot write next to {self.bundle}: {_describe(error)} ({self.path})",
                        "choose a bundle location on a writable file system")


def remove_stale_staging(output: Path) -> list[Path]:
    """Delete staging / retired directories of ``output`` left by processes that are dead."""
    return remove_stale_siblings(output, (STAGING_SUFFIX, RETIRED_SUFFIX))


def make_staging(output: Path) -> Path:
    """A new private directory ``.<name>.<pid>.<random>.partial`` next to ``output``."""
    while True:
        staging = sibling_name(output, STAGING_SUFFIX)
        try:
            staging.mkdir(mode=0o700)
            return staging
        except FileExistsError:
            continue
        except OSError as error:
            raise LcsError(f"cannot write the bundle at {output}: {_describe(error)}",
                           "choose an --out path on a writable file system") from None


def normalise_modes(directory: Path) -> None:
    """Files 0666 & ~umask, directories 0777 & ~umask, whatever the writers used.

    coremltools writes parts of a package with mkstemp's 0600, and our staging directory is
    0700 while it is being written; a bundle is meant to be copied and served like any
    other output of a build, so it follows the umask like ``cp`` would.
    """
    mask = umask()
    for root, directories, files in os.walk(directory):
        for name in directories:
            os.chmod(os.path.join(root, name), 0o777 & ~mask, follow_symlinks=False)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)
    os.chmod(directory, 0o777 & ~mask)


def fsync_tree(directory: Path) -> None:
    """fsync every file, then every directory (deepest first), so the rename publishes data."""
    for root, directories, files in os.walk(directory, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                fsync_path(path)
        fsync_path(root, directory=True)


def _renameat2(source: Path, destination: Path, flags: int) -> bool:
    """``renameat2(2)``; False when this platform or file system lacks it (use the fallback)."""
    if not sys.platform.startswith("linux"):
        return False
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:  # glibc < 2.28
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(destination))


@contextmanager
def sigint_deferred() -> Iterator[list[bool]]:
    """Hold Ctrl-C off for a few system calls; a Ctrl-C meanwhile is raised right after.

    Yields a one-element list that is True when a Ctrl-C arrived. Only the main thread can
    change signal handlers; elsewhere this does nothing.
    """
    arrived = [False]
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: arrived.__setitem__(0, True))
    try:
        yield arrived
    finally:
        signal.signal(signal.SIGINT, previous)
    if arrived[0]:
        raise InterruptedAfterCommit


class InterruptedAfterCommit(KeyboardInterrupt):
    """Ctrl-C arrived while the new bundle was being put in place; it is complete."""


def swap_into_place(staging: Path, output: Path) -> Path | None:
    """Put ``staging`` at ``output`` atomically; returns the retired old bundle to delete, if any.

    ``output`` must not exist, or be a directory (the old bundle, already checked).
    """
    if not (output.exists() or output.is_symlink()):
        if _renameat2(staging, output, _RENAME_NOREPLACE):
            return None
        if output.exists():  # the fallback cannot refuse atomically; check as close as we can
            raise FileExistsError(errno.EEXIST, "appeared while exporting", str(output))
        os.rename(staging, output)
        return None
    if _renameat2(staging, output, _RENAME_EXCHANGE):
        return staging  # the old bundle now sits at the staging name
    # Fallback: old aside (under a name whose pid marks it for cleanup), new in, old deleted.
    retired = staging.with_name(staging.name[: -len(STAGING_SUFFIX)] + RETIRED_SUFFIX)
    os.rename(output, retired)
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(retired, output)
        raise
    return retired
