"""Structured sparsity: alpha removes the last channels of every prunable layer.

width = 1 - alpha. A layer keeps its *first* round(C * width) channels, so the ordering that
matters is learned by training and a level is a physically narrower network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from lcs_train.compression import channel_mask
from lcs_train.methods.base import CompressionMethod


@dataclass(frozen=True)
class Structured(CompressionMethod):
    """Channel pruning of conv and norm outputs; width = 1 - alpha, down to ``min_width``."""

    name: ClassVar[str] = "structured"
    # Channel counts vary with alpha, so per-channel InstanceNorm instead of GroupNorm.
    norm: ClassVar[str] = "instance"
    sandwich: ClassVar[bool] = True
    min_width: float = 0.25

    @property
    def max_alpha(self) -> float:
        return 1.0 - self.min_width

    def level(self, alpha: float) -> dict[str, Any]:
        return {"width": 1.0 - float(alpha)}

    def output(self, layer: Any, y: Tensor, alpha: Tensor) -> Tensor:
        width = 1.0 - alpha * layer.compression_ramp
        mask = channel_mask(y.shape[1], width, y.dtype)
        return y * mask.reshape((1, -1) + (1,) * (y.dim() - 2))
