"""The plain layers a materialised quantized level is built from (besides torch's own).

Integer weight codes with a per-tensor scale and zero point, dequantized in ``forward`` so
that exporters can write the integers (``DequantizeLinear``, Core ML's constexpr ops), and a
constant fake-quantizer for activations. Targets read these types; they hold no training code.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FakeQuantize(nn.Module):
    """Affine fake quantization of an activation with constant scale, zero point and top code."""

    def __init__(self, scale: Tensor, zero_point: Tensor, levels: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().reshape(()).float())
        self.register_buffer("zero_point", zero_point.detach().clone().reshape(()).float())
        self.register_buffer("levels", levels.detach().clone().reshape(()).float())

    def forward(self, x: Tensor) -> Tensor:
        # Same operations, in the same order, as lcs_train.compression.quantize_codes.
        codes = torch.minimum(torch.clamp(torch.round(x / self.scale) + self.zero_point, min=0.0), self.levels)
        return (codes - self.zero_point) * self.scale


class QuantizedWeight(nn.Module):
    """Integer weight codes (uint8) with a per-tensor float scale and a uint8 zero point."""

    def __init__(self, codes: Tensor, scale: Tensor, zero_point: Tensor, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.register_buffer("codes", codes.detach().round().to(torch.uint8))
        self.register_buffer("scale", scale.detach().clone().reshape(()).float())
        self.register_buffer("zero_point", zero_point.detach().round().reshape(()).to(torch.uint8))

    def forward(self) -> Tensor:
        """The dequantized float weight: (codes - zero_point) * scale."""
        return (self.codes.float() - self.zero_point.float()) * self.scale


class QuantizedConv2d(nn.Module):
    """Conv2d with an integer-coded weight and (optionally) a fake-quantized input."""

    def __init__(
        self, weight: QuantizedWeight, bias: Tensor | None, stride: Any, padding: Any,
        activation: FakeQuantize | None, dilation: Any = 1, groups: int = 1,
    ) -> None:
        super().__init__()
        self.weight = weight
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.activation = activation if activation is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(self.activation(x), self.weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class QuantizedLinear(nn.Module):
    """Linear layer with an integer-coded weight and (optionally) a fake-quantized input."""

    def __init__(self, weight: QuantizedWeight, bias: Tensor | None, activation: FakeQuantize | None) -> None:
        super().__init__()
        self.weight = weight
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.activation = activation if activation is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.activation(x), self.weight(), self.bias)
