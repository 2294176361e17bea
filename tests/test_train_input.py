"""Every bad input to lcs-train is one clear line and exit 2, before any work: options, output
paths, file-system errors, CIFAR-10 files, checkpoint metadata behind a recomputed digest,
fixed-alpha baselines, and the help text itself."""

from __future__ import annotations

import json
import errno
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import lcs_train.cli as cli_module
from lcs_train import load_subspace, set_alpha
from lcs_train.checkpoint import load_checkpoint, save_checkpoint
from lcs_train.console import reported_user_errors
from lcs_train.data import CIFAR10_RECORD, load_cifar10
from lcs_train.errors import LcsError
from lcs_train.subspace import check_model_alpha
from train_helpers import assert_one_line_error, rewrite_checkpoint, run_cli


@pytest.fixture()
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A case that is meant to be refused during validation must never reach training."""

    def reached(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an invalid option reached training")

    monkeypatch.setattr(cli_module, "Trainer", reached)


BAD_OPTIONS = [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["--threads", "-1"], "--threads -1 is not allowed"),
    (["--threads", "0"], "--threads 0 is not allowed"),
    (["--threads", "100000"], "--threads 100000 is not allowed"),
    (["--label-smoothing", "2"], "--label-smoothing 2 is not allowed"),
    (["--label-smoothing", "nan"], "--label-smoothing nan is not allowed"),
    (["--lr", "-0.1"], "--lr -0.1 is not allowed"),
    (["--lr", "0"], "--lr 0 is not allowed"),
    (["--lr", "nan"], "--lr nan is not allowed"),
    (["--lr", "inf"], "--lr inf is not allowed"),
    (["--momentum", "-0.5"], "--momentum -0.5 is not allowed"),
    (["--momentum", "1"], "--momentum 1 is not allowed"),
    (["--weight-decay", "-1e-4"], "--weight-decay -0.0001 is not allowed"),
    (["--weight-decay", "inf"], "--weight-decay inf is not allowed"),
    (["--warmup-epochs", "-1"], "--warmup-epochs -1 is not allowed"),
    (["--compression-warmup", "1.5"], "--compression-warmup 1.5 is not allowed"),
    (["--compression-warmup", "-inf"], "--compression-warmup -inf is not allowed"),
    (["--beta", "-1"], "--beta -1 is not allowed"),
    (["--beta", "nan"], "--beta nan is not allowed"),
    (["--augment-shift", "-2"], "--augment-shift -2 is not allowed"),
    (["--max-alpha", "0"], "--max-alpha 0 is not allowed"),
    (["--max-alpha", "1.2"], "--max-alpha 1.2 is not allowed"),
    (["--max-alpha", "nan"], "--max-alpha nan is not allowed"),
    (["--method", "quantized", "--max-alpha", "0.5"], "--max-alpha does not apply to 'quantized'"),
    (["--fixed-alpha", "nan"], "--fixed-alpha nan is not allowed"),
    (["--fixed-alpha", "-inf"], "--fixed-alpha -inf is not allowed"),
    (["--seed", "-1"], "--seed -1 is not allowed"),
    (["--seed", str(2**40)], f"--seed {2**40} is not allowed"),
    (["--epochs", "0"], "--epochs 0 is not allowed"),
    (["--batch-size", "-5"], "--batch-size -5 is not allowed"),
    (["--recipe", "fast"], "unknown recipe 'fast'"),
    (["--model", "resnet999"], "unknown model 'resnet999'"),
    (["--method", "lowrank"], "unknown compression method 'lowrank'"),
    (["--shape", "plane"], "unknown subspace shape 'plane'"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--dataset", "cifar10"], "cifar10 needs a data directory"),
    (["--data-dir", "/tmp"], "--data-dir applies only to --dataset cifar10"),
    (["--epochs", "1.5"], "Invalid value for '--epochs'"),
    (["--lr", "fast"], "Invalid value for '--lr'"),
    (["--no-such-option"], "No such option"),
]


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_every_bad_option_is_one_line_before_any_work(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None,
) -> None:
    out = tmp_path / "runs" / "x.safetensors"
    result = run_cli(capsys, "--out", str(out), *args)
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_out_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = {
        str(a_file / "x.safetensors"): "is a file",
        "/proc/lcs-test/x.safetensors": "cannot create the directory of --out /proc/lcs-test/x.safetensors",
        "/proc/x.safetensors": "cannot write --out /proc/x.safetensors",
        str(tmp_path): "is a directory",
    }
    for out, message in cases.items():
        assert_one_line_error(run_cli(capsys, "--out", out), 2, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_read_only_file_system_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_training: None,
) -> None:
    # No read-only mount can be made without privileges: fail the probe the way EROFS does.
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    result = run_cli(capsys, "--out", str(tmp_path / "x.safetensors"))
    assert_one_line_error(result, 2, "Read-only file system")
    assert "read-only" in result.stderr


def test_resume_without_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None) -> None:
    result = run_cli(capsys, "--out", str(tmp_path / "x.safetensors"), "--resume")
    assert_one_line_error(result, 2, "cannot resume")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/out.json"), "/data/out.json: Permission denied"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), "the file system is read-only"[4:]),
        (OSError(errno.ENOSPC, "No space left on device", "/full/x"), "disk is full"),
        (OSError(errno.EIO, "Input/output error"), "file-system error: Input/output error"),
    ],
)
def test_file_system_errors_are_one_line_exit_2(error: OSError, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        with reported_user_errors(debug=False):
            raise error
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err


def test_ctrl_c_is_one_line_exit_130(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        with reported_user_errors(debug=False, on_interrupt=lambda: "the old bundle is kept"):
            raise KeyboardInterrupt
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted; the old bundle is kept"


def test_markup_in_a_message_is_printed_not_interpreted(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        with reported_user_errors(debug=False):
            raise LcsError("checkpoint runs/[/bold]x does not exist", "check [red]the path")
    assert "runs/[/bold]x" in capsys.readouterr().err


def test_divergence_stops_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.safetensors"
    result = run_cli(
        capsys, "--model", "cpreresnet11", "--dataset", "digits", "--epochs", "1", "--batch-size", "128",
        "--lr", "1e30", "--warmup-epochs", "0", "--augment-shift", "0", "--threads", "2", "--out", str(out),
    )
    assert_one_line_error(result, 2, "training diverged")
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --- CIFAR-10 binary files -------------------------------------------------------------


def _cifar_dir(tmp_path: Path, **overrides: bytes) -> Path:
    batches = tmp_path / "cifar-10-batches-bin"
    batches.mkdir()
    record = bytes([3]) + bytes(range(256)) * 12
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (batches / name).write_bytes(overrides.get(name.replace(".bin", ""), record * 2))
    return tmp_path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data_batch_3": b""}, "data_batch_3.bin is empty"),
        ({"test_batch": b""}, "test_batch.bin is empty"),
        ({"data_batch_1": b"\x00" * (CIFAR10_RECORD + 7)}, "is not a multiple of 3073"),
        ({"test_batch": bytes([10]) + b"\x00" * (CIFAR10_RECORD - 1)}, "test_batch.bin is not a CIFAR-10 binary batch: record 0 has label 10"),
        ({"data_batch_5": (bytes([1]) + b"\x00" * 3072) + (bytes([255]) + b"\x00" * 3072)}, "record 1 has label 255"),
    ],
)
def test_bad_cifar10_files_are_refused_naming_the_file(
    tmp_path: Path, overrides: dict[str, bytes], message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    root = _cifar_dir(tmp_path, **overrides)
    with pytest.raises(LcsError, match=re.escape(message)):
        load_cifar10(root)
    result = run_cli(capsys, "--dataset", "cifar10", "--data-dir", str(root), "--out", str(tmp_path / "runs" / "x.safetensors"))
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "runs").exists()


# --- checkpoint metadata behind a recomputed digest -------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(metadata: dict[str, Any]) -> None:
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = metadata
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value

    return edit


METADATA_CASES = [
    (_set("model.arguments.num_classes", "10"), "model.arguments.num_classes is invalid"),
    (_set("model.arguments.num_classes", 11), "classes names 10 classes but the network has 11 logits"),
    (_set("model.arguments.num_classes", 10.0), "model.arguments.num_classes is invalid"),
    (_set("model.arguments.num_classes", 10**12), "model.arguments.num_classes is invalid"),
    (_set("classes", [str(i) for i in range(11)]), "classes names 11 classes but the network has 10 logits"),
    (_set("classes", "0123456789"), "classes is invalid"),
    (_set("input.shape", [1, 1, 8, 8, 1]), "input.shape is invalid"),
    (_set("input.shape", [1, 1, 100000, 8]), "input.shape[2] is invalid"),
    (_set("input.shape", [1, 1, 16, 16]), "input.shape is [1, 1, 16, 16] but digits images are [1, 1, 8, 8]"),
    (_set("input.std", [0.0]), "input.std[0] is invalid"),
    (_set("input.mean", [0.1, 0.2]), "input.mean has 2 values for 1 channels"),
    (_set("format_version", 3), "written by a newer lcs"),
    (_set("format_version", "1"), "format_version is invalid"),
    (_set("format_version", 0), "format_version is invalid"),
    (_set("alpha.max", 1.5), "alpha.max is invalid"),
    (_set("alpha.max", 0.5), "alpha.max is 0.5 but the method's trained range ends at 0.95"),
    (_set("alpha.fixed", 2), "alpha.fixed is invalid"),
    (_set("alpha.min", 0.1), "alpha.min is invalid"),
    (_set("method.max_sparsity", 0), "method.max_sparsity is invalid"),
    (_set("method.bits", 4), "method is invalid"),
    (_set("shape", "plane"), "shape is invalid"),
    (_set("norm", "instance"), "norm is 'instance' but unstructured subspaces use 'group'"),
    (_set("data.dataset", "imagenet"), "data.dataset is invalid"),
    (_set("epoch", -1), "epoch is invalid"),
    (_set("history", {"epoch": 1}), "history is invalid"),
    (lambda m: m.pop("alpha") and None, "alpha is missing"),
    (lambda m: m["model"]["arguments"].pop("in_channels") and None, "model.arguments.in_channels is missing"),
    (lambda m: [m], "is not an lcs subspace checkpoint"),
]


@pytest.mark.parametrize(("edit", "message"), METADATA_CASES, ids=[m for _, m in METADATA_CASES])
def test_impossible_metadata_is_refused_naming_the_field(
    subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path, edit: Callable[[dict[str, Any]], Any],
    message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    path = rewrite_checkpoint(subspace_checkpoint("unstructured", "line"), tmp_path / "edited.safetensors", edit)
    with pytest.raises(LcsError, match=re.escape(message)):
        load_subspace(path)
    result = run_cli(capsys, "eval", str(path), "--out", str(tmp_path / "report.json"))
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "report.json").exists()


def test_non_finite_metadata_and_deep_nesting_are_refused(subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path) -> None:
    source = subspace_checkpoint("unstructured", "line")
    nan = rewrite_checkpoint(source, tmp_path / "nan.safetensors", raw_metadata='{"format": "lcs-subspace", "x": NaN}')
    with pytest.raises(LcsError, match="corrupt lcs metadata"):
        load_checkpoint(nan)
    deep = rewrite_checkpoint(source, tmp_path / "deep.safetensors", raw_metadata="[" * 100_000 + "]" * 100_000)
    with pytest.raises(LcsError, match="corrupt lcs metadata"):
        load_checkpoint(deep)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.__setitem__("model.classifier.weight", t["model.classifier.weight"].clone().fill_(math.nan)), "non-finite values"),
        (lambda t: t.__setitem__("model.stem.weight", t["model.stem.weight"].half()), "of another dtype: stem.weight"),
        (lambda t: t.__setitem__("model.classifier.weight", t["model.classifier.weight"][:9].clone()), "num_classes"),
        (lambda t: t.pop("model.classifier.bias"), "tensors missing: classifier.bias"),
    ],
)
def test_edited_tensors_are_refused(
    subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path, edit: Callable[[dict[str, torch.Tensor]], Any], message: str,
) -> None:
    path = rewrite_checkpoint(subspace_checkpoint("unstructured", "line"), tmp_path / "edited.safetensors", edit_tensors=edit)
    with pytest.raises(LcsError, match=re.escape(message)):
        load_subspace(path)


def test_a_directory_given_as_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "eval", str(tmp_path))
    assert_one_line_error(result, 2, f"checkpoint {tmp_path} is a directory")
    assert "expected" not in result.stderr or ".safetensors" in result.stderr


# --- fixed-alpha baselines ----------------------------------------------------------------


@pytest.fixture()
def fixed_baseline(subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path) -> Path:
    """A point network recorded as trained only at alpha 0.5 (what --fixed-alpha 0.5 writes)."""
    return rewrite_checkpoint(subspace_checkpoint("unstructured", "point"), tmp_path / "fixed.safetensors", _set("alpha.fixed", 0.5))


def test_a_fixed_alpha_baseline_refuses_other_alphas(fixed_baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = load_subspace(fixed_baseline)
    assert {float(layer.alpha) for layer in __import__("lcs_train").compressible_layers(model)} == {0.5}
    assert check_model_alpha(model, 0.5) == 0.5
    with pytest.raises(LcsError, match="alpha 0.3 was never trained: this is a fixed-alpha baseline, trained only at alpha 0.5"):
        set_alpha(model, 0.3)
    with pytest.raises(LcsError, match="cannot take alpha as an input"):
        set_alpha(model, torch.tensor([0.5]))
    result = run_cli(capsys, "eval", str(fixed_baseline), "--alphas", "0,0.5", "--out", str(tmp_path / "r.json"))
    assert_one_line_error(result, 2, "alpha 0 was never trained")
    result = run_cli(capsys, "eval", str(fixed_baseline), "--alphas", "0.5", "--out", str(tmp_path / "r.json"))
    assert result.code == 0, result.stderr


def test_fixed_alpha_is_recorded_by_training(tmp_path: Path) -> None:
    from lcs_train.train import TrainConfig, Trainer

    config = TrainConfig(model="cpreresnet11", method="unstructured", shape="point", dataset="digits",
                         epochs=1, batch_size=256, fixed_alpha=0.7, augment_shift=0)
    trainer = Trainer(config, tmp_path / "f.safetensors")
    with pytest.raises(LcsError, match="never trained"):
        set_alpha(trainer.model, 0.2)
    trainer.save(0)
    assert load_checkpoint(tmp_path / "f.safetensors").metadata["alpha"]["fixed"] == 0.7


# --- files: mode, locking ---------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_respect_the_umask(subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path, umask: int, mode: int) -> None:
    loaded = load_checkpoint(subspace_checkpoint("unstructured", "point"))
    previous = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "c.safetensors", loaded.metadata, loaded.model_state)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["eval"]])
def test_help_shows_every_text_whole(command: list[str]) -> None:
    result = CliRunner().invoke(cli_module.app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = re.sub(r"[│╭╮╰╯─]", " ", result.output)
    text = re.sub(r"\s+", " ", text)
    # Square brackets in help were eaten as rich markup ("Training epochs [recipe]." -> "Training epochs .").
    assert not re.search(r" \.( |$)", text) and "()" not in text, text
    assert not re.search(r"\ba [aeiou]", text), text
    if not command:
        assert "Training epochs (default: the recipe's)." in text


def test_a_full_disk_during_a_save_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    from lcs_train.files import atomic_write

    target = tmp_path / "report.json"
    target.write_text("old")

    def disk_full(handle: Any) -> None:
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(LcsError, match=re.escape(f"cannot write {target}: No space left on device")):
        atomic_write(target, disk_full)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_eval_data_dir_for_an_embedded_dataset_is_refused(
    subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    result = run_cli(capsys, "eval", str(subspace_checkpoint("unstructured", "point")), "--data-dir", str(tmp_path),
                     "--out", str(tmp_path / "r.json"))
    assert_one_line_error(result, 2, "--data-dir applies only to cifar10, cifar100, imagefolder checkpoints")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_typer_parses_options_is_still_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Typer turns a KeyboardInterrupt outside the command body into a silent exit 130."""
    import typer

    from lcs_train.console import run_app

    app = typer.Typer()

    def interrupted_while_parsing(value: str) -> str:
        raise KeyboardInterrupt

    @app.command()
    def command(option: str = typer.Option("a", callback=interrupted_while_parsing)) -> None:
        raise AssertionError("never reached")

    assert run_app(app, ["--option", "b"], prog_name="lcs-test") == 130
    assert capsys.readouterr().err.strip() == "interrupted; nothing was written"


def test_export_of_a_fixed_alpha_baseline_serves_only_its_alpha(fixed_baseline: Path, tmp_path: Path) -> None:
    """lcs-export applies the same check: other levels and the alpha graphs are refused before
    anything is written; the trained level exports."""
    from bundle_helpers import run_cli as run_export

    for arguments, message in [(["--levels", "0.0,0.5"], "alpha 0 was never trained"),
                               (["--levels", "0.5", "--dynamic-alpha"], "trained only at alpha 0.5")]:
        output = tmp_path / "refused"
        result = run_export("onnx", fixed_baseline, *arguments, "-o", output, "--no-validate")
        assert result.code == 2 and len(result.error_lines) == 1 and message in result.error_lines[0], result.stderr
        assert not output.exists() and not list(tmp_path.glob(".refused*"))
    result = run_export("onnx", fixed_baseline, "--levels", "0.5", "-o", tmp_path / "ok", "--no-validate")
    assert result.code == 0, result.stderr
    assert [level["alpha"] for level in json.loads((tmp_path / "ok" / "manifest.json").read_text())["levels"]] == [0.5]
