"""Putting a subspace at a level: ``set_alpha``, ``at_alpha``, and the line regulariser."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lcs_train.errors import LcsError
from lcs_train.layers import CompressibleLayer, CompressibleWeighted
from lcs_train.methods.base import CompressionMethod
from lcs_train.models import build_model
from lcs_train.shapes import Line, Point
from lcs_train.transform import to_subspace


def build_subspace(
    model: str, method: CompressionMethod, shape: Point | Line, norm: str | None = None, **arguments: object
) -> nn.Module:
    """Build architecture ``model`` and turn it into a compressible subspace of ``method`` and
    ``shape`` (``to_subspace``'s default rule). ``norm`` is the normalisation the subspace
    trains with: None or the method's own (GroupNorm, InstanceNorm for structured), or
    ``"batch"`` (BatchNorm with per-level statistics; torchvision's BatchNorms are kept)."""
    if norm == "batch":
        return to_subspace(build_model(model, norm="batch", **arguments), method, shape, norm="batch")
    return to_subspace(build_model(model, norm=norm or method.norm, **arguments), method, shape)


def compressible_layers(model: nn.Module) -> Iterator[CompressibleLayer]:
    """Every compressible layer of ``model``, in registration order."""
    for module in model.modules():
        if isinstance(module, CompressibleLayer):
            yield module


def model_method(model: nn.Module) -> CompressionMethod:
    """The compression method of subspace ``model`` (the one its compressed layers share)."""
    for layer in compressible_layers(model):
        if layer.method.compresses:
            return layer.method
    raise LcsError("this model is not a compressible subspace", "turn it into one with lcs_train.to_subspace")


def check_alpha(alpha: float, method: CompressionMethod) -> float:
    """Validate a user-given alpha against [0, 1] and the method's trained range."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise LcsError(f"alpha {alpha:g} is outside [0, 1]", "give an alpha between 0 and 1")
    if alpha > method.max_alpha + 1e-9:
        raise LcsError(
            f"alpha {alpha:g} is outside the trained range [0, {method.max_alpha:g}] "
            f"of this {method.name} subspace",
            f"give an alpha of at most {method.max_alpha:g}",
        )
    return alpha


def fixed_alpha_of(model: nn.Module) -> float | None:
    """The one alpha a ``--fixed-alpha`` baseline was trained at, or None for a subspace."""
    return getattr(model, "lcs_fixed_alpha", None)


def check_model_alpha(model: nn.Module, alpha: float) -> float:
    """Validate a user-given alpha for ``model``: inside [0, 1] and the trained range, and, for
    a ``--fixed-alpha`` baseline, equal to the one alpha it was trained at (any other level
    of such a network was never trained, so its accuracy would be meaningless)."""
    alpha = check_alpha(alpha, model_method(model))
    fixed = fixed_alpha_of(model)
    if fixed is not None and abs(alpha - fixed) > 1e-9:
        raise LcsError(
            f"alpha {alpha:g} was never trained: this is a fixed-alpha baseline, trained only at alpha {fixed:g}",
            f"use alpha {fixed:g}, or train a subspace (without --fixed-alpha) for other levels",
        )
    return alpha


def mark_fixed_alpha(model: nn.Module, alpha: float | None) -> None:
    """Record that ``model`` is a baseline trained only at ``alpha`` (None: a subspace), and
    put it at that alpha, so that a plain forward runs the level it was trained for."""
    model.lcs_fixed_alpha = None if alpha is None else float(alpha)  # type: ignore[assignment]
    if alpha is not None:
        set_alpha(model, float(alpha))


def set_alpha(model: nn.Module, alpha: float | Tensor) -> None:
    """Put every compressible layer of ``model`` at ``alpha``.

    A float is validated (``check_model_alpha``: the trained range, and a fixed-alpha
    baseline's one alpha); a tensor (shape [1]) is passed through unchanged so that it can
    be a graph input, which a fixed-alpha baseline cannot have.
    """
    if not isinstance(alpha, Tensor):
        alpha = check_model_alpha(model, alpha)
    elif fixed_alpha_of(model) is not None:
        raise LcsError(
            f"a fixed-alpha baseline (trained only at alpha {fixed_alpha_of(model):g}) cannot take alpha as an input",
            "export it at its one level (--levels with that alpha), or train a subspace for a dynamic alpha",
        )
    for layer in compressible_layers(model):
        layer.alpha = alpha


@contextmanager
def at_alpha(model: nn.Module, alpha: float | Tensor) -> Iterator[nn.Module]:
    """Run a block with ``model`` at ``alpha``, restoring the previous alpha afterwards."""
    previous = [layer.alpha for layer in compressible_layers(model)]
    set_alpha(model, alpha)
    try:
        yield model
    finally:
        for layer, value in zip(compressible_layers(model), previous):
            layer.alpha = value


def set_schedule(model: nn.Module, compression_ramp: float, quantize_activations: bool) -> None:
    """Training switches: the warm-up ramp of the compression and activation quantization."""
    for layer in compressible_layers(model):
        layer.compression_ramp = compression_ramp
        layer.quantize_activations = quantize_activations


def _line_ends(model: nn.Module) -> list[Tensor]:
    """The two ends' weights of every conv and linear layer of a line, as [start, end, ...]."""
    pairs: list[Tensor] = []
    for layer in compressible_layers(model):
        end = getattr(layer, "weight_end", None) if isinstance(layer, CompressibleWeighted) else None
        if end is not None:
            pairs += [layer.weight, end]
    return pairs


def _cosine_terms(weights: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """D = sum s.e, A = sum s.s and B = sum e.e over the pairs (s, e) of ``weights``."""
    flat = [w.detach().reshape(-1) for w in weights]
    dot = sum(torch.dot(s, e) for s, e in zip(flat[0::2], flat[1::2]))
    norm_start = sum(torch.dot(s, s) for s in flat[0::2])
    norm_end = sum(torch.dot(e, e) for e in flat[1::2])
    return dot, norm_start, norm_end  # type: ignore[return-value]


def _cosine_squared(dot: Tensor, norm_start: Tensor, norm_end: Tensor) -> Tensor:
    """c = D^2 / (A B + 1e-12) from ``_cosine_terms``."""
    return dot.pow(2) / (norm_start * norm_end + 1e-12)


def _cosine_gradient_scales(dot: Tensor, norm_start: Tensor, norm_end: Tensor, grad: Tensor | float
                            ) -> tuple[Tensor, Tensor, Tensor]:
    """For c = D^2 / (A B + 1e-12): the gradient of ``grad`` x c is ``end x by_dot + start x
    by_start`` for a start weight and ``start x by_dot + end x by_end`` for an end weight."""
    denominator = norm_start * norm_end + 1e-12
    by_dot = grad * 2 * dot / denominator  # dc/dD
    # dc/dA * 2 and dc/dB * 2 (A and B are sums of squares).
    by_start = -grad * 2 * dot.pow(2) * norm_end / denominator.pow(2)
    by_end = -grad * 2 * dot.pow(2) * norm_start / denominator.pow(2)
    return by_dot, by_start, by_end


def _end_gradient(weight: Tensor, other: Tensor, by_dot: Tensor, by_own: Tensor) -> Tensor:
    """The regulariser's gradient for ``weight``, whose pair partner is ``other``."""
    return other.mul(by_dot).addcmul_(weight, by_own)


def line_cosine_squared(model: nn.Module) -> Tensor:
    """cos^2 between the two ends of the line, over all conv and linear layers together.

    Zero for a point subspace. Penalising it pushes the ends apart (LCS+L, beta = 1).
    Training adds its gradient with ``add_line_cosine_squared_gradient`` instead.
    """
    pairs = _line_ends(model)
    if not pairs:
        return torch.zeros(())
    return _CosineSquared.apply(*pairs)


@torch.no_grad()
def add_line_cosine_squared_gradient(model: nn.Module, scale: float | Tensor = 1.0) -> Tensor:
    """Add ``scale`` x the gradient of ``line_cosine_squared`` to each end's ``.grad`` in
    place, as ``(scale * line_cosine_squared(model)).backward()`` would; returns cos^2.

    No graph and no gradient tensors of its own: on ResNet18 (11 M weights per end) the
    backward's fresh gradients, and adding them into ``.grad``, were a third of what the
    subspace adds to a training step.
    """
    pairs = _line_ends(model)
    if not pairs:
        return torch.zeros(())
    dot, norm_start, norm_end = _cosine_terms(pairs)
    by_dot, by_start, by_end = _cosine_gradient_scales(dot, norm_start, norm_end, scale)
    for start, end in zip(pairs[0::2], pairs[1::2]):
        for weight, other, own in ((start, end, by_start), (end, start, by_end)):
            if weight.grad is None:
                weight.grad = _end_gradient(weight, other, by_dot, own)
            else:
                weight.grad.addcmul_(other, by_dot).addcmul_(weight, own)
    return _cosine_squared(dot, norm_start, norm_end)


class _CosineSquared(torch.autograd.Function):
    """c = D^2 / (A B + 1e-12) over pairs (s, e), with D = sum s.e, A = sum s.s, B = sum e.e.

    The same value and gradient as writing it with autograd, in fewer passes over the
    weights: dot products forward (no products stored), and per weight one scaled sum of
    the pair backward.
    """

    @staticmethod
    def forward(ctx: Any, *weights: Tensor) -> Tensor:  # noqa: D102 (see the class)
        dot, norm_start, norm_end = _cosine_terms(list(weights))
        ctx.save_for_backward(dot, norm_start, norm_end, *weights)
        return _cosine_squared(dot, norm_start, norm_end)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:  # noqa: D102
        dot, norm_start, norm_end, *weights = ctx.saved_tensors
        by_dot, by_start, by_end = _cosine_gradient_scales(dot, norm_start, norm_end, grad)
        grads: list[Tensor] = []
        for start, end in zip(weights[0::2], weights[1::2]):
            grads += [_end_gradient(start, end, by_dot, by_start), _end_gradient(end, start, by_dot, by_end)]
        return tuple(grads)
