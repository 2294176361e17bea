"""``lcs-export`` end to end: real checkpoints, real held-out digits, real runtimes.

The export commands run the registered targets (ONNX Runtime; TorchScript Lite when it is
registered). ``torchscript-test`` below is a second real target (TorchScript files run by
torch.jit) used where a test needs a target to misbehave on purpose; it is registered by the
module's autouse fixture and removed after, never at import.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import targets
from lcs_export.bundle import sha256_of
from lcs_export.cli import build_app
from lcs_export.manifest import read_manifest, validate_manifest
from targets.base import LEVELS, Artifact, Target, option, register_target

#: One xdist worker runs this module, so its module-scoped exports are built once.
pytestmark = pytest.mark.xdist_group("export_cli")

runner = CliRunner()
REAL_TARGETS = [name for name in ("onnx", "torchscript-lite") if name in targets.TARGETS]
PARITY_SAMPLES = "120"


class _ScriptRunner:
    def __init__(self, module: torch.jit.ScriptModule) -> None:
        self.module = module

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(images)).numpy()


@dataclass(frozen=True)
class ScriptTestOptions:
    crash_after_first: bool = option(False, "write half a file, then fail", flag=False)


class ScriptTestTarget(Target):
    """TorchScript level files run by torch.jit; no alpha-input graph."""

    name = "torchscript-test"
    runtime = f"torch.jit {torch.__version__}"
    Options = ScriptTestOptions
    capabilities = frozenset({LEVELS})

    def export_levels(self, levels: list[Any], example: torch.Tensor, directory: Path,
                      options: ScriptTestOptions) -> list[Artifact]:
        if options.crash_after_first:
            (directory / "half_written.pt").write_bytes(b"partial")
            raise RuntimeError("simulated crash in the exporter")
        artifacts = []
        for level in levels:
            path = f"level_{level.alpha:g}.pt"
            with torch.no_grad():
                torch.jit.trace(level.module.eval(), example).save(str(directory / path))
            artifacts.append(Artifact(path, "level", [level.alpha], {"format": "torchscript"}))
        return artifacts

    def load(self, directory: Path, artifact: dict[str, Any]) -> _ScriptRunner:
        return _ScriptRunner(torch.jit.load(str(directory / artifact["path"])))


@pytest.fixture(scope="module", autouse=True)
def script_test_target() -> Iterator[type[Target]]:
    """``torchscript-test`` registered for this module's tests only."""
    assert ScriptTestTarget.name not in targets.TARGETS
    register_target(ScriptTestTarget)
    try:
        yield ScriptTestTarget
    finally:
        del targets.TARGETS[ScriptTestTarget.name]


def invoke(*arguments: str) -> Any:
    """Run lcs-export in-process; the app is built now so it sees every registered target."""
    return runner.invoke(build_app(), [str(a) for a in arguments])


@pytest.fixture(scope="module")
def checkpoint(subspace_checkpoint: Callable[[str, str], Path]) -> Path:
    return subspace_checkpoint("unstructured", "line")


@pytest.fixture(scope="module")
def bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A validated three-level bundle of the first real target (or the TorchScript test target)."""
    target = REAL_TARGETS[0] if REAL_TARGETS else "torchscript-test"
    output = tmp_path_factory.mktemp("bundles") / "digits"
    result = invoke(target, checkpoint, "--levels", "0.0,0.5,0.9", "-o", output, "--samples", PARITY_SAMPLES)
    assert result.exit_code == 0, result.output
    return output


def _copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    return copy


@pytest.mark.parametrize("target", REAL_TARGETS or ["torchscript-test"])
def test_export_writes_a_validated_bundle_and_the_same_facts_as_json(
    target: str, checkpoint: Path, tmp_path: Path
) -> None:
    output = tmp_path / "bundle"
    result = invoke(target, checkpoint, "--levels", "0.0,0.9", "-o", output, "--samples", PARITY_SAMPLES, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    manifest = read_manifest(output)  # schema-checked
    assert printed == manifest
    assert manifest["target"]["name"] == target
    assert manifest["input"]["shape"] == ["batch", 1, 8, 8]
    assert [level["alpha"] for level in manifest["levels"]] == [0.0, 0.9]
    assert manifest["levels"][1]["compression"]["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert manifest["levels"][1]["nonzeros"] < manifest["levels"][0]["nonzeros"]
    assert all(level["parity"] and level["parity"][0]["passed"] for level in manifest["levels"])
    assert manifest["validation"]["status"] == "passed"
    assert manifest["validation"]["data"] == {
        "dataset": "digits", "data_dir": None, "split": "held_out", "samples": int(PARITY_SAMPLES)}
    samples = manifest["samples"]
    assert len(samples["images"]) == 4 and np.array(samples["images"]).shape == (4, 1, 8, 8)
    assert [entry["alpha"] for entry in samples["logits"]] == [0.0, 0.9]
    parity = json.loads((output / "parity.json").read_text())
    assert parity["status"] == "passed" and len(parity["reports"]) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_inspect_shows_the_manifest_and_passes_an_intact_bundle(bundle: Path) -> None:
    result = invoke("inspect", bundle, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and len(report["integrity"]) == 3
    validate_manifest(report["manifest"])


@pytest.mark.parametrize(
    ("levels", "message"),
    [("0.0,0.97", "0.97 is outside the trained range"), ("0.5,0.2", "sorted ascending"),
     ("0.2,0.2", "0.2 is given twice"), ("-0.1", "outside [0, 1]")],
)
def test_bad_levels_exit_2_with_one_line_and_no_traceback(
    levels: str, message: str, checkpoint: Path, tmp_path: Path
) -> None:
    result = invoke("torchscript-test", checkpoint, "--levels", levels, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert message in result.output and "Fix:" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_nothing_to_export_and_unsupported_dynamic_alpha_are_user_errors(checkpoint: Path, tmp_path: Path) -> None:
    result = invoke("torchscript-test", checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--dynamic-alpha" in result.output
    result = invoke("torchscript-test", checkpoint, "--dynamic-alpha", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "does not support --dynamic-alpha" in result.output
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_without_force_and_replaced_with_it(
    bundle: Path, checkpoint: Path, tmp_path: Path
) -> None:
    output = _copy(bundle, tmp_path)
    result = invoke("torchscript-test", checkpoint, "--levels", "0.5", "-o", output, "--no-validate")
    assert result.exit_code == 2 and "already exists" in result.output and "--force" in result.output
    result = invoke("torchscript-test", checkpoint, "--levels", "0.5", "-o", output, "--no-validate", "--force")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(output)
    assert [a["path"] for a in manifest["artifacts"]] == ["level_0.5.pt"]
    assert manifest["validation"]["status"] == "not_run"
    assert sorted(p.name for p in output.iterdir()) == ["level_0.5.pt", "manifest.json"]


def test_force_never_deletes_a_directory_it_did_not_write(checkpoint: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = invoke("torchscript-test", checkpoint, "--levels", "0.5", "-o", mine, "--force")
    assert result.exit_code == 2 and "not an lcs bundle" in result.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_a_crashing_export_leaves_no_half_bundle(checkpoint: Path, tmp_path: Path) -> None:
    result = invoke("torchscript-test", checkpoint, "--levels", "0.5", "-o", tmp_path / "out",
                    "--option", "crash_after_first=true")
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    assert list(tmp_path.iterdir()) == []


def test_a_tampered_artifact_fails_inspect_and_validate_naming_the_file(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    victim = read_manifest(copy)["artifacts"][1]["path"]
    data = bytearray((copy / victim).read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (copy / victim).write_bytes(bytes(data))
    for command in ("inspect", "validate"):
        result = invoke(command, copy)
        assert result.exit_code == 1, result.output
        assert f"{victim}: sha256 mismatch" in result.output
    with (copy / victim).open("ab") as stream:  # one byte more: refused before it is hashed
        stream.write(b"\x00")
    result = invoke("inspect", copy)
    assert result.exit_code == 1 and f"{victim}: has {len(data) + 1} bytes, the manifest says {len(data)}" \
        in result.output


def test_a_swapped_artifact_with_a_matching_sha256_fails_parity(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    middle, last = manifest["artifacts"][1]["path"], manifest["artifacts"][2]["path"]
    shutil.copyfile(copy / last, copy / middle)  # the 0.9 level posing as 0.5
    for entry in [*manifest["artifacts"], *manifest["levels"]]:
        if entry["path"] == middle:
            # Its size too: compact ONNX levels of different sparsity differ in length.
            entry["sha256"], entry["bytes"] = sha256_of(copy / middle), (copy / middle).stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))

    result = invoke("validate", copy, "--samples", PARITY_SAMPLES, "--json")
    assert result.exit_code == 1, result.output
    reports = json.loads(result.stdout)["reports"]
    failed = [r["artifact"] for r in reports if not r["passed"]]
    assert failed == [middle]
    recorded = read_manifest(copy)
    assert recorded["validation"]["status"] == "failed" and recorded["validation"]["failed"] == 1
    assert json.loads((copy / "parity.json").read_text())["status"] == "failed"


def test_validate_tolerances_are_options(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    # A threshold no runtime meets exactly, not raised to PyTorch's own float32 error, turns
    # every float level into a failure.
    result = invoke("validate", copy, "--samples", "30", "--max-logit-diff", "0", "--float-error-factor", "0")
    assert result.exit_code == 1 and "parity failed" in result.output
    # Thresholds that are not finite or out of range are user errors, refused before any work.
    for flag, value in (("--max-logit-diff", "-1"), ("--max-logit-diff", "inf"), ("--min-agreement", "nan"),
                        ("--min-agreement", "1.5"), ("--max-accuracy-drop", "-0.1"),
                        ("--float-error-factor", "-1"), ("--float-error-factor", "nan")):
        result = invoke("validate", copy, flag, value)
        assert result.exit_code == 2 and f"{flag} {value} is out of range" in result.output, result.output


def test_validate_says_how_to_fix_a_missing_checkpoint(bundle: Path, checkpoint: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["source"]["checkpoint"]["path"] = str(tmp_path / "moved.safetensors")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("validate", copy)
    assert result.exit_code == 2 and "is gone" in result.output and "--checkpoint" in result.output
    result = invoke("validate", copy, "--checkpoint", checkpoint, "--samples", "30")
    assert result.exit_code == 0, result.output
    assert read_manifest(copy)["source"]["checkpoint"]["path"] == str(checkpoint.resolve())


def test_validate_refuses_data_of_another_shape(bundle: Path, tmp_path: Path) -> None:
    result = invoke("validate", _copy(bundle, tmp_path), "--data", "mnist")
    assert result.exit_code == 2 and "28x28" in result.output


def test_a_converter_failure_is_not_reported_as_an_unsupported_flag(checkpoint: Path, tmp_path: Path) -> None:
    """Only a capability the target does not declare means 'unsupported'; a converter's own
    NotImplementedError (say, an op it lacks) must surface with its message."""
    from lcs_export.export import ExportRequest, export_bundle, require
    from lcs_train.errors import LcsError

    class Failing(ScriptTestTarget):
        name = "failing"
        capabilities = frozenset({LEVELS})

        def export_levels(self, levels, example, directory, options):
            raise NotImplementedError("aten::lerp is not supported")

    register_target(Failing)
    try:
        with pytest.raises(NotImplementedError, match="lerp"):
            export_bundle(ExportRequest("failing", checkpoint, tmp_path / "out", levels="0.5", validate=False))
        with pytest.raises(LcsError, match="does not support --dynamic-alpha") as error:
            export_bundle(ExportRequest("failing", checkpoint, tmp_path / "out", dynamic_alpha=True))
        assert error.value.hint == "drop --dynamic-alpha or use another target"
        require(Failing(), LEVELS, "--levels")  # declared: no error
    finally:
        del targets.TARGETS["failing"]
    assert not (tmp_path / "out").exists()


def test_a_target_must_implement_what_it_declares() -> None:
    class Boasting(Target):
        name = "boasting"
        capabilities = frozenset({LEVELS})

    with pytest.raises(TypeError, match="does not implement export_levels"):
        register_target(Boasting)
    assert "boasting" not in targets.TARGETS
