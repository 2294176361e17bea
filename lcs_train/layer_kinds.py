"""The layer kinds a model is built from, chosen by the compression method and subspace shape.

Architectures receive a :class:`LayerKinds` the way torchvision's ResNet receives
``norm_layer``: the model file knows nothing about sparsity, bits or lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from lcs_train.layers import CompressibleConv2d, CompressibleLinear, CompressibleNorm
from lcs_train.methods.base import CompressionMethod, Dense
from lcs_train.shapes import Line, Point


@dataclass(frozen=True)
class LayerKinds:
    """Factories for the layers of a compressible subspace."""

    method: CompressionMethod
    shape: Point | Line

    @property
    def dense(self) -> Dense:
        return Dense(trained_max_alpha=self.method.max_alpha)

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Module:
        """A compressible conv with 'same' padding for odd kernels."""
        return CompressibleConv2d(
            in_channels, out_channels, kernel_size, self.method, self.shape,
            stride=stride, padding=kernel_size // 2,
        )

    def norm(self, channels: int) -> nn.Module:
        """The method's normalisation (GroupNorm or InstanceNorm) with subspace affine."""
        return CompressibleNorm(channels, self.method.norm, self.method, self.shape)

    def first_conv(self, in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
        """The stem: on the subspace but never compressed (kept dense and unquantized)."""
        return CompressibleConv2d(
            in_channels, out_channels, kernel_size, self.dense, self.shape, padding=kernel_size // 2
        )

    def classifier(self, in_features: int, out_features: int) -> nn.Module:
        """The last layer: on the subspace but never compressed."""
        return CompressibleLinear(in_features, out_features, self.dense, self.shape)


@dataclass(frozen=True)
class PlainKinds:
    """Ordinary torch layers (for the dense baseline a training step is benchmarked against)."""

    norm_kind: str = "group"

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)

    def norm(self, channels: int) -> nn.Module:
        if self.norm_kind == "instance":
            return nn.InstanceNorm2d(channels, affine=True)
        return nn.GroupNorm(math.gcd(32, channels), channels)

    def first_conv(self, in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False)

    def classifier(self, in_features: int, out_features: int) -> nn.Module:
        return nn.Linear(in_features, out_features)
