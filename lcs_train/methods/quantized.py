"""Quantization: alpha selects the bit width of weights and activations.

bits = round(high - (high - low) * alpha): 8 bits at alpha 0 down to 3 bits at alpha 1 by
default. Affine per-tensor fake quantization with a zero point and a straight-through
gradient; activation ranges are running min/max kept by each layer (no batch dependence at
inference, so a level behaves the same at batch 1 on a phone as in evaluation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lcs_train.compression import affine_qparams, fake_quantize, fake_quantize_tensor, quantize_codes
from lcs_train.level_layers import FakeQuantize, QuantizedConv2d, QuantizedLinear, QuantizedWeight
from lcs_train.methods.base import CompressionMethod, LayerFacts

#: Weight of the newest batch in the running activation range.
RANGE_MOMENTUM = 0.1


@dataclass(frozen=True)
class Quantized(CompressionMethod):
    """Weights and activations quantized to ``bits(alpha)`` bits."""

    name: ClassVar[str] = "quantized"
    norm: ClassVar[str] = "group"
    lr_factor: ClassVar[float] = 0.25
    high_bits: int = field(default=8, metadata={"schema": {"type": "integer", "minimum": 2, "maximum": 16}})
    low_bits: int = field(default=3, metadata={"schema": {"type": "integer", "minimum": 2, "maximum": 16}})

    def bits(self, alpha: Tensor) -> Tensor:
        """Bit width at ``alpha`` (a tensor, so that it can be computed inside a graph)."""
        span = float(self.high_bits - self.low_bits)
        return torch.round(self.high_bits - span * alpha)

    def discrete_alphas(self) -> tuple[float, ...]:
        span = self.high_bits - self.low_bits
        return tuple(i / span for i in range(span + 1))

    def level(self, alpha: float) -> dict[str, Any]:
        return {"bits": int(self.bits(torch.tensor(float(alpha))).item())}

    def statistics_position(self, alpha: Tensor, rows: int) -> Tensor:
        """The row of the bit width ``alpha`` runs at (row i: ``high_bits - i`` bits), never
        between two: an alpha between whole bit widths runs the nearest one, so its
        statistics are that width's, exactly."""
        return float(self.high_bits) - self.bits(torch.clamp(alpha, 0.0, 1.0))

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

    def activation_qparams(self, layer: Any, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """Scale, zero point and top code of the layer's input quantizer at ``alpha`` (None
        while activation quantization is off)."""
        if not layer.quantize_activations:
            return None
        return affine_qparams(layer.activation_range[0], layer.activation_range[1], self.bits(alpha).reshape(()))

    def alpha_constants(self, layer: Any, alpha: Tensor, tables: nn.Module | None = None) -> dict[str, Tensor]:
        constants = super().alpha_constants(layer, alpha, tables)
        qparams = self.activation_qparams(layer, alpha) if "weight" in constants else None
        if qparams is not None:
            names = ("activation_scale", "activation_zero_point", "activation_levels")
            constants.update({name: value.reshape(()) for name, value in zip(names, qparams)})
        return constants

    def materialize_weighted(
        self, layer: Any, alpha: Tensor, constants: dict[str, Tensor], kept_in: int, kept_out: int
    ) -> nn.Module:
        """Integer weight codes (uint8) with a per-tensor scale and zero point, and the input's
        fake quantizer with constants for this bit width (the codes are computed from the
        interpolated weight, not from the fake-quantized ``constants``)."""
        bits = self.bits(alpha).reshape(())
        weight = layer.interpolated("weight", alpha)
        scale, zero_point, levels = affine_qparams(weight.min(), weight.max(), bits)
        codes = QuantizedWeight(quantize_codes(weight, scale, zero_point, levels), scale, zero_point, int(bits.item()))
        qparams = self.activation_qparams(layer, alpha)
        activation = None if qparams is None else FakeQuantize(*qparams)
        bias = layer.interpolated_bias(alpha)
        if layer.weight.dim() == 2:
            return QuantizedLinear(codes, bias, activation)
        if layer.padding_mode != "zeros":
            raise ValueError(f"quantized levels support zero padding only, not {layer.padding_mode!r}")
        return QuantizedConv2d(codes, bias, layer.stride, layer.padding, activation, layer.dilation, layer.groups)

    def weight_bits(self, alpha: float) -> int:
        return int(self.bits(torch.tensor(float(alpha))).item())

    def measure(self, prunable: list[LayerFacts]) -> dict[str, Any]:
        """Sparsity, the bit width, and the bytes the weights take at that width."""
        measured = super().measure(prunable)
        if prunable:
            measured["bits"] = max(facts.bits for facts in prunable)
            measured["weight_bytes_at_bits"] = int(sum(math.ceil(f.weight.numel() * f.bits / 8) for f in prunable))
        return measured


def update_activation_range(layer: Any, x: Tensor) -> None:
    """Move the layer's running [min, max] of its input towards this batch's (the global
    batch's, when several processes each hold a slice of it)."""
    from lcs_train.distributed import global_range

    with torch.no_grad():
        batch = global_range(torch.stack([x.min(), x.max()]).to(layer.activation_range.dtype))
        if bool(layer.range_observed):
            layer.activation_range.lerp_(batch, RANGE_MOMENTUM)
        else:
            layer.activation_range.copy_(batch)
            layer.range_observed.fill_(True)
