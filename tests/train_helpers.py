"""Helpers of the lcs-train input tests: running the CLI in-process exactly as ``main`` does
(one line per error, exit codes), and rewriting a checkpoint with a recomputed digest, as a
hostile user can."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import CliResult  # noqa: F401 (re-exported for the tests that import it from here)
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from lcs_train.checkpoint import METADATA_KEY, content_digest
from lcs_train.cli import app
from lcs_train.console import run_app

ROOT = Path(__file__).resolve().parents[1]




def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """``lcs-train ARGS`` in this process, through the same path as the console script."""
    capsys.readouterr()
    code = run_app(app, list(args), prog_name="lcs-train")
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def assert_one_line_error(result: CliResult, code: int = 2, contains: str | None = None) -> None:
    """The contract for anything a user can get wrong: exit code, one line, no traceback."""
    assert result.code == code, (result.code, result.stdout[-2000:], result.stderr[-2000:])
    assert len(result.error_lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    if contains is not None:
        assert contains in result.stderr, result.stderr


def read_checkpoint_raw(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The metadata dict and every tensor of a checkpoint, with no validation."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return metadata, tensors


def rewrite_checkpoint(
    source: Path, target: Path,
    edit_metadata: Callable[[dict[str, Any]], Any] | None = None,
    edit_tensors: Callable[[dict[str, Tensor]], None] | None = None,
    recompute_digest: bool = True,
    raw_metadata: str | None = None,
) -> Path:
    """Copy ``source`` to ``target`` with edits, recomputing the sha256 the way an attacker
    would, so that the edit reaches the validation behind the digest."""
    metadata, tensors = read_checkpoint_raw(source)
    if edit_metadata is not None:
        replaced = edit_metadata(metadata)
        if replaced is not None:
            metadata = replaced
    if edit_tensors is not None:
        edit_tensors(tensors)
    if recompute_digest and isinstance(metadata, dict):
        metadata["content_sha256"] = content_digest(tensors, metadata)
    text = raw_metadata if raw_metadata is not None else json.dumps(metadata)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(target), metadata={METADATA_KEY: text})
    return target


def python_env() -> dict[str, str]:
    """Environment of a subprocess that imports this work tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LCS_TEST_PAUSE_AT", None)
    return env


def lcs_train_process(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """``lcs-train ARGS`` as a real process (signals, exit status, teardown)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lcs_train.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=popen.pop("env", python_env()), **popen,
    )
