"""Calibrating a subspace's activation ranges from data, without changing a weight.

Quantized layers quantize their input with a running [min, max] (``activation_range``) that
only moves in train mode. Training keeps those ranges current; a subspace whose weights did
not come from a training run (imported, edited, or drawn at random for a test) needs them set
from real inputs before its quantized levels mean anything. ``calibrate_activation_ranges``
runs forward passes in train mode, without gradient, at several alphas (training visits
every level, so the ranges are shared by all of them), and leaves the model as it found it
otherwise: same weights, same alpha, same train/eval mode. For methods that keep no ranges
it is harmless (GroupNorm and InstanceNorm keep no running statistics).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lcs_train.subspace import at_alpha, compressible_layers, fixed_alpha_of, model_method

#: Alphas visited per calibration when the method's levels are continuous.
CONTINUOUS_POINTS = 5


def calibration_alphas(model: nn.Module) -> list[float]:
    """The alphas a calibration visits: a fixed-alpha baseline's one alpha, else every
    discrete level (bit widths), else ``CONTINUOUS_POINTS`` evenly over the trained range."""
    fixed = fixed_alpha_of(model)
    if fixed is not None:
        return [fixed]
    method = model_method(model)
    discrete = method.discrete_alphas()
    if discrete is not None:
        return list(discrete)
    return [method.max_alpha * i / (CONTINUOUS_POINTS - 1) for i in range(CONTINUOUS_POINTS)]


@torch.no_grad()
def calibrate_activation_ranges(
    model: nn.Module, images: Tensor, alphas: Sequence[float] | None = None, batch_size: int = 64,
) -> None:
    """Set the running activation ranges of ``model`` from ``images`` (normalised, NCHW).

    For each alpha in turn (default: ``calibration_alphas``), every batch of ``images`` is run
    in train mode with compression fully on, so each layer's range follows the inputs it sees
    at every level, the way training leaves it.
    """
    if len(images) == 0:
        raise ValueError("calibration needs at least one image")
    was_training = model.training
    schedule = [(layer.compression_ramp, layer.quantize_activations) for layer in compressible_layers(model)]
    for layer in compressible_layers(model):
        layer.compression_ramp, layer.quantize_activations = 1.0, True
    model.train()
    try:
        for alpha in calibration_alphas(model) if alphas is None else alphas:
            with at_alpha(model, float(alpha)):
                for start in range(0, len(images), batch_size):
                    model(images[start : start + batch_size])
    finally:
        model.train(was_training)
        for layer, (ramp, quantize) in zip(compressible_layers(model), schedule):
            layer.compression_ramp, layer.quantize_activations = ramp, quantize
