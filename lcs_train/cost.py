"""What a level costs: parameters, non-zero parameters and multiply-accumulates.

Counted on the subspace itself at a given alpha, from the weights it really multiplies with:
zeros of unstructured levels are not counted, and under structured sparsity a layer counts
only its kept output channels and the kept channels of its (masked) input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lcs_train.compression import channel_mask
from lcs_train.layers import CompressibleConv2d, CompressibleLayer, CompressibleLinear, CompressibleNorm
from lcs_train.methods import Structured
from lcs_train.methods.base import Dense
from lcs_train.subspace import at_alpha, compressible_layers, model_method


def _effective_weight(layer: CompressibleLayer, alpha: Tensor, width: Tensor | None) -> Tensor:
    weight = layer.compressed_weight(alpha).detach()
    if width is None:
        return weight
    compressible = not isinstance(layer.method, Dense)
    if compressible:
        weight = weight * channel_mask(weight.shape[0], width).reshape(-1, *([1] * (weight.dim() - 1)))
    if compressible or isinstance(layer, CompressibleLinear):
        # Every compressible conv and the classifier read a channel-masked input.
        weight = weight * channel_mask(weight.shape[1], width).reshape(1, -1, *([1] * (weight.dim() - 2)))
    return weight


@torch.no_grad()
def level_cost(model: nn.Module, alpha: float, input_shape: list[int]) -> dict[str, Any]:
    """Parameters, non-zeros, MACs and the measured compression of ``model`` at ``alpha``."""
    method = model_method(model)
    alpha_tensor = torch.full((1,), float(alpha))
    width = 1.0 - alpha_tensor if isinstance(method, Structured) else None
    positions: dict[CompressibleLayer, int] = {}
    hooks = [
        layer.register_forward_hook(lambda m, _i, out: positions.__setitem__(m, out[0, 0].numel()))
        for layer in compressible_layers(model)
        if isinstance(layer, CompressibleConv2d | CompressibleLinear)
    ]
    try:
        with at_alpha(model, alpha):
            was_training = model.training
            model.eval()
            model(torch.zeros(1, *input_shape))
            model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    parameters = nonzero = macs = prunable = prunable_zero = 0
    for layer, count in positions.items():
        weight = _effective_weight(layer, alpha_tensor, width)
        kept = int((weight != 0).sum())
        parameters += weight.numel()
        nonzero += kept
        macs += kept * count
        if not isinstance(layer.method, Dense):
            prunable += weight.numel()
            prunable_zero += weight.numel() - kept
    for layer in compressible_layers(model):
        if isinstance(layer, CompressibleNorm):
            channels = layer.channels
            kept_channels = int(channel_mask(channels, width).sum()) if width is not None else channels
            parameters += 2 * channels
            nonzero += 2 * kept_channels
    return {
        "alpha": float(alpha),
        **method.level(alpha),
        "measured_sparsity": prunable_zero / max(1, prunable),
        "parameters": parameters,
        "nonzero_parameters": nonzero,
        "macs": macs,
        "flops": 2 * macs,
    }
