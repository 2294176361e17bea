"""Named training recipes: the defaults that options left unset fall back to.

``paper`` is the recipe of the paper's official code (tuned for 200 epochs). ``quick`` is
sized for the embedded MNIST subset on two CPU cores in about ten minutes: smaller batches
give GroupNorm networks the many more updates per epoch they need to converge in a short
budget (at batch 128 the paper's recipe reaches about 51 % in 15 epochs here). ``finetune``
starts from pretrained weights (``--init``): a tenth of the learning rate, so that the first
steps keep what the weights know, fewer epochs, and a smaller weight decay (the paper's
ImageNet value), since the start is already a good network.
"""

from __future__ import annotations

from typing import Any

from lcs_train.errors import LcsError

RECIPES: dict[str, dict[str, Any]] = {
    "quick": {
        "epochs": 30, "batch_size": 32, "lr": 0.1, "warmup_epochs": 1, "weight_decay": 5e-4,
        "momentum": 0.9, "compression_warmup": 0.8, "beta": 1.0, "augment_shift": 2,
    },
    "finetune": {
        "epochs": 10, "batch_size": 32, "lr": 0.01, "warmup_epochs": 1, "weight_decay": 5e-5,
        "momentum": 0.9, "compression_warmup": 0.8, "beta": 1.0, "augment_shift": 2,
    },
    "paper": {
        "epochs": 200, "batch_size": 128, "lr": 0.1, "warmup_epochs": 5, "weight_decay": 5e-4,
        "momentum": 0.9, "compression_warmup": 0.8, "beta": 1.0, "augment_shift": 0,
    },
}

#: Recipes that make sense only from pretrained weights.
NEEDS_INIT = ("finetune",)


def recipe_defaults(name: str, method: str, has_init: bool = False) -> dict[str, Any]:
    """The settings of recipe ``name`` for ``method``."""
    if name not in RECIPES:
        raise LcsError(f"unknown recipe {name!r}", f"use one of: {', '.join(RECIPES)}")
    if name in NEEDS_INIT and not has_init:
        raise LcsError(f"--recipe {name} fine-tunes pretrained weights, and no --init was given",
                       "pass --init PATH (a state_dict in safetensors or .pth), or use --recipe quick")
    from lcs_train.methods import METHODS

    settings = dict(RECIPES[name])
    if method in METHODS:  # an unknown name is refused with the other settings
        settings["lr"] *= METHODS[method].lr_factor
    return settings
