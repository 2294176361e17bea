"""Quantization: alpha selects the bit width of weights and activations.

bits = round(high - (high - low) * alpha): 8 bits at alpha 0 down to 3 bits at alpha 1 by
default. Affine per-tensor fake quantization with a zero point and a straight-through
gradient; activation ranges are running min/max kept by each layer (no batch dependence at
inference, so a level behaves the same at batch 1 on a phone as in evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from lcs_train.compression import affine_qparams, fake_quantize, fake_quantize_tensor
from lcs_train.methods.base import CompressionMethod

#: Weight of the newest batch in the running activation range.
RANGE_MOMENTUM = 0.1


@dataclass(frozen=True)
class Quantized(CompressionMethod):
    """Weights and activations quantized to ``bits(alpha)`` bits."""

    name: ClassVar[str] = "quantized"
    norm: ClassVar[str] = "group"
    high_bits: int = 8
    low_bits: int = 3

    def bits(self, alpha: Tensor) -> Tensor:
        """Bit width at ``alpha`` (a tensor, so that it can be computed inside a graph)."""
        span = float(self.high_bits - self.low_bits)
        return torch.round(self.high_bits - span * alpha)

    def discrete_alphas(self) -> tuple[float, ...]:
        span = self.high_bits - self.low_bits
        return tuple(i / span for i in range(span + 1))

    def level(self, alpha: float) -> dict[str, Any]:
        return {"bits": int(self.bits(torch.tensor(float(alpha))).item())}

    def weight(self, layer: Any, weight: Tensor, alpha: Tensor) -> Tensor:
        return fake_quantize_tensor(weight, self.bits(alpha).reshape(()))

    def activation(self, layer: Any, x: Tensor, alpha: Tensor) -> Tensor:
        if layer.training:
            update_activation_range(layer, x)
        if not layer.quantize_activations:
            return x
        scale, zero_point, levels = affine_qparams(
            layer.activation_range[0], layer.activation_range[1], self.bits(alpha).reshape(())
        )
        return fake_quantize(x, scale, zero_point, levels)


def update_activation_range(layer: Any, x: Tensor) -> None:
    """Move the layer's running [min, max] of its input towards this batch's."""
    with torch.no_grad():
        batch = torch.stack([x.min(), x.max()]).to(layer.activation_range.dtype)
        if bool(layer.range_observed):
            layer.activation_range.lerp_(batch, RANGE_MOMENTUM)
        else:
            layer.activation_range.copy_(batch)
            layer.range_observed.fill_(True)
