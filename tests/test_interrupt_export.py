"""Ctrl-C (SIGINT) and SIGKILL at every step of an export with --force over an old bundle.

Each case runs the real ``python -m lcs_export.cli`` in a subprocess (a TorchScript Lite
export over an old ONNX bundle: staging, the swap and the clean-up are the same for every
target, and this one starts and exports fastest), stopped at one step
by the test-only hook ``LCS_TEST_PAUSE_AT`` (``lcs_export.atomic.PAUSE_STEPS``: staging
made, artifacts written, manifest written, validated, swapped). The SIGINT and SIGKILL runs
of one step go side by side. Afterwards the output must hold the untouched old bundle, or
(once the swap happened) the complete new one; SIGINT must leave nothing else and print one
line; what a SIGKILL leaves (a staging directory named with its pid, the lock file) must be
gone after the next export.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bundle_helpers import copy_bundle, onnx_bundle, tree_state
from lcs_export.atomic import PAUSE_STEPS
from lcs_export.bundle import check_integrity, staged_bundle
from lcs_export.manifest import read_manifest

#: One xdist worker runs this module, so its module-scoped exports are built once.
pytestmark = pytest.mark.xdist_group("interrupt_export")

ROOT = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 240


@pytest.fixture(scope="module")
def checkpoint(subspace_checkpoint: Callable[[str, str], Path]) -> Path:
    return subspace_checkpoint("unstructured", "line")


@pytest.fixture(scope="module")
def old_bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_bundle(tmp_path_factory, checkpoint)


def _start(checkpoint: Path, output: Path, step: str, pause_file: Path) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "LCS_TEST_PAUSE_AT": step,
                   "LCS_TEST_PAUSE_FILE": str(pause_file), "LCS_TEST_PAUSE_SECONDS": "120"}
    return subprocess.Popen(
        [sys.executable, "-m", "lcs_export.cli", "torchscript-lite", str(checkpoint), "--levels", "0.5", "-o", str(output),
         "--force", "--samples", "20"],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(pause_file: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not (pause_file.exists() and pause_file.read_text()):
        if process.poll() is not None:
            raise AssertionError(f"the export ended before its pause: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the export never reached its pause point")
        time.sleep(0.1)


def _is_new_complete_bundle(output: Path) -> bool:
    manifest = read_manifest(output)
    return [a["path"] for a in manifest["artifacts"]] == ["level_alpha_0.5000.ptl"] and all(
        item.ok for item in check_integrity(output, manifest))


@pytest.mark.parametrize("step", PAUSE_STEPS)
def test_sigint_and_sigkill_at_each_step_leave_the_old_bundle_or_the_complete_new_one(
    step: str, checkpoint: Path, old_bundle: Path, tmp_path: Path
) -> None:
    runs = {}
    for name, sent in (("int", signal.SIGINT), ("kill", signal.SIGKILL)):
        parent = tmp_path / name
        output = copy_bundle(old_bundle, parent / "out")
        pause = tmp_path / f"pause-{name}"
        runs[name] = (sent, parent, output, pause, tree_state(output), _start(checkpoint, output, step, pause))
    for sent, parent, output, pause, _, process in runs.values():
        _wait_for(pause, process)
        os.kill(int(pause.read_text()), sent)
    swapped = step == "swapped"
    for name, (sent, parent, output, pause, before, process) in runs.items():
        _, stderr = process.communicate(timeout=WAIT_SECONDS)
        if swapped:
            assert _is_new_complete_bundle(output), name
        else:
            assert tree_state(output) == before, name  # the old bundle, untouched
        if sent == signal.SIGINT:
            assert process.returncode == 130
            # The test hook announces its pause on stderr; everything else is the product's.
            lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("lcs-test-paused")]
            expected = f"the new bundle at {output} is complete" if swapped else f"nothing written at {output}"
            assert lines == [f"interrupted; {expected}"], stderr
            assert sorted(p.name for p in parent.iterdir()) == ["out"]  # no staging, no lock file
        else:
            assert process.returncode == -signal.SIGKILL
            # The next export (here stopped right after its start-up checks) removes what
            # the killed one left, and still leaves the output as it is.
            state = tree_state(output)
            with pytest.raises(RuntimeError), staged_bundle(output, force=True):
                raise RuntimeError("stop after the clean-up")
            assert sorted(p.name for p in parent.iterdir()) == ["out"]
            assert tree_state(output) == state
