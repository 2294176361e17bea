"""Unstructured sparsity: alpha is the fraction of each prunable layer's weights set to zero."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lcs_train.compression import apply_magnitude_mask
from lcs_train.methods.base import CompressionMethod
from lcs_train.threshold_brackets import ThresholdBrackets


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
        return apply_magnitude_mask(weight, self.sparsity(layer, alpha))

    def sparsity(self, layer: Any, alpha: Tensor) -> Tensor:
        """The fraction of ``layer``'s weights pruned at ``alpha``."""
        # The warm-up ramp anneals the sparsity target from dense during training.
        return alpha * layer.compression_ramp

    def switch_tables(self, layer: Any) -> nn.Module | None:
        """For a conv / linear layer, the bracket tables that find its exact threshold at any
        alpha with a small TopK instead of a sort (``lcs_train.threshold_brackets``)."""
        if not hasattr(layer, "compressed_weight"):
            return None  # a norm layer: nothing is pruned
        return ThresholdBrackets(
            lambda alpha: layer.interpolated("weight", alpha).detach(),
            lambda alpha: self.sparsity(layer, alpha),
            self.max_alpha, moves=layer.shape.ends > 1,
        )

    def alpha_constants(self, layer: Any, alpha: Tensor, tables: nn.Module | None = None) -> dict[str, Tensor]:
        if not isinstance(tables, ThresholdBrackets):
            return super().alpha_constants(layer, alpha, tables)
        # The same mask as magnitude_mask (keep |w| > k-th smallest |w|), threshold found
        # through the tables; unstructured folds no output mask, so this is all of ``folded``.
        weight = layer.interpolated("weight", alpha)
        # Detached inputs rather than a no_grad block: torch.export records every grad-mode
        # switch as a subgraph it splits out and inlines again, about 1 s per alpha graph.
        magnitudes = weight.detach().abs()
        threshold = tables.threshold(magnitudes, alpha, self.sparsity(layer, alpha).detach())
        mask = (magnitudes > threshold).to(weight.dtype)
        constants = {"weight": weight * mask}
        bias = layer.interpolated_bias(alpha)
        if bias is not None:
            constants["bias"] = bias
        return constants
