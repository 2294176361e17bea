"""What a target converts: built once by ``lcs_export.export``, handed to every target.

A target never builds these from a subspace itself and never reaches into training code:
``Level`` is one materialised level (``lcs_train.materialize``), ``AlphaGraph`` the
alpha-input forms of a subspace (``lcs_train.alpha_graph``). Every module here is already in
eval mode, and ``example`` is one real held-out input, so the preamble each target used to
repeat (eval mode, example tensor) lives in the exporter once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


@dataclass
class Level:
    """One discrete level to export: a plain module computing the subspace at ``alpha``."""

    alpha: float
    module: nn.Module  # from lcs_train.materialize.materialize
    compression: dict[str, Any]  # the real compression: {"sparsity": ..} / {"width": ..} / {"bits": ..}
    stats: dict[str, Any] = field(default_factory=dict)  # lcs_train.cost: parameters, nonzeros, flops, ...
    prunable: list[str] = field(default_factory=list)  # the compressed conv / linear layers, by module name


@dataclass(frozen=True)
class SwitchOnce:
    """The switch-once pair: a weights module run once per level change, a predict module per call.

    ``weights``: ``forward(alpha float32 [1]) -> tuple`` of every alpha-dependent constant, in
    the order of ``constant_names``. ``predict``: ``forward(input) -> logits`` holding those
    constants as buffers of the same names (at alpha 0 until they are swapped).
    """

    weights: nn.Module
    predict: nn.Module
    constant_names: tuple[str, ...]


@dataclass(frozen=True)
class AlphaGraph:
    """The alpha-input forms of one subspace.

    ``module``: ``forward(input, alpha float32 [1]) -> logits``, alpha clamped to
    [0, ``max_alpha``] in the graph. ``switch_once``: the pair for targets that declare the
    ``switch_once`` capability (None otherwise: it is not built). ``example``: one input of
    shape [1, C, H, W].
    """

    module: nn.Module
    max_alpha: float
    method: str
    example: Tensor
    switch_once: SwitchOnce | None = None

    @property
    def alphas(self) -> list[float]:
        """The trained range, as artifacts list it: ``[0.0, max_alpha]``."""
        return [0.0, float(self.max_alpha)]


def batch_example(example: Tensor, batch: int = 2) -> Tensor:
    """``example`` repeated to ``batch`` rows: torch.export specialises a batch of 1 to a
    constant, so a graph with a dynamic batch is captured from two rows."""
    return example[:1].expand(batch, *example.shape[1:]).contiguous()
