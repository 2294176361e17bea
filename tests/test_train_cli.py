"""lcs-train as a user runs it: training, evaluation, baselines, and every bad input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lcs_train.cli import app

runner = CliRunner()
TINY = ["--model", "cpreresnet11", "--dataset", "digits", "--batch-size", "64", "--augment-shift", "0", "--threads", "2"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def plain(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_train_then_eval_with_a_baseline(tmp_path: Path) -> None:
    subspace = tmp_path / "subspace.safetensors"
    result = invoke(*TINY, "--epochs", "1", "--out", str(subspace))
    assert result.exit_code == 0, result.output
    assert subspace.is_file() and subspace.with_suffix(".eval.json").is_file()
    baseline = tmp_path / "fixed-0.5.safetensors"
    result = invoke(*TINY, "--epochs", "1", "--fixed-alpha", "0.5", "--out", str(baseline), "--no-evaluate")
    assert result.exit_code == 0, result.output
    report = tmp_path / "report.json"
    result = invoke("eval", str(subspace), "--alphas", "0,0.5,0.9", "--baseline", str(baseline), "--out", str(report))
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert [row["alpha"] for row in data["levels"]] == [0.0, 0.5, 0.9]
    sparsity = [row["measured"]["sparsity"] for row in data["levels"]]
    assert sparsity[0] == 0.0 and abs(sparsity[1] - 0.5) < 0.01 and abs(sparsity[2] - 0.9) < 0.01
    flops = [row["nonzero_flops"] for row in data["levels"]]
    assert flops[0] > flops[1] > flops[2]
    assert [row["alpha"] for row in data["baselines"]["fixed-0.5"]] == [0.5]
    assert report.with_suffix(".png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet999"], "unknown model 'resnet999'"),
        (["--method", "lowrank"], "unknown compression method 'lowrank'"),
        (["--shape", "plane"], "unknown subspace shape 'plane'"),
        (["--dataset", "cifar10", "--data-dir", "/no/such/dir"], "/no/such/dir does not exist"),
        (["--fixed-alpha", "1.5"], "--fixed-alpha 1.5 is not allowed"),
        (["--method", "structured", "--fixed-alpha", "0.9"], "outside the trained range [0, 0.75]"),
    ],
)
def test_bad_training_input_is_one_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "x.safetensors"
    result = invoke("--epochs", "1", "--out", str(out), *args)
    assert result.exit_code == 2
    assert message in plain(result.output)
    assert "Traceback" not in result.output
    assert not out.exists()


def test_data_dir_in_the_wrong_layout(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("--dataset", "cifar10", "--data-dir", str(empty), "--out", str(tmp_path / "x.safetensors"))
    assert result.exit_code == 2 and "does not hold CIFAR-10" in plain(result.output)
    pickled = tmp_path / "pickled" / "cifar-10-batches-py"
    pickled.mkdir(parents=True)
    result = invoke("--dataset", "cifar10", "--data-dir", str(pickled.parent), "--out", str(tmp_path / "y.safetensors"))
    assert result.exit_code == 2 and "will not unpickle" in plain(result.output)


def test_cifar10_binary_layout_is_read(tmp_path: Path) -> None:
    from lcs_train.data import load_cifar10

    batches = tmp_path / "cifar-10-batches-bin"
    batches.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        record = bytes([3]) + bytes(range(256)) * 12
        (batches / name).write_bytes(record * 2)
    dataset = load_cifar10(tmp_path)
    assert dataset.train_images.shape == (10, 3, 32, 32) and dataset.classes[3] == "cat"
    assert int(dataset.train_labels[0]) == 3 and float(dataset.train_images[0, 0, 0, 1]) == 1.0


def test_bad_eval_input(subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path) -> None:
    structured = subspace_checkpoint("structured", "point")
    result = invoke("eval", str(structured), "--alphas", "0,0.9")
    assert result.exit_code == 2 and "outside the trained range [0, 0.75]" in plain(result.output)
    result = invoke("eval", str(structured), "--alphas", "zero")
    assert result.exit_code == 2 and "not a comma-separated list" in plain(result.output)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(structured.read_bytes()[:1000])
    result = invoke("eval", str(truncated))
    assert result.exit_code == 2 and "truncated" in plain(result.output)


def test_existing_output_is_not_overwritten(subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path) -> None:
    existing = tmp_path / "kept.safetensors"
    existing.write_bytes(subspace_checkpoint("unstructured", "point").read_bytes())
    before = existing.read_bytes()
    result = invoke(*TINY, "--epochs", "1", "--out", str(existing))
    assert result.exit_code == 2 and "--resume" in plain(result.output)
    assert existing.read_bytes() == before
