"""lcs_train: train compressible subspaces (LCS) and evaluate them across alpha.

The public verbs::

    from lcs_train import build_subspace, set_alpha, at_alpha, Unstructured, Line
    model = build_subspace("cpreresnet20", Unstructured(max_sparsity=0.95), Line(), in_channels=1)
    set_alpha(model, 0.9)          # or: with at_alpha(model, 0.9): ...
"""

from lcs_train.methods import CompressionMethod, Quantized, Structured, Unstructured
from lcs_train.restore import load_subspace
from lcs_train.shapes import Line, Point
from lcs_train.subspace import at_alpha, build_subspace, compressible_layers, set_alpha

__all__ = [
    "CompressionMethod",
    "Line",
    "Point",
    "Quantized",
    "Structured",
    "Unstructured",
    "at_alpha",
    "build_subspace",
    "compressible_layers",
    "load_subspace",
    "set_alpha",
]
