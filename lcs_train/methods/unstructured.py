"""Unstructured sparsity: alpha is the fraction of each prunable layer's weights set to zero."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from lcs_train.compression import apply_magnitude_mask
from lcs_train.methods.base import CompressionMethod


@dataclass(frozen=True)
class Unstructured(CompressionMethod):
    """Per-layer magnitude pruning; sparsity = alpha, trained up to ``max_sparsity``."""

    name: ClassVar[str] = "unstructured"
    norm: ClassVar[str] = "group"
    max_sparsity: float = field(default=0.95, metadata={"schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}})

    @property
    def max_alpha(self) -> float:
        return self.max_sparsity

    def level(self, alpha: float) -> dict[str, Any]:
        return {"sparsity": float(alpha)}

    def weight(self, layer: Any, weight: Tensor, alpha: Tensor) -> Tensor:
        # The warm-up ramp anneals the sparsity target from dense during training.
        return apply_magnitude_mask(weight, alpha * layer.compression_ramp)
