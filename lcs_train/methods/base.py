"""The interface every compression method implements: everything alpha means, in one place.

A method is a small frozen config object (registered by name in ``lcs_train.methods``). It
owns what alpha means everywhere:

- training: the compressible layers call ``weight``, ``activation`` and ``output`` with
  ``alpha`` as a tensor, so the same code runs in training, evaluation and inside an exported
  graph;
- export: ``folded`` gives a layer's constants at an alpha (output masks folded in), which
  both a materialised level (``materialize_weighted``) and the alpha-input graphs
  (``alpha_constants``) are built from;
- per-level BatchNorm statistics: ``statistics_alphas`` (the grid a kept BatchNorm stores
  running statistics at) and ``statistics_position`` (where an alpha falls on that grid);
- cost: ``weight_bits`` (storage width) and ``measure`` (the real compression in the
  method's own unit), which ``lcs_train.cost`` adds up.

Adding a method is adding one module in this package that defines such a class, and one line
in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

if TYPE_CHECKING:
    from lcs_train.layers import CompressibleLayer, CompressibleNorm, CompressibleWeighted


#: Grid points of a kept BatchNorm's statistics table for a method with continuous levels:
#: every tenth of the trained range (recalibration costs one pass over its images per point).
STATISTICS_POINTS = 11


@dataclass
class LayerFacts:
    """What a materialised conv or linear layer holds, for the cost model."""

    name: str
    weight: Tensor  # the effective (dequantized) weight, as materialised
    compressed: bool  # trained with the network's method (not a dense end layer)
    trained_out_channels: int
    bits: int  # storage width of one weight


@dataclass(frozen=True)
class CompressionMethod:
    """Base config: what alpha means for one kind of compression.

    alpha lives in [0, 1] for every method; ``max_alpha`` is the top of the trained range
    (0 is always the most accurate end). Subclasses override the hooks they need.
    """

    name: ClassVar[str] = "dense"
    #: normalisation the method trains with ("group" or "instance"); see the design note.
    norm: ClassVar[str] = "group"
    #: structured training sums the loss over both ends plus two random alphas per step.
    sandwich: ClassVar[bool] = False
    #: False only for ``Dense``: the layers a subspace leaves uncompressed.
    compresses: ClassVar[bool] = True
    #: True when a level is a physically narrower network (its channel plan is needed).
    narrows_channels: ClassVar[bool] = False
    #: the recipes' learning rate is multiplied by this (the paper trains quantization at 1/4).
    lr_factor: ClassVar[float] = 1.0

    @property
    def max_alpha(self) -> float:
        """Top of the trained alpha range."""
        return 1.0

    def discrete_alphas(self) -> tuple[float, ...] | None:
        """The alphas a method can take when its levels are discrete (bit widths), else None."""
        return None

    def level(self, alpha: float) -> dict[str, Any]:
        """The real compression at ``alpha`` in the method's own unit (sparsity, width, bits)."""
        return {}

    def level_grid(self, points: int) -> tuple[float, ...]:
        """Every discrete level, else ``points`` alphas evenly over [0, max_alpha]: the alphas
        a pass over data visits to stand for all levels."""
        discrete = self.discrete_alphas()
        if discrete is not None:
            return tuple(discrete)
        return tuple(self.max_alpha * i / (points - 1) for i in range(points))

    def statistics_alphas(self) -> tuple[float, ...]:
        """The alphas a kept BatchNorm stores running statistics at (one table row each):
        ``level_grid`` of ``STATISTICS_POINTS``."""
        return self.level_grid(STATISTICS_POINTS)

    def statistics_position(self, alpha: Tensor, rows: int) -> Tensor:
        """Where ``alpha`` ([1]) falls on the statistics grid, as a fractional row index in
        [0, rows - 1]; the rows in between are interpolated linearly
        (``lcs_train.layers.interpolate_rows``). Computed with tensor ops, so that the
        alpha-input graphs compute it too."""
        from lcs_train.shapes import line_position

        return line_position(alpha, self.max_alpha) * float(rows - 1)

    def weight(self, layer: CompressibleLayer, weight: Tensor, alpha: Tensor) -> Tensor:
        """Compress a conv or linear weight at ``alpha``."""
        return weight

    def activation(self, layer: CompressibleLayer, x: Tensor, alpha: Tensor) -> Tensor:
        """Transform a conv or linear layer's input at ``alpha``."""
        return x

    def output(self, layer: CompressibleLayer, y: Tensor, alpha: Tensor) -> Tensor:
        """Transform a conv or norm layer's output at ``alpha``."""
        return y

    def output_multiplier(self, layer: CompressibleLayer, channels: int, alpha: Tensor) -> Tensor | None:
        """The per-channel factor ``output`` applies (structured masks), or None for none."""
        return None

    def folded(self, layer: CompressibleLayer, alpha: Tensor) -> dict[str, Tensor]:
        """A layer's constants at ``alpha``, any output multiplier folded in.

        Conv / linear: ``weight`` (compressed) and ``bias`` if any; norm: ``scale`` and
        ``shift``, and for a kept BatchNorm its running ``mean`` and ``var`` at ``alpha``
        (a masked channel's output is zero whatever its statistics, so they are left as they
        are). A materialised level and the switch-once weights graph both start here.
        """
        from lcs_train.layers import CompressibleBatchNorm, CompressibleNorm

        if isinstance(layer, CompressibleNorm):
            scale, shift = layer.interpolated("weight", alpha), layer.interpolated("bias", alpha)
            mask = self.output_multiplier(layer, layer.channels, alpha)
            if mask is not None:
                scale, shift = scale * mask, shift * mask
            constants = {"scale": scale, "shift": shift}
            if isinstance(layer, CompressibleBatchNorm):
                constants["mean"], constants["var"] = layer.level_statistics(alpha)
            return constants
        weight = layer.compressed_weight(alpha)
        bias = layer.interpolated_bias(alpha)
        mask = self.output_multiplier(layer, layer.out_channels, alpha)
        if mask is not None:
            weight = weight * mask.reshape(-1, *([1] * (weight.dim() - 1)))
            bias = None if bias is None else bias * mask
        constants = {"weight": weight}
        if bias is not None:
            constants["bias"] = bias
        return constants

    def switch_tables(self, layer: CompressibleLayer) -> nn.Module | None:
        """Tables precomputed once per export that make ``alpha_constants`` cheaper to run at
        a level switch (None: nothing to precompute). The switch-once weights graph holds
        them and hands them back to ``alpha_constants``."""
        return None

    def alpha_constants(
        self, layer: CompressibleLayer, alpha: Tensor, tables: nn.Module | None = None
    ) -> dict[str, Tensor]:
        """Every constant of ``layer`` that depends on alpha, by local name (the switch-once
        weights graph's outputs and the predict graph's buffers); ``tables`` is what
        ``switch_tables`` built for this layer."""
        return self.folded(layer, alpha)

    def materialize_weighted(
        self, layer: CompressibleWeighted, alpha: Tensor, constants: dict[str, Tensor], kept_in: int, kept_out: int
    ) -> nn.Module:
        """The plain module computing conv / linear ``layer`` at ``alpha``, reading ``kept_in``
        input channels and writing ``kept_out`` (both full unless the level is narrower).
        ``constants`` is ``folded(layer, alpha)``, computed once by the caller."""
        bias = constants.get("bias")
        return layer.plain(constants["weight"][:kept_out, :kept_in], None if bias is None else bias[:kept_out])

    def materialize_norm(self, layer: CompressibleNorm, alpha: Tensor, kept: int) -> nn.Module:
        """The plain norm computing ``layer`` at ``alpha`` on its first ``kept`` channels."""
        constants = self.folded(layer, alpha)
        return layer.plain(**{name: value[:kept] for name, value in constants.items()})

    def weight_bits(self, alpha: float) -> int:
        """Bits one stored weight takes at ``alpha`` (32: float32)."""
        return 32

    def measure(self, prunable: list[LayerFacts]) -> dict[str, Any]:
        """The real compression of a level over its compressed layers: the fraction of zero
        weights, and subclasses add their own unit (width, bits)."""
        total = sum(facts.weight.numel() for facts in prunable)
        if not total:
            return {}
        return {"sparsity": float(sum(int((facts.weight == 0).sum()) for facts in prunable) / total)}

    @classmethod
    def metadata_schema(cls) -> dict[str, Any]:
        """JSON Schema of this method's checkpoint entry, from each field's ``schema`` metadata."""
        properties = {field.name: dict(field.metadata.get("schema", {})) for field in fields(cls)}
        return {"required": sorted(properties), "additionalProperties": False,
                "properties": {"name": {}, **properties}}

    def to_metadata(self) -> dict[str, Any]:
        """The config's fields, for the checkpoint."""
        return {"name": self.name, **{k: v for k, v in self.__dict__.items()}}


@dataclass(frozen=True)
class Dense(CompressionMethod):
    """No compression: the first conv and the classifier of a subspace, and plain baselines.

    ``trained_max_alpha`` is the compressed layers' range, so that a dense layer on a line
    sits at the same line position as its neighbours.
    """

    name: ClassVar[str] = "dense"
    compresses: ClassVar[bool] = False
    trained_max_alpha: float = 1.0

    @property
    def max_alpha(self) -> float:
        return self.trained_max_alpha
