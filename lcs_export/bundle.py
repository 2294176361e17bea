"""The bundle directory: how it is staged and put in place, and how its files are read back.

Writing (``staged_bundle``): a lock on the output, a staging directory next to it, and one
atomic swap once the new bundle is complete and validated (``lcs_export.atomic`` has the
details). A failed, refused or interrupted export leaves the output exactly as it was.

Reading (``check_integrity``, ``verified_copy``): a bundle is untrusted input. Every path a
manifest names must be a plain relative path (no ``..``, no absolute path) of a listed
artifact, so that it is covered by a checked sha256. Files are opened one directory at a
time below the bundle with ``O_NOFOLLOW``: a symbolic link anywhere in a bundle, a FIFO, a
device or a socket is refused before it is read (lcs-export never writes them), and a
file's size must match the manifest before a byte of it is hashed, so nothing outside the
bundle is ever read and nothing is read without bound. Validation runs the artifacts from a
verified private copy (``verified_copy``): what runs is exactly what was hashed, and a
runtime that writes next to what it loads (coremltools rewrites a package's
``Manifest.json``) cannot modify the bundle.

Digest of a directory artifact (a Core ML ``.mlpackage``): sha256 over the lines
``<relative posix path>\\0<sha256 of the file>\\n`` for every regular file below it, in sorted
path order. ``bytes`` and ``gzip_bytes`` of a directory are the sums over its files. Any
app or script can recompute this without lcs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcs_export import atomic
from lcs_train.errors import LcsError
from lcs_train.files import fsync_directory, pause_point, remove_tree
from lcs_train.safe_paths import UnsafeFile, path_parts

MANIFEST_NAME = "manifest.json"
PARITY_NAME = "parity.json"
BUNDLE_FORMAT = "lcs-bundle"
_CHUNK = 1 << 20
#: A manifest larger than this is not one lcs-export wrote (the demo's is tens of KiB).
MAX_MANIFEST_BYTES = 64 << 20
#: Bounds on a directory artifact: an .mlpackage has a handful of files, two levels deep.
MAX_TREE_FILES = 10_000
MAX_TREE_DEPTH = 32
#: Keys in an artifact's ``details`` whose string values name files of the bundle.
PATH_KEY_SUFFIXES = ("path", "_paths", "_file", "_files")

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIRECTORY_FLAGS = _OPEN_FLAGS | os.O_DIRECTORY


@dataclass(frozen=True)
class FileFacts:
    """What the manifest records of one artifact file or directory."""

    sha256: str
    bytes: int
    gzip_bytes: int


@dataclass(frozen=True)
class IntegrityResult:
    """One listed file checked against the manifest."""

    path: str
    expected_sha256: str
    actual_sha256: str | None  # None: the file could not be read (see ``error``)
    error: str | None = None  # why it could not be read or trusted: missing, a link, wrong size ...

    @property
    def ok(self) -> bool:
        return self.error is None and self.actual_sha256 == self.expected_sha256

    @property
    def problem(self) -> str:
        if self.error is not None:
            return self.error
        if self.actual_sha256 is None:
            return "missing"
        return "ok" if self.ok else "sha256 mismatch"


# --- reading a bundle without leaving it -----------------------------------------------------


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _lstat_at(dir_fd: int, name: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise UnsafeFile("missing") from None
    except OSError as error:
        raise UnsafeFile(f"cannot be read ({error.strerror})") from None


def _open_directory_at(dir_fd: int, name: str) -> int:
    info = _lstat_at(dir_fd, name)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFile(f"has a component that is {_kind_of(info.st_mode)}" if stat.S_ISLNK(info.st_mode)
                         else f"has a component that is {_kind_of(info.st_mode)}, not a directory")
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=dir_fd)
    except OSError as error:  # replaced by a link or a file since the lstat
        raise UnsafeFile(f"cannot be opened ({error.strerror})") from None


@contextmanager
def _directory_fd(path: Path) -> Iterator[int]:
    """An fd of a directory the user named (the bundle itself may be reached through a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LcsError(f"bundle directory {path} does not exist", "give the directory lcs-export wrote (its -o/--out)") \
            from None
    except NotADirectoryError:
        what = "a file" if path.is_file() else "not a directory"
        raise LcsError(f"{path} is {what}, expected a bundle directory",
                       "give the directory lcs-export wrote (its -o/--out)") from None
    except OSError as error:
        raise LcsError(f"cannot open bundle directory {path}: {error.strerror}", "check the path and its permissions") \
            from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _parent_fd(root_fd: int, parts: list[str]) -> Iterator[int]:
    """An fd of the directory holding ``parts[-1]``, reached without following any link."""
    fds = []
    current = root_fd
    try:
        for part in parts[:-1]:
            current = _open_directory_at(current, part)
            fds.append(current)
        yield current
    finally:
        for fd in fds:
            os.close(fd)


def _read_regular_at(dir_fd: int, name: str, size: int, sink: Callable[[bytes], Any] | None) -> str:
    """sha256 of the regular file ``name`` in ``dir_fd`` that must hold exactly ``size`` bytes."""
    info = _lstat_at(dir_fd, name)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"is {_kind_of(info.st_mode)}, not a regular file")
    if info.st_size != size:
        raise UnsafeFile(f"has {info.st_size} bytes, the manifest says {size}")
    try:
        # O_NONBLOCK: should a FIFO appear here after the lstat, opening it cannot hang.
        fd = os.open(name, _OPEN_FLAGS | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as error:
        raise UnsafeFile(f"cannot be opened ({error.strerror})") from None
    digest = hashlib.sha256()
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_size != size:
            raise UnsafeFile("changed while it was being checked")
        remaining = size
        while remaining > 0:
            chunk = os.read(fd, min(_CHUNK, remaining))
            if not chunk:
                raise UnsafeFile("changed while it was being checked")
            digest.update(chunk)
            if sink is not None:
                sink(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _tree_entries(dir_fd: int, prefix: str, depth: int, found: list[tuple[str, int]]) -> None:
    """Every regular file below ``dir_fd`` as (relative path, size); refuses anything else."""
    if depth > MAX_TREE_DEPTH:
        raise UnsafeFile(f"is nested deeper than {MAX_TREE_DEPTH} directories")
    try:
        names = sorted(os.listdir(dir_fd))
    except OSError as error:
        raise UnsafeFile(f"has a directory that cannot be listed ({error.strerror})") from None
    for name in names:
        relative = f"{prefix}{name}"
        info = _lstat_at(dir_fd, name)
        if stat.S_ISDIR(info.st_mode):
            child = _open_directory_at(dir_fd, name)
            try:
                _tree_entries(child, relative + "/", depth + 1, found)
            finally:
                os.close(child)
        elif stat.S_ISREG(info.st_mode):
            found.append((relative, info.st_size))
            if len(found) > MAX_TREE_FILES:
                raise UnsafeFile(f"holds more than {MAX_TREE_FILES} files")
        else:
            raise UnsafeFile(f"holds {relative}, which is {_kind_of(info.st_mode)}")


def _verify_tree(dir_fd: int, size: int, copy_to: Path | None) -> str:
    entries: list[tuple[str, int]] = []
    _tree_entries(dir_fd, "", 0, entries)
    total = sum(file_size for _, file_size in entries)
    if total != size:
        raise UnsafeFile(f"holds {total} bytes, the manifest says {size}")
    digest = hashlib.sha256()
    for relative, file_size in sorted(entries):
        parts = relative.split("/")
        with _parent_fd(dir_fd, parts) as parent:
            file_digest = _read_regular_at(parent, parts[-1], file_size,
                                           None if copy_to is None else _writer(copy_to / relative))
        digest.update(f"{relative}\0{file_digest}\n".encode())
    return digest.hexdigest()


def _writer(path: Path) -> Callable[[bytes], Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()

    def write(chunk: bytes) -> None:
        with path.open("ab") as stream:
            stream.write(chunk)

    return write


def verify_file(root_fd: int, relative: str, expected_sha256: str, size: int,
                copy_to: Path | None = None) -> IntegrityResult:
    """Check one listed artifact (file or directory) below ``root_fd`` against the manifest;
    with ``copy_to``, also write what was read to ``copy_to / relative``."""
    try:
        parts = path_parts(relative)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UnsafeFile("has no valid byte size in the manifest")
        with _parent_fd(root_fd, parts) as parent:
            info = _lstat_at(parent, parts[-1])
            if stat.S_ISDIR(info.st_mode):
                fd = _open_directory_at(parent, parts[-1])
                try:
                    actual = _verify_tree(fd, size, None if copy_to is None else copy_to / relative)
                finally:
                    os.close(fd)
            else:
                sink = None if copy_to is None else _writer(copy_to / relative)
                actual = _read_regular_at(parent, parts[-1], size, sink)
    except UnsafeFile as problem:
        error = "missing" if str(problem) == "missing" else str(problem)
        return IntegrityResult(str(relative), str(expected_sha256), None, error)
    return IntegrityResult(relative, expected_sha256, actual)


def named_paths(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """(JSON path, value) of every file name inside an artifact's ``details``: the string
    values of keys ending in ``path``, ``_paths``, ``_file`` or ``_files`` (also in lists
    and objects under them)."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}"
            if isinstance(key, str) and key.endswith(PATH_KEY_SUFFIXES):
                yield from _strings(item, here)
            else:
                yield from named_paths(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from named_paths(item, f"{where}[{index}]")


def _strings(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")
    else:
        yield where, value


def _listed_files(manifest: dict[str, Any]) -> list[tuple[str, str, int]]:
    listed: list[tuple[str, str, int]] = []
    for entry in [*manifest.get("artifacts", []), *manifest.get("levels", [])]:
        item = (entry["path"], entry["sha256"], entry["bytes"])
        if item not in listed:
            listed.append(item)
    return listed


def check_integrity(directory: Path, manifest: dict[str, Any], copy_to: Path | None = None) -> list[IntegrityResult]:
    """Check every file the manifest lists, and every path it names, without leaving the bundle.

    Levels repeat their file's facts for apps; each distinct (path, sha256, bytes) is checked,
    so a level entry that disagrees with its artifact entry is reported too. A path named in
    an artifact's details that is not itself a listed artifact is reported as uncovered.
    With ``copy_to``, every file read is also copied there (see ``verified_copy``).
    """
    results = []
    artifact_paths = {entry["path"] for entry in manifest.get("artifacts", [])}
    with _directory_fd(Path(directory)) as root:
        checked: set[str] = set()
        for relative, expected, size in _listed_files(manifest):
            copy = copy_to if relative not in checked else None
            checked.add(relative)
            results.append(verify_file(root, relative, expected, size, copy))
        for index, entry in enumerate(manifest.get("artifacts", [])):
            for where, named in named_paths(entry.get("details", {}), f"artifacts[{index}].details"):
                if named not in artifact_paths:
                    try:
                        path_parts(named)
                        reason = f"named by {where} but not a listed artifact, so no sha256 covers it"
                    except UnsafeFile as problem:
                        reason = f"named by {where} {problem}"
                    results.append(IntegrityResult(str(named)[:200], "-" * 64, None, reason))
    return results


@contextmanager
def verified_copy(directory: Path, manifest: dict[str, Any]) -> Iterator[tuple[Path, list[IntegrityResult]]]:
    """A private temporary copy of the bundle's listed artifacts, made while checking them.

    Yields (copy directory, integrity results); the copy is deleted afterwards. Runtimes load
    from the copy: they run what was hashed, and cannot touch the bundle itself.
    """
    with tempfile.TemporaryDirectory(prefix="lcs-validate-") as temporary:
        copy = Path(temporary)
        yield copy, check_integrity(directory, manifest, copy_to=copy)


def read_bundle_file(directory: Path, name: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    """A small regular file at the top of a bundle (the manifest), read without following links."""
    with _directory_fd(Path(directory)) as root:
        try:
            info = _lstat_at(root, name)
        except UnsafeFile as problem:
            raise FileNotFoundError(name) if str(problem) == "missing" else LcsError(
                f"{Path(directory) / name} {problem}", "re-export the bundle") from None
        if not stat.S_ISREG(info.st_mode):
            raise LcsError(f"{Path(directory) / name} is {_kind_of(info.st_mode)}, not a regular file",
                           "re-export the bundle")
        if info.st_size > limit:
            raise LcsError(f"{Path(directory) / name} has {info.st_size} bytes, more than a manifest can have",
                           "re-export the bundle")
        chunks: list[bytes] = []
        try:
            _read_regular_at(root, name, info.st_size, chunks.append)
        except UnsafeFile as problem:
            raise LcsError(f"{Path(directory) / name} {problem}", "run the command again") from None
        return b"".join(chunks)


def is_bundle(path: Path) -> bool:
    """True when ``path`` is a directory holding an lcs bundle manifest (ours to replace)."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        manifest = json.loads(read_bundle_file(path, MANIFEST_NAME))
    except (OSError, ValueError, LcsError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == BUNDLE_FORMAT


# --- facts of freshly written files (the exporter's own staging) ----------------------------


def _file_sha256_and_size(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _gzip_size(path: Path) -> int:
    # mtime=0 keeps the number reproducible; level 9 is what a web server would ship.
    return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))


def _tree_files(directory: Path) -> list[Path]:
    return sorted((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.relative_to(directory).as_posix())


def _regular(path: Path) -> Path:
    """``path`` when it is a regular file or directory; a FIFO or device is never read."""
    if not (path.is_file() or path.is_dir()):
        raise LcsError(f"{path} is not a regular file", "give a file written by lcs")
    return path


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory's sorted file tree (see the module docstring)."""
    path = _regular(Path(path))
    if path.is_dir():
        digest = hashlib.sha256()
        for file in _tree_files(path):
            file_digest, _ = _file_sha256_and_size(file)
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest}\n".encode())
        return digest.hexdigest()
    return _file_sha256_and_size(path)[0]


def file_facts(path: Path) -> FileFacts:
    """sha256, byte size and gzip byte size of an artifact file or directory."""
    path = _regular(Path(path))
    if path.is_dir():
        files = _tree_files(path)
        return FileFacts(sha256_of(path), sum(f.stat().st_size for f in files), sum(_gzip_size(f) for f in files))
    digest, size = _file_sha256_and_size(path)
    return FileFacts(digest, size, _gzip_size(path))


def sha256_if_size(path: Path, size: int) -> str | None:
    """sha256 of a regular file that has ``size`` bytes; None when it is not such a file.

    The size is checked first, so a file that cannot be the expected one is never read.
    """
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        return None
    return _file_sha256_and_size(path)[0]


# --- writing: staging and the swap --------------------------------------------------------


def check_destination(output: Path, force: bool) -> None:
    """Refuse an output that exists, unless ``force`` and it is a bundle we wrote."""
    if not output.exists() and not output.is_symlink():
        return
    if not output.is_dir() or output.is_symlink():
        raise LcsError(f"output {output} exists and is not a bundle directory", "choose another --out path")
    if not force:
        raise LcsError(f"output directory {output} already exists", "pass --force to replace it, or choose another --out")
    if not is_bundle(output):
        # --force only ever replaces what lcs-export wrote: a directory without our
        # manifest may hold anything of the user's.
        raise LcsError(
            f"output directory {output} exists and is not an lcs bundle (no {MANIFEST_NAME} of ours); "
            "it was left untouched",
            "choose another --out path, or remove that directory yourself",
        )


@contextmanager
def staged_bundle(output: Path, force: bool = False) -> Iterator[Path]:
    """Yield a staging directory next to ``output``; when the block succeeds, swap it into place.

    The output is checked (and its lock taken) before the block runs, so a bad or busy
    output fails before any work. On any failure or interrupt inside the block the staging
    directory is removed and ``output`` is left exactly as it was. See ``lcs_export.atomic``.
    """
    with staged_directory(output, lambda place: check_destination(place, force)) as staging:
        yield staging


@contextmanager
def staged_directory(output: Path, check: Callable[[Path], None]) -> Iterator[Path]:
    """``staged_bundle`` for any directory lcs writes whole (a bundle, a sample app):
    ``check(output)`` refuses an output that must not be replaced, before the work and again
    just before the swap."""
    output = atomic.prepare_parent(Path(output))
    with atomic.BundleLock(output, exclusive=True, required=True):
        check(output)
        atomic.remove_stale_staging(output)
        staging = atomic.make_staging(output)
        try:
            pause_point("staged")
            yield staging
            _commit(staging, output, check)
        except BaseException:
            if staging.exists():
                remove_tree(staging)
            raise


def _commit(staging: Path, output: Path, check: Callable[[Path], None]) -> None:
    check(output)  # it may have changed while we exported (not through lcs)
    atomic.normalise_modes(staging)
    atomic.fsync_tree(staging)
    retired = None
    try:
        with atomic.sigint_deferred():
            retired = atomic.swap_into_place(staging, output)
            fsync_directory(output.parent)
        pause_point("swapped")
    except KeyboardInterrupt:
        # The new bundle is in place: say so, rather than "nothing written".
        if retired is not None:
            remove_tree(retired)
        raise atomic.InterruptedAfterCommit from None
    if retired is not None:
        remove_tree(retired)
