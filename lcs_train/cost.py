"""What a level costs: one cost model, used by ``lcs-train eval`` and by the bundle manifest.

Counted on the materialised level (``lcs_train.materialize``), from the weights it really
holds at their physical shapes: a structured level's narrower layers, an unstructured level's
zeros, a quantized level's bit width. Units are named in ``COST_UNITS`` and written beside the
figures in both reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lcs_train.materialize import MaterializedLevel, materialize

COST_UNITS: dict[str, str] = {
    "parameters": "count of every stored parameter (weights, biases, norm affine), one image's network",
    "nonzeros": "count of the parameters that are not zero",
    "macs": "multiply-accumulates of conv and linear layers for one image, dense, at the level's own shapes",
    "flops": "2 x macs",
    "nonzero_flops": "2 x multiply-accumulates over non-zero weights only (what a sparse kernel computes)",
    "weight_bytes": "bytes of conv and linear weights stored at their bit width (32 for float)",
}


@torch.no_grad()
def count_cost(level: MaterializedLevel, input_shape: Sequence[int]) -> dict[str, Any]:
    """Parameters, non-zeros, MACs / FLOPs, weight bytes and the measured compression of a
    materialised level (see ``COST_UNITS``). ``input_shape`` is [C, H, W] or [1, C, H, W]."""
    positions = _output_positions(level.module, [facts.name for facts in level.layers], input_shape)
    weight_names = {f"{facts.name}.weight" for facts in level.layers}
    others = [(name, value) for name, value in level.module.named_parameters() if name not in weight_names]
    weights = [facts.weight for facts in level.layers]
    macs = sum(f.weight.shape[0] * f.weight[0].numel() * positions[f.name] for f in level.layers)
    nonzero_macs = sum(int(torch.count_nonzero(f.weight)) * positions[f.name] for f in level.layers)
    prunable = [facts for facts in level.layers if facts.compressed]
    return {
        "parameters": int(sum(w.numel() for w in weights) + sum(v.numel() for _, v in others)),
        "nonzeros": int(sum(int(torch.count_nonzero(w)) for w in weights)
                        + sum(int(torch.count_nonzero(v)) for _, v in others)),
        "macs": int(macs),
        "flops": int(2 * macs),
        "nonzero_flops": int(2 * nonzero_macs),
        "weight_bytes": int(sum(math.ceil(f.weight.numel() * f.bits / 8) for f in level.layers)),
        "measured": level.method.measure(prunable),
        "compression": dict(level.compression),
    }


def level_cost(model: nn.Module, alpha: float, input_shape: Sequence[int]) -> dict[str, Any]:
    """The cost of subspace ``model`` at ``alpha`` (materialised first; see ``count_cost``)."""
    return {"alpha": float(alpha), **count_cost(materialize(model, alpha, input_shape), input_shape)}


def _output_positions(module: nn.Module, names: list[str], input_shape: Sequence[int]) -> dict[str, int]:
    """Output positions (pixels; 1 for a linear layer) of each named layer for one image."""
    positions: dict[str, int] = {}

    def recorder(name: str) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            positions[name] = output[0, 0].numel() if output.dim() > 2 else 1
        return record

    handles = [module.get_submodule(name).register_forward_hook(recorder(name)) for name in names]
    try:
        module(torch.zeros(1, *list(input_shape)[-3:]))
    finally:
        for handle in handles:
            handle.remove()
    return positions
