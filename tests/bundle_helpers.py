"""Helpers shared by the bundle safety, fuzz and interruption tests.

``run_cli`` runs ``lcs-export`` in this process through ``run_app``, the way the script
does (not through Typer's test runner, whose error panels differ from the real script's),
and returns the exit code with stdout and stderr apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers import CliResult, built_once_per_run  # noqa: F401 (CliResult: re-exported for the tests that import it from here)



def run_cli(*arguments: Any) -> CliResult:
    """``lcs-export ARGUMENTS`` in-process, the way ``main`` runs it but without its
    ``exit_quietly`` (which ignores Ctrl-C for this process and every child it starts after):
    (exit code, stdout, stderr)."""
    from lcs_export.cli import build_app
    from lcs_train.console import run_app

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = run_app(build_app(), [str(a) for a in arguments], prog_name="lcs-export")
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def tree_state(path: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[str, int, int]]:
    """Every entry below ``path`` (not following links): relative path -> (what, mode, mtime_ns).

    ``what`` is a file's sha256, ``dir``, or a link's target; names in ``skip`` are left out.
    """
    state: dict[str, tuple[str, int, int]] = {}
    if not os.path.lexists(path):
        return state
    for root, directories, files in os.walk(path):
        for name in [*directories, *files]:
            full = Path(root) / name
            relative = full.relative_to(path).as_posix()
            if relative in skip:
                continue
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                what = "link:" + os.readlink(full)
            elif stat.S_ISDIR(info.st_mode):
                what = "dir"
            elif stat.S_ISREG(info.st_mode):
                what = hashlib.sha256(full.read_bytes()).hexdigest()
            else:
                what = "special"
            state[relative] = (what, info.st_mode, info.st_mtime_ns)
    return state


#: The levels of ``onnx_bundle`` (the sample apps' tests read them).
APP_LEVELS = "0.0,0.5,0.9"


def onnx_bundle(factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    """A real, validated ONNX bundle of ``checkpoint``, written once per run through
    ``export_bundle``: level files at 0, 0.5 and 0.9 plus the alpha graphs (single graph and
    switch-once pair), checked on 60 held-out samples. Copy it before changing it.

    Keyed by the checkpoint's content: every module asking for one checkpoint's bundle (the
    sample apps', the bundle-safety, fuzz and interruption tests) shares one export."""
    from lcs_export.export import ExportRequest, export_bundle

    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:16]
    return built_once_per_run(factory, f"onnx-bundle-{digest}", "bundle/manifest.json", lambda directory: export_bundle(
        ExportRequest(target="onnx", checkpoint=checkpoint, output=directory / "bundle", levels=APP_LEVELS,
                      dynamic_alpha=True, samples=60))) / "bundle"


def copy_bundle(bundle: Path, destination: Path) -> Path:
    """A private copy of a bundle (links copied as links)."""
    shutil.copytree(bundle, destination, symlinks=True)
    return destination
