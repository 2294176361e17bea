"""Unstructured ONNX levels stored as a bit mask plus nonzero values: smaller, exact, folded at load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lcs_train.data import load_dataset
from lcs_train.errors import LcsError
from lcs_train.materialize import materialize_level
from lcs_train.restore import load_subspace
from targets.base import get_target
from targets.inputs import Level
from targets.onnx.compact import DECODE_OP_TYPES, PREFIX, store_compact_weights
from targets.onnx.runner import LevelRunner

pytestmark = pytest.mark.xdist_group("onnx_compact")


@pytest.fixture(scope="module")
def sparse_levels(subspace_checkpoint, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The fixture's 90 % level exported twice: compact (the default) and with ``dense_weights``."""
    model, _ = load_subspace(subspace_checkpoint("unstructured", "line"))
    level = Level(0.9, materialize_level(model, 0.9, [1, 8, 8]), {})
    target = get_target("onnx")
    exported = {}
    for name, options in {"compact": {}, "dense": {"dense_weights": True}}.items():
        directory = tmp_path_factory.mktemp(f"onnx-{name}")
        (artifact,) = target.export_levels([level], torch.zeros(1, 1, 8, 8), directory, target.parse_options(options))
        exported[name] = (directory / artifact.path, artifact.details)
    return exported


def test_the_compact_90_percent_level_is_at_most_a_fifth_of_the_dense_file(sparse_levels) -> None:
    (compact, details), (dense, dense_details) = sparse_levels["compact"], sparse_levels["dense"]
    assert details["weight_storage"] == "float32_bitmask" and details["bitmask_weights"] > 0
    assert dense_details["weight_storage"] == "float32" and "bitmask_weights" not in dense_details
    ratio = compact.stat().st_size / dense.stat().st_size
    assert ratio <= 0.20, f"{compact.stat().st_size} / {dense.stat().st_size} = {ratio:.3f}"


def test_the_compact_level_gives_the_dense_level_s_logits_exactly(sparse_levels) -> None:
    images = load_dataset("digits").held_out()[0].numpy()
    compact = LevelRunner(sparse_levels["compact"][0], 0.9).run(images, 0.9)
    dense = LevelRunner(sparse_levels["dense"][0], 0.9).run(images, 0.9)
    assert np.array_equal(compact, dense)


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_onnx_runtime_folds_the_decoding_away_when_it_loads_the_file(sparse_levels, tmp_path, level) -> None:
    path = sparse_levels["compact"][0]
    before = onnx.load(str(path))
    assert DECODE_OP_TYPES <= {node.op_type for node in before.graph.node}
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(path.read_bytes(), options, providers=["CPUExecutionProvider"])
    after = onnx.load(str(tmp_path / "optimized.onnx"))
    left = [node.name for node in after.graph.node if node.op_type in DECODE_OP_TYPES or node.name.startswith(PREFIX)]
    assert left == []
    assert not any(tensor.name in (PREFIX + "mask", PREFIX + "values") for tensor in after.graph.initializer)


def test_odd_sizes_negative_zeros_and_special_values_come_back_exactly() -> None:
    rng = np.random.default_rng(3)
    weights = {"odd": rng.standard_normal((3, 5, 7)).astype(np.float32), "small": np.zeros((2, 3), np.float32),
               "dense": rng.standard_normal((4, 4)).astype(np.float32)}
    weights["odd"][rng.random((3, 5, 7)) < 0.8] = -0.0
    weights["odd"].flat[[0, 104]] = [np.nan, np.float32(1e-45)]  # first and last element; a denormal
    weights["small"][1, 2] = np.inf
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in weights], "g", [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, w.shape) for name, w in weights.items()],
        [numpy_helper.from_array(w, name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert store_compact_weights(model) == ["odd"]  # 6 floats and a dense 4x4 are not worth it
    onnx.checker.check_model(model)
    outputs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    for (name, original), got in zip(weights.items(), outputs, strict=True):
        expected = np.where(original == 0, np.float32(0.0), original)  # -0.0 comes back as +0.0
        assert got.shape == original.shape and got.tobytes() == expected.tobytes(), name


def test_the_validated_app_bundle_stores_its_sparse_levels_compact(onnx_app_bundle) -> None:
    manifest = json.loads((onnx_app_bundle / "manifest.json").read_text())
    levels = {a["alphas"][0]: a for a in manifest["artifacts"] if a["kind"] == "level"}
    assert levels[0.0]["details"]["weight_storage"] == "float32"  # nothing pruned: nothing to gain
    for alpha in (0.5, 0.9):
        assert levels[alpha]["details"]["weight_storage"] == "float32_bitmask"
        assert [check["passed"] for check in levels[alpha]["parity"]] == [True]
    assert levels[0.9]["bytes"] < levels[0.5]["bytes"] < levels[0.0]["bytes"]


def test_dense_weights_must_be_true_or_false() -> None:
    with pytest.raises(LcsError, match="dense_weights='yes' is not true or false"):
        get_target("onnx").parse_options({"dense_weights": "yes"})
