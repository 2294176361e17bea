"""ONNX alpha-input artifacts: the single graph and the switch-once pair (weights + predict)
whose constants a host swaps by patching bytes (see ``targets.onnx`` and ``offsets``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from lcs_train.alpha_graph import ALPHA_NAME, INPUT_NAME, OUTPUT_NAME
from targets.base import Artifact
from targets.inputs import AlphaGraph, SwitchOnce, batch_example
from targets.onnx.files import FLOAT_OPSET, batch_dynamic, export_onnx, file_opset, save_inline, strip_debug_info

SINGLE_GRAPH_USAGE = ("feed input (float32 NCHW) and alpha (float32 [1]) with every call; "
                      "the compressed weights are recomputed on every call (slow per call)")
SWITCH_ONCE_USAGE = (
    "switch-once: on a level change run alpha_weights.onnx with alpha (float32 [1]); copy the "
    "raw little-endian bytes of each output into a copy of alpha_predict.onnx's bytes at "
    "details.constant_offsets[name].offset and open a session from those bytes; then run it "
    "with input per call. With the ORT C/C++/Python API, SessionOptions."
    "add_external_initializers on a copy whose constants are external-data placeholders is "
    "faster (no file copy per switch) and also exact (lcs_export's runner does this). "
    "Do not use SessionOptions.add_initializer for this: from "
    "ORT_ENABLE_BASIC up, constant folding keeps the file's own values and the logits are "
    "silently wrong (it is correct only with ORT_DISABLE_ALL, unoptimised). A NaN alpha runs "
    "as alpha 0. Unswitched, alpha_predict.onnx is the alpha-0 level."
)


def export_alpha_graphs(graph: AlphaGraph, directory: Path, opset: int | None, single_graph: bool,
                        switch_once: bool) -> list[Artifact]:
    """``alpha_input.onnx`` (with ``single_graph``) and the switch-once pair (with ``switch_once``
    and ``graph.switch_once`` built)."""
    directory = Path(directory)
    opset = int(opset or FLOAT_OPSET)
    alphas = graph.alphas
    batch = batch_example(graph.example)
    artifacts = []
    with torch.no_grad():
        if single_graph:
            model = export_onnx(
                graph.module, (batch, torch.tensor([0.0], dtype=torch.float32)), [INPUT_NAME, ALPHA_NAME],
                [OUTPUT_NAME], (batch_dynamic(), None), opset,
            )
            save_inline(model, directory / "alpha_input.onnx")
            artifacts.append(Artifact("alpha_input.onnx", "alpha_input", alphas, {
                "opset": file_opset(model), "mode": "single_graph", "inputs": [INPUT_NAME, ALPHA_NAME],
                "outputs": [OUTPUT_NAME], "alpha_clamped_to": alphas,
            }, usage=SINGLE_GRAPH_USAGE))
        if switch_once and graph.switch_once is not None:
            artifacts.extend(_export_switch_once(graph.switch_once, batch, directory, opset, alphas))
    return artifacts


def _export_switch_once(
    pair: SwitchOnce, batch: torch.Tensor, directory: Path, opset: int, alphas: list[float]
) -> list[Artifact]:
    names = list(pair.constant_names)
    weights_model = export_onnx(pair.weights, (torch.tensor([0.0]),), [ALPHA_NAME], names, (None,), opset)
    _check_weights_outputs(weights_model, names)
    predict_model = export_onnx(
        pair.predict, (batch,), [INPUT_NAME], [OUTPUT_NAME], (batch_dynamic(),), opset, keep_initializers=names,
    )
    _check_predict_initializers(predict_model, names)
    save_inline(weights_model, directory / "alpha_weights.onnx")
    strip_debug_info(predict_model)
    onnx.checker.check_model(predict_model)
    predict_bytes, offsets = constant_offsets(predict_model, names)
    (directory / "alpha_predict.onnx").write_bytes(predict_bytes)
    common = {"constants": names, "alpha_clamped_to": alphas, "constant_offsets": offsets}
    return [
        Artifact("alpha_weights.onnx", "alpha_weights", alphas, {
            **common, "opset": file_opset(weights_model), "mode": "switch_once", "inputs": [ALPHA_NAME],
            "outputs": names, "predict_path": "alpha_predict.onnx",
        }, usage=SWITCH_ONCE_USAGE),
        Artifact("alpha_predict.onnx", "alpha_predict", alphas, {
            **common, "opset": file_opset(predict_model), "mode": "switch_once", "inputs": [INPUT_NAME],
            "outputs": [OUTPUT_NAME],
            "weights_path": "alpha_weights.onnx", "initializers_replaced_per_switch": names,
        }, usage=SWITCH_ONCE_USAGE),
    ]


def constant_offsets(model: onnx.ModelProto, names: list[str]) -> tuple[bytes, list[dict[str, Any]]]:
    """Serialise ``model`` and find where each named initializer's raw bytes lie in the file.

    Each named initializer is first given unique random bytes of the same length, so the
    protobuf layout is the same as with the real values and every search has one answer;
    the real values are then written at the found offsets. Returns the file bytes and, per
    name, ``{"name", "offset", "bytes", "dtype", "shape"}`` (little-endian raw data).
    """
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    marked = copy.deepcopy(model)
    marked_initializers = {tensor.name: tensor for tensor in marked.graph.initializer}
    generator = np.random.default_rng(0)
    markers = {}
    for name in names:
        raw = initializers[name].raw_data
        if not raw:
            raise RuntimeError(f"initializer {name} is not stored as raw data")
        markers[name] = generator.bytes(max(len(raw), 1))
        marked_initializers[name].raw_data = markers[name]
    data = bytearray(marked.SerializeToString())
    table = []
    for name in names:
        raw, marker = initializers[name].raw_data, markers[name]
        offset = data.find(marker)
        if offset < 0 or (len(marker) >= 8 and data.find(marker, offset + 1) >= 0):
            raise RuntimeError(f"could not locate initializer {name} in the serialised predict graph")
        data[offset:offset + len(raw)] = raw
        array = numpy_helper.to_array(initializers[name])
        table.append({"name": name, "offset": offset, "bytes": len(raw),
                      "dtype": str(array.dtype), "shape": list(array.shape)})
    return bytes(data), table


def _check_weights_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    produced = [output.name for output in model.graph.output]
    if produced != names:
        raise RuntimeError(f"the weights graph's outputs were renamed: {produced[:3]} ... vs {names[:3]} ...")


def _check_predict_initializers(model: onnx.ModelProto, names: list[str]) -> None:
    present = {tensor.name for tensor in model.graph.initializer}
    missing = [name for name in names if name not in present]
    if missing:
        raise RuntimeError(f"the predict graph lost its named constants (first: {missing[:3]})")
