"""Model builders, looked up by name: ordinary torch networks (torchvision style), turned into
subspaces by ``lcs_train.transform.to_subspace``.

Built in: ``cpreresnet20`` (the paper's CIFAR network), ``cpreresnet11`` (a small sibling),
``cresnet18`` and ``cvgg19`` (the paper's ResNet18 and VGG19 with CIFAR stems); they take
their norm layers from the method (or BatchNorm, ``norm="batch"``). ``torchvision:NAME`` is
any torchvision classification model (``lcs_train.models.torchvision_models``), built with its
own BatchNorm layers, which ``to_subspace`` keeps or turns into the method's norm.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from lcs_train.errors import LcsError
from lcs_train.models.cifar_resnet import cresnet18
from lcs_train.models.cifar_vgg import cvgg19
from lcs_train.models.cpreresnet import cpreresnet11, cpreresnet20, group_norm, instance_norm
from lcs_train.models.torchvision_models import PREFIX as TORCHVISION_PREFIX
from lcs_train.models.torchvision_models import build_torchvision, check_torchvision_name

MODELS: dict[str, Callable[..., nn.Module]] = {
    "cpreresnet20": cpreresnet20, "cpreresnet11": cpreresnet11, "cresnet18": cresnet18, "cvgg19": cvgg19,
}

#: The norm layer each normalisation kind builds: a method's own (``CompressionMethod.norm``),
#: or BatchNorm, kept with per-level statistics (``lcs-train --norm batch``).
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "group": group_norm, "instance": instance_norm, "batch": nn.BatchNorm2d,
}


def check_model_name(name: str) -> str:
    """Refuse a model name that is neither built in nor a torchvision classification model."""
    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        check_torchvision_name(name)
    elif name not in MODELS:
        raise LcsError(f"unknown model {name!r}",
                       f"use one of: {', '.join(sorted(MODELS))}, or torchvision:NAME (e.g. torchvision:resnet18)")
    return name


def build_model(name: str, norm: str = "group", **arguments: Any) -> nn.Module:
    """Build the plain network ``name`` with its keyword ``arguments`` (``in_channels``,
    ``num_classes``); built-in models get ``norm`` layers ("group", "instance" or "batch"),
    torchvision's are built with their own BatchNorm whatever ``norm`` says."""
    check_model_name(name)
    if name.startswith(TORCHVISION_PREFIX):
        return build_torchvision(name, int(arguments["in_channels"]), int(arguments["num_classes"]))
    return MODELS[name](norm_layer=NORM_LAYERS[norm], **arguments)
