"""Compressible layers: conv, linear and norm whose weights live on a subspace.

Each layer asks its shape for the weight at the current alpha (interpolation along the line)
and its method for the compression (mask, quantization). ``alpha`` is either a float set by
:func:`lcs_train.subspace.set_alpha` or a tensor, which is how export turns it into a graph
input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lcs_train.methods.base import CompressionMethod
from lcs_train.shapes import Line, Point, line_position


class CompressibleLayer(nn.Module):
    """State shared by every compressible layer: method, shape, alpha and training switches."""

    def __init__(self, method: CompressionMethod, shape: Point | Line) -> None:
        super().__init__()
        self.method = method
        self.shape = shape
        self.alpha: float | Tensor = 0.0
        #: scales the compression during the training warm-up (1 = full compression).
        self.compression_ramp: float | Tensor = 1.0
        #: activation quantization is switched on after the warm-up.
        self.quantize_activations: bool = True
        # Running input range for activation quantization; harmless for other methods.
        self.register_buffer("activation_range", torch.zeros(2))
        self.register_buffer("range_observed", torch.zeros((), dtype=torch.bool))

    def alpha_tensor(self, like: Tensor) -> Tensor:
        """alpha as a float tensor of shape [1] on ``like``'s device."""
        if isinstance(self.alpha, Tensor):
            return self.alpha.reshape(1).to(device=like.device, dtype=torch.float32)
        return torch.full((1,), float(self.alpha), device=like.device, dtype=torch.float32)

    def interpolated(self, name: str, alpha: Tensor) -> Tensor:
        """Parameter ``name`` at this alpha's position on the subspace."""
        return self.shape.value(self, name, line_position(alpha, self.method.max_alpha))


class CompressibleConv2d(CompressibleLayer):
    """Conv2d whose weight is interpolated and compressed at the current alpha."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        method: CompressionMethod,
        shape: Point | Line,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
    ) -> None:
        super().__init__(method, shape)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        shape.register(
            self, "weight",
            # torch's own Conv2d initialiser: with GroupNorm, the larger He-normal draw
            # made early training unstable at the learning rates the recipe uses.
            lambda: nn.init.kaiming_uniform_(
                torch.empty(out_channels, in_channels, kernel_size, kernel_size), a=math.sqrt(5)
            ),
        )
        if bias:
            shape.register(self, "bias", lambda: torch.zeros(out_channels))
        else:
            self.bias = None

    def compressed_weight(self, alpha: Tensor) -> Tensor:
        """The weight this layer multiplies with at ``alpha``."""
        return self.method.weight(self, self.interpolated("weight", alpha), alpha)

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha_tensor(x)
        bias = None if self.bias is None else self.interpolated("bias", alpha)
        x = self.method.activation(self, x, alpha)
        y = F.conv2d(x, self.compressed_weight(alpha), bias, self.stride, self.padding)
        return self.method.output(self, y, alpha)


class CompressibleLinear(CompressibleLayer):
    """Linear layer whose weight is interpolated and compressed at the current alpha."""

    def __init__(
        self, in_features: int, out_features: int, method: CompressionMethod, shape: Point | Line
    ) -> None:
        super().__init__(method, shape)
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        shape.register(self, "weight", lambda: torch.empty(out_features, in_features).uniform_(-bound, bound))
        shape.register(self, "bias", lambda: torch.empty(out_features).uniform_(-bound, bound))

    def compressed_weight(self, alpha: Tensor) -> Tensor:
        """The weight this layer multiplies with at ``alpha``."""
        return self.method.weight(self, self.interpolated("weight", alpha), alpha)

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha_tensor(x)
        x = self.method.activation(self, x, alpha)
        return F.linear(x, self.compressed_weight(alpha), self.interpolated("bias", alpha))


class CompressibleNorm(CompressibleLayer):
    """GroupNorm or InstanceNorm with interpolated affine parameters.

    With ``explicit_affine`` set (export sets it for alpha-input graphs) the affine step is
    an explicit multiply-add rather than the norm's own weight/bias: Core ML's instance_norm
    needs compile-time-constant gamma/beta, which an alpha-input graph cannot give it.
    Training keeps the fused form, which is markedly faster on CPU.
    """

    def __init__(
        self, channels: int, kind: str, method: CompressionMethod, shape: Point | Line
    ) -> None:
        super().__init__(method, shape)
        self.channels, self.kind = channels, kind
        # 32 groups, capped by channels (groups must divide the channel count).
        self.groups = math.gcd(32, channels)
        self.explicit_affine = False
        shape.register(self, "weight", lambda: torch.ones(channels))
        shape.register(self, "bias", lambda: torch.zeros(channels))

    def normalize(self, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
        """Normalise ``x``, with the per-channel affine when ``scale`` and ``shift`` are given."""
        if self.kind == "instance":
            return F.instance_norm(x, weight=scale, bias=shift, eps=1e-5)
        return F.group_norm(x, self.groups, scale, shift, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha_tensor(x)
        scale = self.interpolated("weight", alpha)
        shift = self.interpolated("bias", alpha)
        if self.explicit_affine:
            y = self.normalize(x) * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
        else:
            y = self.normalize(x, scale, shift)
        return self.method.output(self, y, alpha)
