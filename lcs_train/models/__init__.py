"""Model builders, looked up by name: ordinary torch networks (torchvision style), turned into
subspaces by ``lcs_train.transform.to_subspace``."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from lcs_train.errors import LcsError
from lcs_train.models.cpreresnet import cpreresnet11, cpreresnet20, group_norm, instance_norm

MODELS: dict[str, Callable[..., nn.Module]] = {"cpreresnet20": cpreresnet20, "cpreresnet11": cpreresnet11}

#: The norm layer each normalisation kind of a method builds (``CompressionMethod.norm``).
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {"group": group_norm, "instance": instance_norm}


def build_model(name: str, norm: str = "group", **arguments: Any) -> nn.Module:
    """Build the plain network ``name`` with ``norm`` layers and its keyword ``arguments``."""
    if name not in MODELS:
        raise LcsError(f"unknown model {name!r}", f"use one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](norm_layer=NORM_LAYERS[norm], **arguments)
