"""Model builders, looked up by name."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from lcs_train.errors import LcsError
from lcs_train.models.cpreresnet import cpreresnet11, cpreresnet20

MODELS: dict[str, Callable[..., nn.Module]] = {"cpreresnet20": cpreresnet20, "cpreresnet11": cpreresnet11}


def build_model(name: str, kinds: Any, **arguments: Any) -> nn.Module:
    """Build architecture ``name`` from ``kinds`` with its keyword ``arguments``."""
    if name not in MODELS:
        raise LcsError(f"unknown model {name!r}", f"use one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](kinds, **arguments)
