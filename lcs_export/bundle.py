"""The bundle directory: staged in a temporary sibling and renamed into place, and the file
facts (sha256, bytes, gzip bytes) the manifest lists for every artifact.

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
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcs_train.errors import LcsError

MANIFEST_NAME = "manifest.json"
PARITY_NAME = "parity.json"
BUNDLE_FORMAT = "lcs-bundle"
_CHUNK = 1 << 20


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
    actual_sha256: str | None  # None: the file is missing

    @property
    def ok(self) -> bool:
        return self.actual_sha256 == self.expected_sha256

    @property
    def problem(self) -> str:
        if self.actual_sha256 is None:
            return "missing"
        return "ok" if self.ok else "sha256 mismatch"


def is_bundle(path: Path) -> bool:
    """True when ``path`` is a directory holding an lcs bundle manifest (ours to replace)."""
    manifest = path / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


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
    """Yield a temporary directory next to ``output``; on success rename it into place.

    On any failure (including KeyboardInterrupt) the temporary directory is removed and
    ``output`` is left exactly as it was.
    """
    output = Path(output)
    check_destination(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        yield staging
        _commit(staging, output, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _commit(staging: Path, output: Path, force: bool) -> None:
    # mkdtemp makes the directory private (0700); a bundle is meant to be shared and served.
    os.chmod(staging, 0o777 & ~_umask())
    if not (output.exists() or output.is_symlink()):
        os.rename(staging, output)
        return
    check_destination(output, force)  # it may have appeared or changed while we exported
    # Directories cannot be swapped atomically with plain POSIX rename, so move the old
    # bundle aside first and delete it only once the new one is in place.
    retired = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
    retired.rmdir()
    os.rename(output, retired)
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(retired, output)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write JSON to ``path`` through a temporary file and a rename."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, allow_nan=False)
            stream.write("\n")
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from a web server
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


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


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory's sorted file tree (see the module docstring)."""
    if path.is_dir():
        digest = hashlib.sha256()
        for file in _tree_files(path):
            file_digest, _ = _file_sha256_and_size(file)
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest}\n".encode())
        return digest.hexdigest()
    return _file_sha256_and_size(path)[0]


def file_facts(path: Path) -> FileFacts:
    """sha256, byte size and gzip byte size of an artifact file or directory."""
    if path.is_dir():
        files = _tree_files(path)
        return FileFacts(sha256_of(path), sum(f.stat().st_size for f in files), sum(_gzip_size(f) for f in files))
    digest, size = _file_sha256_and_size(path)
    return FileFacts(digest, size, _gzip_size(path))


def resolve_inside(directory: Path, relative: str) -> Path:
    """``directory / relative``, refusing paths that escape the bundle (a hostile manifest)."""
    candidate = (directory / relative).resolve()
    if not candidate.is_relative_to(directory.resolve()):
        raise LcsError(f"manifest lists {relative!r}, which is outside the bundle", "use a manifest written by lcs-export")
    return candidate


def check_integrity(directory: Path, manifest: dict[str, Any]) -> list[IntegrityResult]:
    """Recompute the sha256 of every file the manifest lists.

    Levels repeat their file's facts for apps; each distinct (path, sha256) pair is checked,
    so a level entry that disagrees with its artifact entry is reported too.
    """
    listed: list[tuple[str, str]] = []
    for entry in [*manifest.get("artifacts", []), *manifest.get("levels", [])]:
        pair = (entry["path"], entry["sha256"])
        if pair not in listed:
            listed.append(pair)
    actual: dict[str, str | None] = {}
    results = []
    for relative, expected in listed:
        if relative not in actual:
            path = resolve_inside(directory, relative)
            actual[relative] = sha256_of(path) if path.exists() else None
        results.append(IntegrityResult(relative, expected, actual[relative]))
    return results
