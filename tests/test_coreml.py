"""Core ML target: levels, multifunction and alpha-input packages, checked from the saved files.

What runs where: Core ML prediction (``MLModel.predict``) exists only on macOS, so on Linux
every package is executed by ``targets.coreml.mil_interpreter`` (the runner's ``path_used`` is
"mil-interpreter"); the one test that needs Core ML itself is skipped there and says so.
Conversions are shared per method through module-scoped fixtures (point subspaces, two levels
each), so the file runs in about two minutes on two cores.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lcs_train.materialize import materialize
from lcs_export.parity import Tolerances, compare, parity_regime, reference_logits
from lcs_train.data import load_dataset
from lcs_train.errors import LcsError
from lcs_train.restore import load_subspace
from lcs_train.subspace import model_method
from targets import get_target
from lcs_export.export import build_alpha_graph
from targets.base import Artifact
from targets.coreml.target import function_name
from targets.inputs import Level
from targets.coreml.runner import MIL_INTERPRETER, CoreMLRunner, coreml_prediction_available
from targets.coreml.weights import sparsity_of, weights_evidence

#: One xdist worker runs this module, so its module-scoped exports are built once.
pytestmark = pytest.mark.xdist_group("coreml")

#: Two levels per method: the ends that exercise every storage format.
LEVELS = {
    "unstructured": [0.0, 0.9],  # float, sparse
    "structured": [0.0, 0.5],  # full width, half width
    "quantized": [0.0, 1.0],  # 8 bits (uint8), 3 bits (uint4)
}
NOT_ON_MACOS = "Core ML prediction (MLModel.predict) needs macOS; on Linux the MIL interpreter checks the package"


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_dataset("digits").held_out()
    return images.numpy().astype(np.float32), labels.numpy()


@pytest.fixture(scope="module")
def exported(subspace_checkpoint, tmp_path_factory, held_out) -> Any:
    """``exported(method)``: subspace, levels and the artifacts of one export (cached)."""
    cache: dict[str, dict[str, Any]] = {}

    def get(method: str) -> dict[str, Any]:
        if method not in cache:
            model, _ = load_subspace(subspace_checkpoint(method, "point"))
            levels = [_level(model, alpha) for alpha in LEVELS[method]]
            directory = tmp_path_factory.mktemp(f"coreml-{method}")
            example = torch.from_numpy(held_out[0][:1])
            target = get_target("coreml")
            artifacts = target.export_levels(levels, example, directory, target.parse_options({"multifunction": True}))
            artifacts += target.export_alpha_input(build_alpha_graph(model, example, switch_once=False), directory,
                                                   target.parse_options({}))
            cache[method] = {"model": model, "levels": levels, "directory": directory, "artifacts": artifacts}
        return cache[method]

    return get


def _level(model: torch.nn.Module, alpha: float) -> Level:
    materialized = materialize(model, alpha, [1, 8, 8])
    return Level(alpha, materialized.module, dict(materialized.compression), prunable=list(materialized.prunable))


def _options(values: dict[str, Any]) -> Any:
    return get_target("coreml").parse_options(values)


def _entry(artifact: Artifact) -> dict[str, Any]:
    return {"path": artifact.path, "kind": artifact.kind, "alphas": artifact.alphas, "details": artifact.details}


def _check(model, directory: Path, artifact: Artifact, alpha: float, held_out, compression: dict) -> Any:
    """Parity report of one artifact at one alpha, through the target's own runner."""
    runner = get_target("coreml").load(directory, _entry(artifact))
    assert runner.path_used == MIL_INTERPRETER or coreml_prediction_available()
    images, labels = held_out
    reference_alpha = min(alpha, float(model_method(model).max_alpha))
    return compare(
        runner.run(images, alpha), reference_logits(model, images, reference_alpha), labels,
        artifact=artifact.path, kind=artifact.kind, alpha=alpha, reference_alpha=reference_alpha,
        regime=parity_regime(compression, artifact.details), tolerances=Tolerances(),
    )


def _by_kind(artifacts: list[Artifact], kind: str) -> list[Artifact]:
    return [a for a in artifacts if a.kind == kind]


METHODS = pytest.mark.parametrize("method", list(LEVELS))


@METHODS
def test_level_packages_match_pytorch_on_held_out_digits(exported, held_out, method):
    run = exported(method)
    for level, artifact in zip(run["levels"], _by_kind(run["artifacts"], "level")):
        report = _check(run["model"], run["directory"], artifact, level.alpha, held_out, level.compression)
        assert report.passed, report.failures
        if "bits" not in level.compression:  # float storage: the tight regime
            assert report.agreement >= 0.999 and report.max_abs_logit_diff <= 1e-3


@METHODS
def test_multifunction_package_serves_every_level(exported, held_out, method):
    run = exported(method)
    (multi,) = _by_kind(run["artifacts"], "multifunction")
    assert multi.details["minimum_target"] == "iOS18"
    assert multi.details["functions"] == {str(a): function_name(a) for a in LEVELS[method]}
    for level in run["levels"]:
        report = _check(run["model"], run["directory"], multi, level.alpha, held_out, level.compression)
        assert report.passed, report.failures
    # Never larger than its parts; a point subspace shares its dense stem and classifier.
    assert multi.details["bytes"] <= multi.details["single_level_bytes"]
    if method != "structured":  # structured levels differ in every tensor's shape
        assert multi.details["bytes"] < multi.details["single_level_bytes"]


@METHODS
def test_alpha_input_package_matches_pytorch_across_alphas(exported, held_out, method):
    run = exported(method)
    (artifact,) = _by_kind(run["artifacts"], "alpha_input")
    assert artifact.details["inputs"] == ["input", "alpha"]
    top = float(model_method(run["model"]).max_alpha)
    for alpha in sorted({*LEVELS[method], 0.37 * top, top, top + 0.03}):  # last one is clamped
        compression = model_method(run["model"]).level(min(alpha, top))
        report = _check(run["model"], run["directory"], artifact, alpha, held_out, compression)
        assert report.passed, (alpha, report.failures)


def test_unstructured_weights_are_stored_sparse_with_the_levels_mask(exported):
    run = exported("unstructured")
    dense, sparse = _by_kind(run["artifacts"], "level")
    assert not dense.details["compressed_layers"]  # sparsity 0: nothing to prune
    level = run["levels"][1]
    evidence = weights_evidence(run["directory"] / sparse.path)
    compressed = sparse.details["compressed_layers"]
    assert set(compressed) == set(level.prunable)  # every prunable layer, however small
    for layer, facts in compressed.items():
        weight = level.module.get_submodule(layer).weight.detach().numpy()
        stored = evidence[facts["op"]]
        assert stored["op"] == "constexpr_sparse_to_dense"
        assert stored["mask_ones"] == stored["nonzero_values"] == int(np.count_nonzero(weight))
        assert sparsity_of(stored) == pytest.approx(0.9, abs=0.01)
    _assert_ends_stay_float(evidence)


def test_quantized_weights_are_stored_as_the_levels_own_integer_codes(exported):
    from targets.coreml.mil_interpreter import load_program

    run = exported("quantized")
    for level, artifact in zip(run["levels"], _by_kind(run["artifacts"], "level")):
        bits = level.compression["bits"]
        evidence = weights_evidence(run["directory"] / artifact.path)
        program = load_program(run["directory"] / artifact.path).function()
        ops = {op.name: op for op in program.operations}
        compressed = artifact.details["compressed_layers"]
        assert set(compressed) == set(level.prunable)
        for layer, facts in compressed.items():
            stored = evidence[facts["op"]]
            assert stored["op"] == "constexpr_blockwise_shift_scale"
            assert stored["dtype"] == ("uint8" if bits > 4 else "uint4")
            assert stored["max_code"] <= 2**bits - 1 and stored["distinct_codes"] <= 2**bits
            # Bit-identical to what PyTorch multiplies with: same codes, scale, zero point.
            weight = level.module.get_submodule(layer).weight
            op = ops[facts["op"]]
            np.testing.assert_array_equal(np.asarray(op.data.val).astype(np.uint8), weight.codes.numpy())
            assert float(np.asarray(op.scale.val).ravel()[0]) == float(weight.scale)
            assert int(np.asarray(op.offset.val).ravel()[0]) == int(weight.zero_point)
        _assert_ends_stay_float(evidence)


def test_structured_levels_are_narrower_programs(exported):
    run = exported("structured")
    full, half = (weights_evidence(run["directory"] / a.path) for a in _by_kind(run["artifacts"], "level"))
    full_channels = sum(e["shape"][0] for e in full.values() if e.get("storage") == "float")
    half_channels = sum(e["shape"][0] for e in half.values() if e.get("storage") == "float")
    assert half_channels < 0.6 * full_channels


def _assert_ends_stay_float(evidence: dict[str, dict[str, Any]]) -> None:
    floats = [e for e in evidence.values() if e.get("storage") == "float"]
    assert len(floats) == 2  # the first conv and the classifier
    assert all(e["sparsity"] == 0.0 and e["dtype"] == "float32" for e in floats)


def test_float16_export_tracks_pytorch(subspace_checkpoint, tmp_path, held_out):
    model, _ = load_subspace(subspace_checkpoint("unstructured", "point"))
    level = _level(model, 0.9)
    (artifact,) = get_target("coreml").export_levels(
        [level], torch.from_numpy(held_out[0][:1]), tmp_path, _options({"compute_precision": "float16"})
    )
    assert artifact.details["weight_storage"] == "sparse"
    report = _check(model, tmp_path, artifact, 0.9, held_out, level.compression)
    assert report.regime == "quantized"  # fp16 compute: judged on agreement and accuracy
    assert report.passed, report.failures
    assert report.max_abs_logit_diff < 0.1


def test_tampered_weight_fails_parity(exported, held_out, tmp_path):
    run = exported("unstructured")
    dense = _by_kind(run["artifacts"], "level")[0]
    copy = tmp_path / dense.path
    shutil.copytree(run["directory"] / dense.path, copy)
    weights = next(copy.rglob("weight.bin"))
    classifier = run["levels"][0].module.classifier.weight.detach().numpy().astype(np.float32)
    data = bytearray(weights.read_bytes())
    offset = bytes(data).find(classifier.tobytes())
    assert offset >= 0, "the classifier's float32 weight is stored verbatim"
    data[offset:offset + classifier.nbytes] = (-classifier).tobytes()
    weights.write_bytes(bytes(data))
    report = _check(run["model"], tmp_path, dense, 0.0, held_out, {"sparsity": 0.0})
    assert not report.passed


def test_runner_says_which_path_checked_the_package(exported):
    run = exported("unstructured")
    runner = get_target("coreml").load(run["directory"], _entry(_by_kind(run["artifacts"], "level")[0]))
    assert runner.path_used == ("coreml-predict" if coreml_prediction_available() else "mil-interpreter")


@pytest.mark.skipif(not coreml_prediction_available(), reason=NOT_ON_MACOS)
def test_coreml_predict_agrees_with_the_interpreter(exported, held_out):  # pragma: no cover - macOS only
    run = exported("unstructured")
    entry = _entry(_by_kind(run["artifacts"], "level")[1])
    path = run["directory"] / entry["path"]
    native = CoreMLRunner(path, alphas=entry["alphas"], prefer="coreml-predict")
    interpreted = CoreMLRunner(path, alphas=entry["alphas"], prefer=MIL_INTERPRETER)
    images = held_out[0][:64]
    np.testing.assert_allclose(native.run(images, 0.9), interpreted.run(images, 0.9), atol=1e-2)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"multifunction": True, "minimum_target": "iOS17"}, "iOS18"),
        ({"minimum_target": "iOS15"}, "minimum target"),
        ({"minimum_target": "android"}, "minimum target"),
        ({"compute_precision": "bfloat16"}, "compute precision"),
        ({"compute_units": "GPU_ONLY"}, "compute units"),
    ],
)
def test_bad_options_are_user_errors(options, words, tmp_path):
    with pytest.raises(LcsError, match=words) as error:
        get_target("coreml").parse_options(options)
    assert error.value.hint


def test_four_bit_levels_need_ios18(exported, tmp_path):
    three_bit = exported("quantized")["levels"][1]
    with pytest.raises(LcsError, match="iOS18") as error:
        get_target("coreml").export_levels([three_bit], torch.zeros(1, 1, 8, 8), tmp_path,
                                           _options({"minimum_target": "iOS17"}))
    assert "--minimum-target iOS18" in error.value.hint
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_eight_bit_levels_convert_for_ios17(exported, held_out, tmp_path):
    run = exported("quantized")
    eight_bit = run["levels"][0]
    (artifact,) = get_target("coreml").export_levels(
        [eight_bit], torch.from_numpy(held_out[0][:1]), tmp_path, _options({"minimum_target": "iOS17"})
    )
    evidence = weights_evidence(tmp_path / artifact.path)
    ops = {evidence[f["op"]]["op"] for f in artifact.details["compressed_layers"].values()}
    assert ops == {"constexpr_affine_dequantize"}
    report = _check(run["model"], tmp_path, artifact, 0.0, held_out, eight_bit.compression)
    assert report.passed, report.failures


def test_unknown_op_is_a_user_error_naming_the_op(tmp_path):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 2, 3, 4)), mb.TensorSpec(shape=(1, 4, 3, 5))],
                opset_version=ct.target.iOS17)
    def program(x, y):
        return mb.einsum(values=(x, y), equation="abcd,adce->abce")

    path = tmp_path / "einsum.mlpackage"
    ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
               skip_model_load=True).save(str(path))
    with pytest.raises(LcsError, match="einsum"):
        CoreMLRunner(path, alphas=[0.0], prefer=MIL_INTERPRETER)


def test_runner_refuses_an_alpha_a_level_does_not_serve(exported):
    run = exported("unstructured")
    runner = get_target("coreml").load(run["directory"], _entry(_by_kind(run["artifacts"], "level")[0]))
    with pytest.raises(LcsError, match="alpha"):
        runner.run(np.zeros((1, 1, 8, 8), np.float32), 0.5)


if sys.platform != "darwin":
    # Stated once for the reader of a test log: what Linux cannot check here.
    def test_linux_cannot_run_coreml_prediction():
        pytest.skip(NOT_ON_MACOS)


def test_alpha_input_program_of_a_line_subspace(subspace_checkpoint, tmp_path, held_out):
    """Lines interpolate every weight in the program; the converter must get primitive ops."""
    model, _ = load_subspace(subspace_checkpoint("unstructured", "line"))
    example = torch.from_numpy(held_out[0][:1])
    graph = build_alpha_graph(model, example, switch_once=False)
    (artifact,) = get_target("coreml").export_alpha_input(graph, tmp_path, _options({}))
    top = float(model_method(model).max_alpha)
    for alpha in (0.0, 0.41 * top, top):
        report = _check(model, tmp_path, artifact, alpha, held_out, model_method(model).level(alpha))
        assert report.passed, (alpha, report.failures)


def test_packages_hold_no_stray_debug_map_and_sizes_count_only_real_files(exported):
    from targets.coreml.target import STRAY_PACKAGE_FILES, package_bytes

    run = exported("unstructured")
    for artifact in run["artifacts"]:
        package = run["directory"] / artifact.path
        assert not [p for name in STRAY_PACKAGE_FILES for p in package.rglob(name)], artifact.path
        if "bytes" in artifact.details:
            assert artifact.details["bytes"] == package_bytes(package)


def test_a_nan_alpha_runs_as_alpha_zero_in_the_alpha_input_package(exported, held_out):
    run = exported("unstructured")
    (artifact,) = _by_kind(run["artifacts"], "alpha_input")
    runner = get_target("coreml").load(run["directory"], _entry(artifact))
    images = held_out[0][:16]
    got = runner.run(images, float("nan"))
    expected = reference_logits(run["model"], images, 0.0)
    assert np.isfinite(got).all() and float(np.abs(got - expected).max()) <= 1e-3


def test_coremltools_progress_bars_do_not_reach_the_terminal(capfd):
    from targets.coreml.convert import convert_module
    from targets.coreml.options import parse_options

    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    convert_module(module, [torch.zeros(2, 1, 2, 2)], ["input"], parse_options({}))
    captured = capfd.readouterr()
    assert "Running MIL" not in captured.err and "Converting PyTorch Frontend" not in captured.err
