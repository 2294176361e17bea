"""The interface every compression method implements.

A method is a small frozen config object. The compressible layers call its three hooks
(``weight``, ``activation``, ``output``) with ``alpha`` as a tensor, so the same method code
runs in training, in evaluation and inside an exported graph. Adding a method is adding one
module in this package that defines such a class and registers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

if TYPE_CHECKING:
    from lcs_train.layers import CompressibleLayer


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

    def weight(self, layer: CompressibleLayer, weight: Tensor, alpha: Tensor) -> Tensor:
        """Compress a conv or linear weight at ``alpha``."""
        return weight

    def activation(self, layer: CompressibleLayer, x: Tensor, alpha: Tensor) -> Tensor:
        """Transform a conv or linear layer's input at ``alpha``."""
        return x

    def output(self, layer: CompressibleLayer, y: Tensor, alpha: Tensor) -> Tensor:
        """Transform a conv or norm layer's output at ``alpha``."""
        return y

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
    trained_max_alpha: float = 1.0

    @property
    def max_alpha(self) -> float:
        return self.trained_max_alpha
