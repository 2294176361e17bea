"""Compact ONNX levels: pruned weights as a bit mask plus nonzero values, 5- to 7-bit codes
packed; smaller files, the same logits, the decoding folded away when a session loads them."""

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
from targets.onnx.bitpack import UNPACK_OP_TYPES, store_packed_codes
from targets.onnx.bitpack import PREFIX as PACKED_PREFIX
from targets.onnx.compact import DECODE_OP_TYPES, PREFIX, store_compact_weights, worth_compacting
from targets.onnx.runner import LevelRunner

pytestmark = pytest.mark.xdist_group("onnx_compact")


def export_twice(checkpoint: Path, alpha: float, factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """The level at ``alpha`` exported compact (the default) and with ``dense_weights``."""
    model, _ = load_subspace(checkpoint)
    level = Level(alpha, materialize_level(model, alpha, [1, 8, 8]), {})
    target = get_target("onnx")
    exported = {}
    for name, options in {"compact": {}, "dense": {"dense_weights": True}}.items():
        directory = factory.mktemp(f"onnx-{name}")
        (artifact,) = target.export_levels([level], torch.zeros(1, 1, 8, 8), directory, target.parse_options(options))
        exported[name] = (directory / artifact.path, artifact.details)
    return exported


@pytest.fixture(scope="module")
def sparse_levels(subspace_checkpoint, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The fixture's 90 % level, compact and dense."""
    return export_twice(subspace_checkpoint("unstructured", "line"), 0.9, tmp_path_factory)


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    return load_dataset("digits").held_out()[0].numpy()


def optimized_graph(path: Path, directory: Path, level: ort.GraphOptimizationLevel) -> onnx.GraphProto:
    """The graph ONNX Runtime runs after loading ``path`` at ``level`` (its optimised model)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(directory / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(path.read_bytes(), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(directory / "optimized.onnx")).graph


def test_the_compact_90_percent_level_is_at_most_a_fifth_of_the_dense_file(sparse_levels) -> None:
    (compact, details), (dense, dense_details) = sparse_levels["compact"], sparse_levels["dense"]
    assert details["weight_storage"] == "float32_bitmask" and details["bitmask_weights"] > 0
    assert dense_details["weight_storage"] == "float32" and "bitmask_weights" not in dense_details
    ratio = compact.stat().st_size / dense.stat().st_size
    assert ratio <= 0.20, f"{compact.stat().st_size} / {dense.stat().st_size} = {ratio:.3f}"


def test_the_compact_level_gives_the_dense_level_s_logits_exactly(sparse_levels, held_out) -> None:
    compact = LevelRunner(sparse_levels["compact"][0], 0.9).run(held_out, 0.9)
    dense = LevelRunner(sparse_levels["dense"][0], 0.9).run(held_out, 0.9)
    assert np.array_equal(compact, dense)


LEVELS = [ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]


@pytest.mark.parametrize("level", LEVELS)
def test_onnx_runtime_folds_the_decoding_away_when_it_loads_the_file(sparse_levels, tmp_path, level) -> None:
    path = sparse_levels["compact"][0]
    before = onnx.load(str(path))
    assert DECODE_OP_TYPES <= {node.op_type for node in before.graph.node}
    after = optimized_graph(path, tmp_path, level)
    left = [node.name for node in after.node if node.op_type in DECODE_OP_TYPES or node.name.startswith(PREFIX)]
    assert left == []
    assert not any(tensor.name in (PREFIX + "mask", PREFIX + "values") for tensor in after.initializer)


def test_odd_sizes_negative_zeros_and_special_values_come_back_exactly() -> None:
    rng = np.random.default_rng(3)
    odd = (9, 15, 17)  # 2,295 elements: the last mask byte is padded
    weights = {"odd": rng.standard_normal(odd).astype(np.float32), "small": np.zeros((2, 3), np.float32),
               "dense": rng.standard_normal((4, 4)).astype(np.float32)}
    weights["odd"][rng.random(odd) < 0.8] = -0.0
    weights["odd"].flat[[0, 2294]] = [np.nan, np.float32(1e-45)]  # first and last element; a denormal
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


@pytest.mark.parametrize("bits", [5, 6, 7])
def test_packed_codes_of_odd_lengths_come_back_exactly(bits: int) -> None:
    rng = np.random.default_rng(bits)
    codes = {"a": rng.integers(0, 1 << bits, (3, 5, 7), dtype=np.uint8), "b": np.array([(1 << bits) - 1], np.uint8)}
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in codes], "g", [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.UINT8, c.shape) for name, c in codes.items()],
        [numpy_helper.from_array(c, name) for name, c in codes.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    store_packed_codes(model, list(codes), bits)
    onnx.checker.check_model(model)
    stream = next(t for t in model.graph.initializer if t.name == PACKED_PREFIX + "bytes")
    assert stream.dims == [-(-106 * bits // 8) + 1]  # 106 codes of ``bits`` bits, one padding byte
    outputs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    for (name, original), got in zip(codes.items(), outputs, strict=True):
        assert got.dtype == np.uint8 and np.array_equal(got, original), name


def test_a_6_bit_level_is_packed_smaller_exact_and_unpacked_at_load(subspace_checkpoint, tmp_path_factory,
                                                                   held_out, tmp_path) -> None:
    levels = export_twice(subspace_checkpoint("quantized", "line"), 0.4, tmp_path_factory)  # 8 - 5 * 0.4 = 6 bits
    (packed, details), (plain, plain_details) = levels["compact"], levels["dense"]
    assert details["weight_storage"] == "uint6_packed" and plain_details["weight_storage"] == "uint8"
    codes = sum(numpy_helper.to_array(t).size for t in onnx.load(str(plain)).graph.initializer
                if t.name.endswith("_quantized"))
    graph = onnx.load(str(packed)).graph
    unpacking = sum(n.ByteSize() for n in graph.node if n.name.startswith(PACKED_PREFIX)) + sum(
        t.ByteSize() for t in graph.initializer
        if t.name.startswith(PACKED_PREFIX) and t.name != PACKED_PREFIX + "bytes")
    # A quarter of the code bytes saved, less what the unpacking nodes and their constants take.
    assert plain.stat().st_size - packed.stat().st_size >= codes // 4 - unpacking
    assert np.array_equal(LevelRunner(packed, 0.4).run(held_out, 0.4), LevelRunner(plain, 0.4).run(held_out, 0.4))
    after = optimized_graph(packed, tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert [n.name for n in after.node if n.op_type in UNPACK_OP_TYPES or n.name.startswith(PACKED_PREFIX)] == []


def test_a_level_with_too_few_zeros_to_pay_for_the_subgraph_is_left_alone() -> None:
    weight = np.ones((16, 16), np.float32)
    weight[:, :8] = 0.0  # half zeros: smaller as mask plus values, but not once the subgraph is counted
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["out"])], "g", [],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, weight.shape)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert worth_compacting(weight)
    before = model.SerializeToString()
    assert store_compact_weights(model) == [] and model.SerializeToString() == before
