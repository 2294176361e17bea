"""ONNX and TorchScript Lite artifacts agree with PyTorch on real held-out digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from bundle_helpers import onnx_bundle
from lcs_export.manifest import artifact_usage, read_manifest
from lcs_train.materialize import materialize_level
from lcs_train.data import load_dataset
from lcs_train.errors import LcsError
from lcs_train.restore import load_subspace
from lcs_train.subspace import at_alpha, model_method
from lcs_export.export import build_alpha_graph
from targets.base import Artifact, get_target
from targets.inputs import Level

#: One xdist worker runs this module, so its module-scoped exports are built once.
pytestmark = pytest.mark.xdist_group("targets_onnx_ptl")

#: (method, shape, level alphas): quantized levels at 8 and 4 bits. The unstructured ONNX
#: artifacts are the shared bundle's (``bundle_helpers.onnx_bundle``: levels 0, 0.5 and 0.9).
CASES = {
    "unstructured": ("line", [0.0, 0.95]),
    "structured": ("line", [0.0, 0.75]),
    "quantized": ("line", [0.0, 0.8]),
}


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    images, _ = load_dataset("digits").held_out()
    return images.numpy()


def entry(artifact: Artifact) -> dict:
    return {"path": artifact.path, "kind": artifact.kind, "alphas": artifact.alphas, "details": artifact.details}


@pytest.fixture(scope="module")
def exported(subspace_checkpoint, tmp_path_factory):
    """Per method: the subspace and every artifact of both targets (exported once; the
    unstructured ONNX ones are the shared bundle's, read back from its manifest)."""
    cache: dict[tuple[str, str], tuple] = {}

    def get(method: str, target_name: str):
        key = (method, target_name)
        if key == ("unstructured", "onnx") and key not in cache:
            checkpoint = subspace_checkpoint(method, CASES[method][0])
            directory = onnx_bundle(tmp_path_factory, checkpoint)
            manifest = read_manifest(directory)
            artifacts = [Artifact(a["path"], a["kind"], a["alphas"], a["details"], a["usage"])
                         for a in manifest["artifacts"]]
            cache[key] = (load_subspace(checkpoint)[0], directory, get_target(target_name), artifacts)
        if key not in cache:
            shape, alphas = CASES[method]
            model, _ = load_subspace(subspace_checkpoint(method, shape))
            directory = tmp_path_factory.mktemp(f"{target_name}-{method}")
            target = get_target(target_name)
            example = torch.zeros(1, 1, 8, 8)
            levels = [Level(a, materialize_level(model, a, [1, 8, 8]), {}) for a in alphas]
            options = target.parse_options({})
            artifacts = target.export_levels(levels, example, directory, options)
            artifacts += target.export_alpha_input(build_alpha_graph(model, example), directory, options)
            cache[key] = (model, directory, target, artifacts)
        return cache[key]

    return get


def pytorch_logits(model: torch.nn.Module, images: np.ndarray, alpha: float) -> np.ndarray:
    top = model_method(model).max_alpha
    with torch.no_grad(), at_alpha(model, min(max(alpha, 0.0), top)):
        return model(torch.from_numpy(images)).numpy()


def check_parity(got: np.ndarray, expected: np.ndarray, quantized: bool, what: str) -> None:
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    if quantized:
        assert agreement >= 0.99, what
        return
    # A top-1 "disagreement" inside float noise (two logits within 1e-5) is a tie, not a fault.
    ordered = np.sort(expected, axis=1)
    decided = (ordered[:, -1] - ordered[:, -2]) > 1e-5
    assert float((got.argmax(1) == expected.argmax(1))[decided].mean()) == 1.0, what
    assert float(np.abs(got - expected).max()) <= 1e-3, what


def served_alphas(artifact: Artifact, model: torch.nn.Module) -> list[float]:
    if artifact.kind == "level":
        return artifact.alphas
    top = model_method(model).max_alpha
    discrete = model_method(model).discrete_alphas()
    inside = list(discrete[::2]) + [0.45] if discrete else [0.0, 0.37 * top, 0.8 * top, top]
    return [*inside, -1.0, top + 0.5]  # the last two are clamped in the graph


@pytest.mark.parametrize("target_name", ["onnx", "torchscript-lite"])
@pytest.mark.parametrize("method", list(CASES))
def test_every_artifact_matches_pytorch(exported, held_out, method: str, target_name: str) -> None:
    model, directory, target, artifacts = exported(method, target_name)
    kinds = {(a.kind, a.details.get("mode")) for a in artifacts}
    assert ("level", None) in kinds and ("alpha_input", "single_graph") in kinds
    for artifact in artifacts:
        runner = target.load(directory, entry(artifact))
        for alpha in served_alphas(artifact, model):
            check_parity(runner.run(held_out, alpha), pytorch_logits(model, held_out, alpha),
                         method == "quantized", f"{target_name} {artifact.path} alpha {alpha}")


def test_level_runner_refuses_another_alpha(exported, held_out) -> None:
    _, directory, target, artifacts = exported("unstructured", "onnx")
    level = next(a for a in artifacts if a.kind == "level")
    with pytest.raises(LcsError, match="cannot run alpha"):
        target.load(directory, entry(level)).run(held_out[:1], 0.5)


def test_onnx_files_are_single_files_with_a_dynamic_batch(exported) -> None:
    _, directory, _, artifacts = exported("unstructured", "onnx")
    assert not list(Path(directory).glob("*.data"))
    for artifact in artifacts:
        model = onnx.load(directory / artifact.path, load_external_data=False)
        assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        if artifact.details.get("inputs", [None])[0] == "input":
            assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param


def test_onnx_level_through_the_reference_evaluator(exported, held_out) -> None:
    model, directory, _, artifacts = exported("quantized", "onnx")
    level = next(a for a in artifacts if a.kind == "level" and a.alphas == [0.8])  # 4 bits: UINT4
    images = held_out[:8]
    (got,) = ReferenceEvaluator(str(directory / level.path)).run(None, {"input": images})
    check_parity(got, pytorch_logits(model, images, 0.8), True, "reference evaluator")
    assert float(np.abs(got - pytorch_logits(model, images, 0.8)).max()) <= 1e-3


def test_quantized_onnx_levels_store_integers_and_shrink(exported) -> None:
    _, float_directory, _, float_artifacts = exported("unstructured", "onnx")
    _, directory, _, artifacts = exported("quantized", "onnx")
    dense = next(a for a in float_artifacts if a.kind == "level" and a.alphas == [0.0])
    assert dense.details["weight_storage"] == "float32"
    float_size = (float_directory / dense.path).stat().st_size
    sizes = {}
    for artifact in (a for a in artifacts if a.kind == "level"):
        model = onnx.load(directory / artifact.path)
        types = {t.data_type for t in model.graph.initializer}
        expected = onnx.TensorProto.UINT4 if artifact.alphas == [0.8] else onnx.TensorProto.UINT8
        assert expected in types
        assert artifact.details["opset"] == (21 if artifact.alphas == [0.8] else 18)
        sizes[artifact.alphas[0]] = (directory / artifact.path).stat().st_size
    assert sizes[0.0] < 0.35 * float_size  # 8 bits (stem, classifier and norms stay float)
    assert sizes[0.8] < 0.22 * float_size  # 4 bits


def test_lite_records_that_mobile_optimisation_was_skipped(exported) -> None:
    _, _, _, artifacts = exported("unstructured", "torchscript-lite")
    for artifact in artifacts:
        assert isinstance(artifact.details["optimize_for_mobile"], bool)
        if not artifact.details["optimize_for_mobile"]:
            assert "XNNPACK" in artifact.details["note"]
        # The note is a fact about the file, not how to use it: a level's usage is the level's.
        usage = artifact_usage(artifact.kind, artifact.usage)
        assert usage and "XNNPACK" not in usage and ("alpha" in usage) == (artifact.kind != "level")


def _switch_once(exported, method: str):
    _, directory, _, artifacts = exported(method, "onnx")
    weights = next(a for a in artifacts if a.kind == "alpha_weights")
    return directory, weights, next(a for a in artifacts if a.kind == "alpha_predict")


def test_the_switch_once_predict_graph_has_its_own_kind_and_takes_no_alpha(exported) -> None:
    directory, weights, predict = _switch_once(exported, "unstructured")
    assert predict.path == "alpha_predict.onnx" and weights.details["predict_path"] == predict.path
    inputs = [i.name for i in onnx.load(directory / predict.path).graph.input]
    assert inputs == ["input"]


@pytest.mark.parametrize("level", ["ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"])
def test_add_initializer_is_silently_wrong_with_any_graph_optimisation(exported, held_out, level: str) -> None:
    """What the manifest's usage says: SessionOptions.add_initializer keeps the file's own
    (alpha-0) values wherever ONNX Runtime constant-folded them, from BASIC up; only
    ORT_DISABLE_ALL, add_external_initializers and byte patching give the logits of the
    requested alpha."""
    import onnxruntime as ort

    from targets.onnx.runner import SwitchOnceRunner, _session

    directory, weights, predict = _switch_once(exported, "unstructured")
    runner = SwitchOnceRunner(directory / weights.path, directory / predict.path,
                              weights.details["constant_offsets"])
    alpha, images = 0.9, held_out[:64]
    patched = runner.run(images, alpha)
    arrays = runner.weights.run(None, {"alpha": np.array([alpha], np.float32)})

    def with_add_initializer(optimisation: str) -> np.ndarray:
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimisation)
        values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for a in arrays]
        for name, value in zip(runner.names, values):
            options.add_initializer(name, value)
        return _session(runner.predict_bytes, options).run(None, {"input": images})[0]

    assert "ORT_DISABLE_ALL" in weights.usage and "ORT_ENABLE_EXTENDED" not in weights.usage
    assert float(np.abs(patched - pytorch_logits(exported("unstructured", "onnx")[0], images, alpha)).max()) <= 1e-3
    assert float(np.abs(with_add_initializer("ORT_DISABLE_ALL") - patched).max()) <= 1e-4
    assert float(np.abs(with_add_initializer(level) - patched).max()) > 1e-2  # wrong, and no error raised
    bound = SwitchOnceRunner(directory / weights.path, directory / predict.path, weights.details["constant_offsets"],
                             mode="add_initializer")
    assert float(np.abs(bound.run(images, alpha) - patched).max()) <= 1e-4
    # The Python runner's default hands the constants over before optimisation
    # (add_external_initializers): the same logits as patching the file's bytes.
    assert runner.mode == "external"
    bytes_patched = SwitchOnceRunner(directory / weights.path, directory / predict.path,
                                     weights.details["constant_offsets"], mode="patch")
    np.testing.assert_array_equal(bytes_patched.run(images, alpha), patched)


@pytest.mark.parametrize("method", ["unstructured", "quantized"])
def test_a_nan_alpha_runs_as_alpha_zero_in_every_onnx_alpha_graph(exported, held_out, method: str) -> None:
    model, directory, target, artifacts = exported(method, "onnx")
    images = held_out[:32]
    expected = pytorch_logits(model, images, 0.0)
    for artifact in (a for a in artifacts if a.kind != "level"):
        runner = target.load(directory, entry(artifact))
        got = runner.run(images, float("nan"))
        check_parity(got, expected, method == "quantized", f"{artifact.path} at NaN")


def test_each_onnx_artifact_records_the_opset_of_its_own_file(exported) -> None:
    _, directory, _, artifacts = exported("quantized", "onnx")
    from targets.onnx.files import file_opset

    opsets = {a.path: a.details["opset"] for a in artifacts}
    for artifact in artifacts:
        assert artifact.details["opset"] == file_opset(onnx.load(directory / artifact.path))
    assert sorted(set(opsets.values())) == [18, 21]  # 8-bit levels and alpha graphs 18, the 4-bit level 21


@pytest.mark.parametrize(("options", "message"), [
    ({"opset": 99}, "--opset 99 is not an opset"), ({"opset": 3}, "--opset 3 is not an opset"),
    ({"opset": "abc"}, "'abc' is not a whole number"), ({"opset": 18.5}, "is not a whole number"),
    ({"single_graph": "maybe"}, "single_graph='maybe' is not true or false"),
])
def test_bad_onnx_options_are_refused_before_any_work(options: dict, message: str) -> None:
    with pytest.raises(LcsError, match=message):
        get_target("onnx").parse_options(dict(options))
