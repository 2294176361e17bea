"""Paths named by untrusted input (a bundle manifest), joined without leaving their directory.

One implementation for every reader: ``lcs_export.bundle`` checks and copies bundles with
it, and every target (``targets.base.artifact_path``) opens an artifact through it. It lives
in ``lcs_train`` so that ``targets`` can use it without importing ``lcs_export``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lcs_train.errors import LcsError


class UnsafeFile(Exception):
    """A file of a bundle that must not be read: the message says why."""


def path_parts(relative: Any) -> list[str]:
    """The components of a manifest path; ``UnsafeFile`` unless it is a plain relative path."""
    if not isinstance(relative, str) or not relative or len(relative) > 4096:
        raise UnsafeFile("is not a file name")
    if "\0" in relative or "\\" in relative or relative.startswith("/"):
        raise UnsafeFile("is not a relative path inside the bundle")
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeFile("is not a plain relative path inside the bundle (no '.', '..' or '//')")
    return parts


def resolve_inside(directory: Path, relative: str) -> Path:
    """``directory / relative`` for a manifest path, refusing any path that could leave the
    bundle (absolute, ``..``) or pass through a symbolic link."""
    try:
        parts = path_parts(relative)
    except UnsafeFile as problem:
        raise LcsError(f"manifest lists {str(relative)[:200]!r}, which {problem} (it is outside the bundle)",
                       "use a manifest written by lcs-export") from None
    candidate = Path(directory)
    for part in parts:
        candidate = candidate / part
        if candidate.is_symlink():
            raise LcsError(f"manifest lists {relative!r}, which passes through a symbolic link",
                           "use a bundle written by lcs-export (it holds no links)")
    return candidate
