"""lcs_train: train compressible subspaces (LCS) and evaluate them across alpha.

The public verbs::

    from lcs_train import build_subspace, set_alpha, at_alpha, Unstructured, Line
    model = build_subspace("cpreresnet20", Unstructured(max_sparsity=0.95), Line(), in_channels=1)
    set_alpha(model, 0.9)          # or: with at_alpha(model, 0.9): ...

    # any network built from nn.Conv2d / nn.Linear / norm layers, e.g. a torchvision model:
    subspace = to_subspace(torchvision.models.resnet18(num_classes=10), Quantized(), Point())
"""

from __future__ import annotations

import importlib
from typing import Any

# The public names are imported on first use (PEP 562), so that importing a submodule, such
# as the CLI, does not import torch before it is needed: lcs-train answers Ctrl-C during its
# start-up with its one line instead of a traceback from inside torch's import.
_PUBLIC = {
    "CompressionMethod": "lcs_train.methods",
    "Quantized": "lcs_train.methods",
    "Structured": "lcs_train.methods",
    "Unstructured": "lcs_train.methods",
    "load_subspace": "lcs_train.restore",
    "Line": "lcs_train.shapes",
    "Point": "lcs_train.shapes",
    "at_alpha": "lcs_train.subspace",
    "build_subspace": "lcs_train.subspace",
    "compressible_layers": "lcs_train.subspace",
    "set_alpha": "lcs_train.subspace",
    "to_subspace": "lcs_train.transform",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lcs_train' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


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
    "to_subspace",
]
