"""``torchvision:NAME``: any torchvision classification builder, untrained (``weights=None``).

Names are those of ``torchvision.models.list_models(module=torchvision.models)``: the
classification models only (detection, segmentation, video and optical-flow builders live in
submodules and are refused). The network is torchvision's own, with its BatchNorm layers;
``to_subspace`` turns them into the method's norm. Data with other than three channels gets a
first conv of the data's channels (same kernel, stride and padding), since torchvision's
builders assume RGB. Nothing is ever downloaded: pretrained weights come from ``--init``.
"""

from __future__ import annotations

import difflib
import functools

from torch import nn

from lcs_train.errors import LcsError

PREFIX = "torchvision:"

#: Builders of torchvision's ResNet class (they take ``zero_init_residual``).
RESNETS = ("resnet", "resnext", "wide_resnet")


@functools.cache
def classification_models() -> tuple[str, ...]:
    """The classification builders of the installed torchvision."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def check_torchvision_name(model: str) -> str:
    """The builder name in ``torchvision:NAME``; refuses a name torchvision does not know."""
    import torchvision

    name = model[len(PREFIX):]
    known = classification_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(PREFIX + c for c in close)}? " if close else ""
        raise LcsError(
            f"unknown model {model!r}: torchvision {torchvision.__version__} has no classification model {name!r}",
            f"{hint}see torchvision.models.list_models(module=torchvision.models) for the names",
        )
    return name


def first_conv_name(model: nn.Module) -> str | None:
    """The qualified name of the first ``nn.Conv2d`` in registration order (the stem)."""
    return next((name for name, module in model.named_modules() if type(module) is nn.Conv2d), None)


def build_torchvision(model: str, in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ``NAME`` with ``num_classes`` outputs and a stem reading ``in_channels``."""
    import torchvision

    name = check_torchvision_name(model)
    builder = torchvision.models.get_model_builder(name)
    arguments: dict[str, object] = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        # Their auxiliary classifiers return a tuple in training mode; one logits tensor only.
        arguments.update(aux_logits=False, init_weights=True)
    if name.startswith(RESNETS):
        # Each residual branch starts as the identity. Without it, the GroupNorm that replaces
        # BatchNorm diverged: resnet18 on the digits went from loss 2.5 to 9.8 in 12 steps at
        # lr 0.01, and 2.4 -> 1.9 with it (cresnet18 and cPreResNet start the same way).
        arguments["zero_init_residual"] = True
    network = builder(**arguments)
    stem = first_conv_name(network)
    if stem is not None and in_channels != network.get_submodule(stem).in_channels:
        old = network.get_submodule(stem)
        if old.groups != 1:
            raise LcsError(f"{model}'s first conv is grouped and cannot take {in_channels}-channel input",
                           "use data with the channels the model expects, or another model")
        new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,  # type: ignore[arg-type]
                        old.dilation, 1, old.bias is not None, old.padding_mode)
        parent, _, child = stem.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, child, new)
    return network
