"""ONNX level files: one inline .onnx per materialised level.

Quantized levels store their weights as integers: each float weight initializer is replaced
by ``DequantizeLinear`` over a UINT8 initializer, or a UINT4 one (packed two per byte, opset
21) at 4 bits and below, with the per-tensor scale and zero point. Float levels whose weights
are mostly zeros (unstructured levels) store them as a bit mask plus the nonzero values,
rebuilt once when the runtime loads the file (``targets.onnx.compact``). 5- to 7-bit codes,
for which ONNX has no type, are packed back to back and unpacked to UINT8 once at load
(``targets.onnx.bitpack``). ``dense_weights`` turns both off.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import Tensor, nn

from lcs_train.alpha_graph import INPUT_NAME, OUTPUT_NAME
from lcs_train.level_layers import QuantizedConv2d, QuantizedLinear, QuantizedWeight
from targets.base import Artifact
from targets.inputs import Level, batch_example
from targets.onnx.bitpack import PACKED_BITS, store_packed_codes
from targets.onnx.compact import store_compact_weights
from targets.onnx.files import FLOAT_OPSET, INT4_OPSET, batch_dynamic, export_onnx, file_opset, save_inline


def level_file(alpha: float) -> str:
    """File name of a level."""
    return f"level_alpha_{alpha:.4f}.onnx"


def export_level(level: Level, example: Tensor, directory: Path, opset: int | None, dense_weights: bool = False
                 ) -> Artifact:
    """One inline .onnx for ``level``; quantized weights stored as UINT8 / UINT4 codes (5 to 7 bits
    packed), mostly-zero float weights as a bit mask plus values; neither packed nor masked
    with ``dense_weights``."""
    view, quantized = _float_view(level.module)
    bits = min((w.bits for w in quantized.values()), default=32)
    requested = int(opset or FLOAT_OPSET)
    opset = max(requested, INT4_OPSET) if bits <= 4 else requested
    with torch.no_grad():
        model = export_onnx(
            view.eval(), (batch_example(example),), [INPUT_NAME], [OUTPUT_NAME],
            (batch_dynamic(),), opset, keep_initializers=list(quantized),
        )
    replaced = store_integer_weights(model, quantized)
    compacted = [] if dense_weights else store_compact_weights(model)
    packed = bits in PACKED_BITS and not dense_weights and len({w.bits for w in quantized.values()}) == 1
    if packed:
        store_packed_codes(model, [f"{name}_quantized" for name in quantized], bits)
    path = Path(directory) / level_file(level.alpha)
    save_inline(model, path)
    details: dict[str, Any] = {
        "opset": file_opset(model), "alpha": level.alpha, "dynamic_batch": True, "inline_weights": True,
        "inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME],
        "weight_storage": "float32" if not quantized else ("uint4" if bits <= 4 else "uint8"),
    }
    if quantized:
        details["dequantize_linear_weights"] = replaced
    if packed:
        details["weight_storage"] = f"uint{bits}_packed"  # unpacked to UINT8 codes at load
    if compacted:
        # Float32 values still, but only the nonzero ones, behind a one-bit-per-weight mask.
        # (A quantized level's float tensors, a zero-initialised norm bias say, can qualify too.)
        details["bitmask_weights"] = len(compacted)
        if not quantized:
            details["weight_storage"] = "float32_bitmask"
    return Artifact(path.name, "level", [level.alpha], details)


def _float_view(level: nn.Module) -> tuple[nn.Module, dict[str, QuantizedWeight]]:
    """A copy whose integer-coded weights are float buffers named ``<layer>.weight.value``.

    The exporter would constant-fold small dequantizations and keep large ones as
    Cast/Sub/Mul; exporting plain float weights and swapping each for a DequantizeLinear
    afterwards gives the same integer storage for every layer.
    """
    view = copy.deepcopy(level)
    originals: dict[str, QuantizedWeight] = {}
    for name, module in list(view.named_modules()):
        if isinstance(module, QuantizedConv2d | QuantizedLinear):
            originals[f"{name}.weight.value"] = module.weight
            module.weight = _FloatWeight(module.weight())
    return view, originals


class _FloatWeight(nn.Module):
    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value.detach().clone())

    def forward(self) -> Tensor:
        return self.value


def _integer_initializers(weight: QuantizedWeight, name: str) -> list[onnx.TensorProto]:
    """Codes, scale and zero point of one weight; 4 bits and below stored as packed UINT4."""
    codes = weight.codes.numpy()
    zero_point = np.asarray(weight.zero_point.item())
    if weight.bits <= 4:
        import ml_dtypes

        codes, zero_point = codes.astype(ml_dtypes.uint4), zero_point.astype(ml_dtypes.uint4)
    else:
        zero_point = zero_point.astype(np.uint8)
    return [
        numpy_helper.from_array(codes, f"{name}_quantized"),
        numpy_helper.from_array(np.asarray(weight.scale.item(), dtype=np.float32), f"{name}_scale"),
        numpy_helper.from_array(zero_point, f"{name}_zero_point"),
    ]


def store_integer_weights(model: onnx.ModelProto, quantized: dict[str, QuantizedWeight]) -> int:
    """Replace each float weight initializer by DequantizeLinear over its integer codes.

    The float initializer must equal the dequantized codes bit for bit (it was exported from
    them), so the graph computes exactly what it did. Returns how many were replaced.
    """
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    nodes = []
    for name, weight in quantized.items():
        tensor = initializers.get(name)
        if tensor is None:
            raise RuntimeError(f"the ONNX export renamed or folded quantized weight {name}")
        if not np.array_equal(numpy_helper.to_array(tensor), weight().numpy()):
            raise RuntimeError(f"the exported weight {name} differs from its dequantized codes")
        model.graph.initializer.remove(tensor)
        model.graph.initializer.extend(_integer_initializers(weight, name))
        nodes.append(helper.make_node(
            "DequantizeLinear", [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"], [name],
            name=f"{name}_dequantize",
        ))
    # Initializer-only inputs: placing the nodes first keeps the graph topologically sorted.
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    return len(nodes)


