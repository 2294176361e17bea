"""Materialising a level: the subspace at one alpha as a plain network, compression made real.

``materialize(model, alpha, input_shape)`` builds a module from standard torch layers
(``nn.Conv2d``, ``nn.Linear``, ``nn.GroupNorm``, ``nn.InstanceNorm2d``) and the small layers of
``lcs_train.level_layers`` for quantized levels, traceable by ``torch.export`` and TorchScript,
computing what the subspace computes at ``alpha`` in eval mode. Each layer's method says what
its plain counterpart holds (``CompressionMethod.materialize_weighted``):

- unstructured: the interpolated weights with the pruned entries stored as zeros;
- structured: a physically narrower network. Each layer keeps the channels its channel plan
  (``lcs_train.channel_plan``, derived from the traced graph) says anyone still reads; masked
  channels are exactly zero in the subspace, so dropping them changes nothing but the cost;
- quantized: weights stored as integer codes (uint8) with a per-tensor scale and zero point,
  dequantized in ``forward`` so that exporters can write the integers; the inputs of
  compressed layers fake-quantized with constants for that bit width.

What a level costs is counted from the result by ``lcs_train.cost``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lcs_train.channel_plan import derive_channel_plan
from lcs_train.layers import CompressibleLayer, CompressibleNorm, CompressibleWeighted
from lcs_train.methods.base import CompressionMethod, LayerFacts
from lcs_train.subspace import check_model_alpha, model_method


@dataclass
class MaterializedLevel:
    """A level as plain modules, with what the cost model and the exporters need to know."""

    alpha: float
    module: nn.Module  # eval mode, no gradients
    method: CompressionMethod
    compression: dict[str, Any]  # the method's nominal unit at alpha: sparsity, width or bits
    prunable: list[str] = field(default_factory=list)  # names of the compressed conv / linear layers
    layers: list[LayerFacts] = field(default_factory=list)  # every conv / linear layer, as materialised


@torch.no_grad()
def materialize(model: nn.Module, alpha: float, input_shape: Sequence[int] | None = None) -> MaterializedLevel:
    """``model`` (a subspace) at ``alpha`` as a plain network, compression real.

    ``alpha`` is validated against the trained range. ``input_shape`` ([C, H, W]) is needed
    when the method makes levels narrower (structured), to trace the channel plan.
    """
    method = model_method(model)
    alpha = check_model_alpha(model, alpha)
    # Same float32 tensor the layers build from a float alpha (CompressibleLayer.alpha_tensor).
    alpha_tensor = torch.full((1,), alpha, dtype=torch.float32)
    widths: dict[str, tuple[int, int]] = {}
    if method.narrows_channels:
        if input_shape is None:
            raise ValueError(f"materialising a {method.name} level needs the input shape (its channel plan)")
        widths = derive_channel_plan(model, input_shape).widths(alpha_tensor)
    level = copy.deepcopy(model)
    result = MaterializedLevel(alpha, level, method, method.level(alpha))
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, CompressibleLayer)]:
        replacement = _materialize_layer(name, layer, alpha_tensor, widths, result)
        parent, _, child = name.rpartition(".")
        setattr(level.get_submodule(parent) if parent else level, child, replacement)
    level.requires_grad_(False)
    level.eval()
    return result


def _materialize_layer(name: str, layer: CompressibleLayer, alpha: torch.Tensor,
                       widths: dict[str, tuple[int, int]], result: MaterializedLevel) -> nn.Module:
    if isinstance(layer, CompressibleNorm):
        kept = widths.get(name, (layer.channels, layer.channels))[1]
        return layer.method.materialize_norm(layer, alpha, kept)
    assert isinstance(layer, CompressibleWeighted)
    kept_in, kept_out = widths.get(name, (layer.in_channels, layer.out_channels))
    constants = layer.method.folded(layer, alpha)
    weight = constants["weight"][:kept_out, :kept_in]
    result.layers.append(LayerFacts(name, weight, layer.method.compresses, layer.out_channels,
                                    layer.method.weight_bits(result.alpha)))
    if layer.method.compresses:
        result.prunable.append(name)
    return layer.method.materialize_weighted(layer, alpha, constants, kept_in, kept_out)


def materialize_level(model: nn.Module, alpha: float, input_shape: Sequence[int] | None = None) -> nn.Module:
    """The plain eval-mode module of ``model`` at ``alpha`` (see :func:`materialize`)."""
    return materialize(model, alpha, input_shape).module
