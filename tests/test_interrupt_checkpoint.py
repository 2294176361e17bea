"""Interrupting a checkpoint save at each of its steps (SIGINT and SIGKILL), concurrent
writers and readers of one checkpoint, and Ctrl-C / kill during training and evaluation.

A save pauses at a named step through the test-only hook ``LCS_TEST_PAUSE_AT`` (see
``lcs_train.files``); the test then signals it. Whatever the step and the signal, the
checkpoint is the old one byte for byte or the complete new one, a reader never sees
anything else, and the next save leaves no temporary or lock file behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lcs_train.checkpoint import load_checkpoint, save_checkpoint
from lcs_train.errors import LcsError
from lcs_train.files import PAUSE_ENV, SAVE_STEPS
from lcs_train.restore import load_subspace
from train_helpers import assert_one_line_error, lcs_train_process, python_env, run_cli

SAVER = """
import sys
from lcs_train.checkpoint import load_checkpoint, save_checkpoint
loaded = load_checkpoint(sys.argv[1], with_train_state=True)
metadata = dict(loaded.metadata, epoch=loaded.metadata["epoch"] + 1)
save_checkpoint(sys.argv[2], metadata, loaded.model_state, loaded.train_state)
print("saved", flush=True)
"""


def _wait_for_line(stream, marker: str, timeout: float = 120.0) -> list[str]:
    """Read ``stream`` until a line contains ``marker``; the lines read so far."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"never saw {marker!r}; got {''.join(lines)[-2000:]}")


def _leftovers(directory: Path, keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


CASES = [(step, sig) for step in SAVE_STEPS for sig in (signal.SIGINT, signal.SIGKILL)]


def test_a_save_interrupted_at_any_step_keeps_a_whole_checkpoint(
    subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    source = subspace_checkpoint("unstructured", "point")
    old_bytes = source.read_bytes()
    old_epoch = load_checkpoint(source).metadata["epoch"]
    # All savers start at once (each imports torch), then each is stopped at its step.
    runs = []
    for step, sig in CASES:
        directory = tmp_path / f"{step}-{sig.name}"
        directory.mkdir()
        target = directory / "subspace.safetensors"
        target.write_bytes(old_bytes)
        process = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(source), str(target)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**python_env(), PAUSE_ENV: step},
        )
        runs.append((step, sig, target, process))
    for step, sig, target, process in runs:
        _wait_for_line(process.stderr, f"lcs-test-paused {step}")
        # A reader meanwhile sees a whole checkpoint: the old one until the rename.
        seen = load_checkpoint(target).metadata["epoch"]
        assert seen == (old_epoch + 1 if step == "renamed" else old_epoch), (step, seen)
        # A second writer of the same checkpoint is refused, not interleaved.
        with pytest.raises(LcsError, match=rf"is being written by another process \(pid {process.pid}\)"):
            save_checkpoint(target, load_checkpoint(source).metadata, load_checkpoint(source).model_state)
        if step == "created":
            # The same refusal through the CLI, with its one line and exit 2.
            result = run_cli(capsys, "--model", "cpreresnet11", "--dataset", "digits", "--shape", "point",
                             "--out", str(target), "--resume")
            assert_one_line_error(result, 2, "is being written by another process")
        process.send_signal(sig)
        process.wait(timeout=60)
        assert process.returncode != 0, (step, sig)
        if step == "renamed":
            assert load_checkpoint(target).metadata["epoch"] == old_epoch + 1
        else:
            assert target.read_bytes() == old_bytes, (step, sig)
        if sig == signal.SIGINT:
            # Ctrl-C runs the clean-up: no temporary, no lock file.
            assert _leftovers(target.parent, target.name) == [], (step, sig)
        # The next save removes what a killed writer left and leaves nothing of its own.
        loaded = load_checkpoint(target, with_train_state=True)
        save_checkpoint(target, dict(loaded.metadata, epoch=loaded.metadata["epoch"]), loaded.model_state, loaded.train_state)
        assert _leftovers(target.parent, target.name) == [], (step, sig)
        load_subspace(target)


TINY = ["--model", "cpreresnet11", "--dataset", "digits", "--shape", "point", "--batch-size", "256",
        "--augment-shift", "0", "--threads", "1", "--no-evaluate"]


def test_ctrl_c_and_kill_during_training_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run" / "subspace.safetensors"
    # Ctrl-C during epoch 2: one line saying epoch 1 is kept, exit 130.
    process = lcs_train_process(*TINY, "--epochs", "3", "--out", str(out))
    _wait_for_line(process.stdout, "epoch 1:")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted; the checkpoint of epoch 1 is intact"), stderr
    assert load_checkpoint(out).metadata["epoch"] == 1
    assert _leftovers(out.parent, out.name) == []
    # SIGKILL during epoch 3 of the resumed run: epoch 2 stays loadable.
    process = lcs_train_process(*TINY, "--epochs", "3", "--out", str(out), "--resume")
    _wait_for_line(process.stdout, "epoch 2:")
    process.kill()
    process.wait(timeout=60)
    assert load_checkpoint(out, with_train_state=True).metadata["epoch"] == 2
    load_subspace(out)
    # Resuming after the kill finishes the run and cleans up the killed run's lock file.
    process = lcs_train_process(*TINY, "--epochs", "3", "--out", str(out), "--resume")
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    checkpoint = load_checkpoint(out)
    assert checkpoint.metadata["epoch"] == 3 and checkpoint.metadata["complete"]
    assert len(checkpoint.metadata["history"]) == 3
    assert _leftovers(out.parent, out.name) == []


@pytest.mark.parametrize("delay", [0.5, 1.8, 3.0, 4.2, 5.0])
def test_ctrl_c_during_evaluation_exits_130_cleanly(
    subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path, delay: float,
) -> None:
    """Wherever the Ctrl-C lands (imports, evaluation, plotting, teardown): exit 130 with one
    line, or 0 when the work was already done; never a traceback or "Fatal Python error"."""
    checkpoint = subspace_checkpoint("unstructured", "point")
    report = tmp_path / "report.json"
    process = lcs_train_process("eval", str(checkpoint), "--alphas", "0,0.5", "--out", str(report))
    # The run takes about 5 s here: the delays land in start-up, loading, evaluation and plotting.
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert "Fatal Python error" not in stderr and "Traceback" not in stderr, stderr
    assert process.returncode in (0, 130), (process.returncode, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    if process.returncode == 130:
        assert len(lines) == 1 and lines[0].startswith("interrupted"), stderr
        assert not report.exists() or report.with_suffix(".png").exists() or "wrote only" in lines[0]
    else:
        assert report.exists() and report.with_suffix(".png").exists()
    assert _leftovers(tmp_path, "report.json") in ([], ["report.png"])
