"""Structured sparsity: alpha removes the last channels of every prunable layer.

width = 1 - alpha. A layer keeps its *first* round(C * width) channels, so the ordering that
matters is learned by training and a level is a physically narrower network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from lcs_train.compression import channel_mask
from lcs_train.methods.base import CompressionMethod, LayerFacts


@dataclass(frozen=True)
class Structured(CompressionMethod):
    """Channel pruning of conv and norm outputs; width = 1 - alpha, down to ``min_width``."""

    name: ClassVar[str] = "structured"
    # Channel counts vary with alpha, so per-channel InstanceNorm instead of GroupNorm.
    norm: ClassVar[str] = "instance"
    sandwich: ClassVar[bool] = True
    narrows_channels: ClassVar[bool] = True
    min_width: float = field(default=0.25, metadata={"schema": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}})

    @property
    def max_alpha(self) -> float:
        return 1.0 - self.min_width

    def level(self, alpha: float) -> dict[str, Any]:
        return {"width": 1.0 - float(alpha)}

    def output_multiplier(self, layer: Any, channels: int, alpha: Tensor) -> Tensor:
        """1 for the first round(C * width) channels, 0 for the rest (width = 1 - alpha * ramp)."""
        return channel_mask(channels, 1.0 - alpha * layer.compression_ramp)

    def output(self, layer: Any, y: Tensor, alpha: Tensor) -> Tensor:
        mask = self.output_multiplier(layer, y.shape[1], alpha).to(y.dtype)
        return y * mask.reshape((1, -1) + (1,) * (y.dim() - 2))

    def kept_channels(self, layer: Any, channels: int, alpha: Tensor) -> int:
        """How many leading channels of ``channels`` a level of this layer keeps at ``alpha``."""
        return int(self.output_multiplier(layer, channels, alpha).sum().item())

    def measure(self, prunable: list[LayerFacts]) -> dict[str, Any]:
        """Sparsity, and the width: kept over trained output channels of the compressed layers."""
        trained = sum(facts.trained_out_channels for facts in prunable)
        kept = sum(int(facts.weight.shape[0]) for facts in prunable)
        return {**super().measure(prunable), "width": kept / trained if trained else 1.0}
