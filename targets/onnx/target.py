"""The ``onnx`` target: its options, and the three verbs over ``levels``, ``alpha`` and ``runner``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort
from torch import Tensor

from lcs_train.errors import LcsError
from targets.base import (
    ALPHA_INPUT, LEVELS, SWITCH_ONCE, Artifact, Target, artifact_path, option, option_value, register_target,
    switch_value,
)
from targets.inputs import AlphaGraph, Level
from targets.onnx.alpha import export_alpha_graphs
from targets.onnx.files import FLOAT_OPSET, MAX_OPSET, MIN_OPSET
from targets.onnx.levels import export_level
from targets.onnx.runner import AlphaInputRunner, LevelRunner, SwitchOnceRunner


@dataclass(frozen=True)
class OnnxOptions:
    """What an ONNX export was asked for, validated (``OnnxTarget.parse_options``)."""

    opset: int | None = option(None, "ONNX opset to export with (default: the target's)")
    single_graph: bool = option(True, "write alpha_input.onnx (alpha fed with every call)", flag=False)
    switch_once: bool = option(True, "write the switch-once pair alpha_weights.onnx + alpha_predict.onnx",
                               flag=False)
    dense_weights: bool = option(False, "store level weights as plain tensors: every zero of a pruned level, 5- to "
                                        "7-bit codes one per byte (default: a bit mask plus the nonzero values, "
                                        "codes packed; rebuilt once when a session loads the file)")


@register_target
class OnnxTarget(Target):
    """ONNX files run by ONNX Runtime (CPU), one per level plus the alpha-input graphs."""

    name = "onnx"
    runtime = f"onnxruntime {ort.__version__}"
    Options = OnnxOptions
    capabilities = frozenset({LEVELS, ALPHA_INPUT, SWITCH_ONCE})

    def parse_options(self, values: Mapping[str, Any]) -> OnnxOptions:
        """``opset``: a whole number in [MIN_OPSET, MAX_OPSET]; the switches are booleans."""
        opset = option_value(values, "opset", int, "--opset", f"--opset {FLOAT_OPSET}")
        if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
            raise LcsError(f"--opset {opset} is not an opset this exporter writes",
                           f"give --opset between {MIN_OPSET} and {MAX_OPSET} (default {FLOAT_OPSET})")
        return OnnxOptions(opset, switch_value(values, "single_graph", True), switch_value(values, "switch_once", True),
                           switch_value(values, "dense_weights", False))

    def export_levels(self, levels: list[Level], example: Tensor, directory: Path, options: OnnxOptions
                      ) -> list[Artifact]:
        """One inline .onnx per level; quantized weights stored as UINT8 / UINT4 codes (5 to 7 bits
        packed), pruned weights as a bit mask plus values (neither with ``dense_weights``)."""
        return [export_level(level, example, directory, options.opset, options.dense_weights) for level in levels]

    def export_alpha_input(self, graph: AlphaGraph, directory: Path, options: OnnxOptions) -> list[Artifact]:
        """The single alpha-input graph and the switch-once pair (weights + predict)."""
        return export_alpha_graphs(graph, directory, options.opset, options.single_graph, options.switch_once)

    def load(self, directory: Path, artifact: dict[str, Any]) -> Any:
        """A runner for a level file, the single alpha-input graph or the switch-once pair."""
        details = artifact.get("details", {})
        path = artifact_path(directory, artifact["path"])
        kind = artifact["kind"]
        if kind == "level":
            return LevelRunner(path, float(artifact["alphas"][0]))
        mode = details.get("switch_mode", "external")
        if kind == "alpha_weights":
            predict = artifact_path(directory, _detail(details, "predict_path", kind))
            return SwitchOnceRunner(path, predict, _detail(details, "constant_offsets", kind), mode)
        if kind == "alpha_predict":
            weights = artifact_path(directory, _detail(details, "weights_path", kind))
            return SwitchOnceRunner(weights, path, _detail(details, "constant_offsets", kind), mode)
        if kind == "alpha_input":
            return AlphaInputRunner(path)
        raise LcsError(f"the onnx target cannot load artifact kind {kind!r}",
                       "use a manifest written by lcs-export for the onnx target")


def _detail(details: dict[str, Any], key: str, kind: str) -> Any:
    if key not in details:
        raise LcsError(f"a {kind} artifact needs details.{key}, and this one has none",
                       "use a manifest written by lcs-export for the onnx target")
    return details[key]


