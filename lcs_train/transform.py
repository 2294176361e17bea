"""``to_subspace``: turn an ordinary ``nn.Module`` into a compressible subspace.

Like torchao's ``quantize_(model, config, filter_fn)``, it walks the model and swaps layers in
place: every ``nn.Conv2d`` (any groups, dilation, padding mode) and ``nn.Linear`` becomes its
compressible twin (``from_dense``, same signature and settings), and every ``nn.BatchNorm2d``,
``nn.GroupNorm`` and ``nn.InstanceNorm2d`` becomes a compressible norm. ``norm`` says what
becomes of BatchNorm: ``"method"`` (the default, the paper's choice) replaces it by the
method's norm (GroupNorm, InstanceNorm for structured), dropping its running statistics;
``"batch"`` keeps it as a ``CompressibleBatchNorm`` with running statistics per level,
recalibrated after training (``lcs_train.calibrate.recalibrate_batch_norm``). Measured on
torchvision's ResNet18 (README, "Normalisation"), the kept BatchNorm is 4 to 8 points more
accurate and trains at learning rates where GroupNorm does not; ``lcs-train --norm auto``
keeps it for every network built with BatchNorm.
Every swapped layer lives on the subspace (both ends of a line start from the layer's current
parameters, so a pretrained network is the starting point of every level).

Which conv / linear layers are *compressed* is ``filter_fn(module, name) -> bool``. The
default rule (the paper's): the first conv (the first ``nn.Conv2d`` in registration order) and
the classifier (the last ``nn.Linear``) stay dense and unquantized; every other conv and linear
layer is compressed. Layers ``filter_fn`` declines stay on the subspace, uncompressed. Only the
exact torch classes are swapped: a subclass may compute something else in its ``forward``.
Other parameters (embeddings, layer scales) are shared by every level.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lcs_train.errors import LcsError
from lcs_train.layers import (
    CompressibleBatchNorm, CompressibleConv2d, CompressibleLayer, CompressibleLinear, CompressibleNorm,
)
from lcs_train.methods.base import CompressionMethod, Dense
from lcs_train.shapes import Line, Point

#: ``filter_fn(module, qualified_name) -> bool``: True compresses the conv / linear layer.
FilterFn = Callable[[nn.Module, str], bool]

NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)

#: What ``to_subspace`` may do with BatchNorm layers (see the module docstring).
BATCH_NORM_CHOICES = ("method", "batch")


def dense_ends_filter(model: nn.Module) -> FilterFn:
    """The default rule: compress every conv and linear layer except the first conv and the
    last linear layer (the stem and the classifier)."""
    convs = [name for name, module in model.named_modules() if type(module) is nn.Conv2d]
    linears = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    dense = {names[index] for names, index in ((convs, 0), (linears, -1)) if names}
    return lambda module, name: name not in dense


def to_subspace(
    model: nn.Module, method: CompressionMethod, shape: Point | Line, filter_fn: FilterFn | None = None,
    *, norm: str = "method",
) -> nn.Module:
    """Swap ``model``'s conv, linear and norm layers for compressible ones, in place.

    Returns ``model``. ``filter_fn`` chooses the compressed conv / linear layers (default:
    :func:`dense_ends_filter`); ``norm`` is ``"method"`` (BatchNorm becomes the method's norm)
    or ``"batch"`` (BatchNorm is kept, with per-level statistics). A model that already holds
    compressible layers is refused.
    """
    if norm not in BATCH_NORM_CHOICES:
        raise LcsError(f"unknown BatchNorm treatment {norm!r}", f"use one of: {', '.join(BATCH_NORM_CHOICES)}")
    if any(isinstance(module, CompressibleLayer) for module in model.modules()):
        raise LcsError("this model is already a compressible subspace", "call to_subspace on the plain model once")
    if not method.compresses:
        raise LcsError("to_subspace needs a compression method, not Dense", "pass Unstructured(), Structured() or Quantized()")
    compress = filter_fn or dense_ends_filter(model)
    dense = Dense(trained_max_alpha=method.max_alpha)
    swapped: dict[int, nn.Module] = {}  # a module registered twice is swapped once
    for name, module in list(model.named_modules()):
        if id(module) in swapped:
            replacement = swapped[id(module)]
        elif type(module) is nn.Conv2d:
            replacement = CompressibleConv2d.from_dense(module, method if compress(module, name) else dense, shape)
        elif type(module) is nn.Linear:
            replacement = CompressibleLinear.from_dense(module, method if compress(module, name) else dense, shape)
        elif type(module) is nn.BatchNorm2d and norm == "batch":
            replacement = CompressibleBatchNorm.from_dense(module, method, shape)
        elif type(module) in NORM_TYPES:
            replacement = CompressibleNorm.from_dense(module, method, shape)
        else:
            continue
        swapped[id(module)] = replacement
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, replacement)
    if not any(isinstance(module, CompressibleLayer) and module.method.compresses for module in model.modules()):
        raise LcsError("the model has no layer to compress (no nn.Conv2d, nn.Linear or norm layer was swapped)",
                       "pass a network built from nn.Conv2d / nn.Linear, or a filter_fn that selects some")
    return model


#: ``lcs-train --norm`` values: "auto" keeps BatchNorm where the network has it.
NORM_CHOICES = ("auto", "batch", "group", "instance")


def check_norm_choice(choice: str, method: CompressionMethod) -> None:
    """Refuse a ``--norm`` that is unknown or is another method's norm (structured narrows
    channels, which GroupNorm's groups cannot follow; the others train with GroupNorm)."""
    if choice not in NORM_CHOICES:
        raise LcsError(f"unknown --norm {choice!r}", f"use one of: {', '.join(NORM_CHOICES)}")
    if choice in ("group", "instance") and choice != method.norm:
        raise LcsError(f"--norm {choice} does not apply to {method.name} subspaces, which use {method.norm}",
                       f"use --norm {method.norm}, batch or auto")


def resolve_norm(choice: str, plain: nn.Module, method: CompressionMethod, model_name: str) -> str:
    """The normalisation a subspace of ``plain`` trains with, for ``--norm choice``: "batch"
    (BatchNorms kept, per-level statistics) or the method's own norm.

    "auto" keeps BatchNorm when ``plain`` was built with it (torchvision's networks): measured
    on ResNet18, recalibrated BatchNorm beats the paper's GroupNorm by 4 to 8 points (README).
    """
    check_norm_choice(choice, method)
    has_batch_norm = any(type(module) is nn.BatchNorm2d for module in plain.modules())
    if choice == "auto":
        return "batch" if has_batch_norm else method.norm
    if choice == "batch" and not has_batch_norm:
        raise LcsError(f"--norm batch: {model_name} has no BatchNorm2d layer to keep",
                       f"use --norm auto or {method.norm}")
    return choice
