"""Calibrating a subspace from data, without changing a weight: activation ranges and
per-level BatchNorm statistics.

Quantized layers quantize their input with a running [min, max] (``activation_range``) that
only moves in train mode. Training keeps those ranges current; a subspace whose weights did
not come from a training run (imported, edited, or drawn at random for a test) needs them set
from real inputs before its quantized levels mean anything. ``calibrate_activation_ranges``
runs forward passes in train mode, without gradient, at several alphas (training visits
every level, so the ranges are shared by all of them), and leaves the model as it found it
otherwise: same weights, same alpha, same train/eval mode. For methods that keep no ranges
it is harmless (GroupNorm and InstanceNorm keep no running statistics).

A kept BatchNorm (``lcs_train.layers.CompressibleBatchNorm``) holds running statistics per
level, one table row per alpha of the method's ``statistics_alphas``; nothing fills them
during training (every step visits other alphas). ``recalibrate_batch_norm`` re-estimates
each row from data at its alpha, the way US-Nets recalibrate each width: same shape of
function, same promise to leave the model as it found it except for those tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from lcs_train.layers import CompressibleBatchNorm, CompressibleWeighted
from lcs_train.subspace import at_alpha, compressible_layers, fixed_alpha_of, model_method

#: Alphas visited per calibration when the method's levels are continuous.
CONTINUOUS_POINTS = 5


def calibration_alphas(model: nn.Module) -> list[float]:
    """The alphas a calibration visits: a fixed-alpha baseline's one alpha, else every
    discrete level (bit widths), else ``CONTINUOUS_POINTS`` evenly over the trained range."""
    fixed = fixed_alpha_of(model)
    if fixed is not None:
        return [fixed]
    return list(model_method(model).level_grid(CONTINUOUS_POINTS))


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
    with full_compression(model, training=True):
        for alpha in calibration_alphas(model) if alphas is None else alphas:
            with at_alpha(model, float(alpha)):
                for start in range(0, len(images), batch_size):
                    model(images[start : start + batch_size])


@contextmanager
def full_compression(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Run a block with compression fully on (no warm-up ramp, activations quantized) and
    ``model`` in train mode or not, restoring the schedule and the mode afterwards."""
    was_training = model.training
    schedule = [(layer.compression_ramp, layer.quantize_activations) for layer in compressible_layers(model)]
    for layer in compressible_layers(model):
        layer.compression_ramp, layer.quantize_activations = 1.0, True
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)
        for layer, (ramp, quantize) in zip(compressible_layers(model), schedule):
            layer.compression_ramp, layer.quantize_activations = ramp, quantize


def batch_norm_layers(model: nn.Module) -> list[CompressibleBatchNorm]:
    """The kept BatchNorms of ``model`` (none for a GroupNorm or InstanceNorm subspace)."""
    return [module for module in model.modules() if isinstance(module, CompressibleBatchNorm)]


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, images: Tensor, batch_size: int = 128) -> int:
    """Re-estimate every kept BatchNorm's statistics table of ``model`` from ``images``
    (normalised, NCHW) and return the number of rows filled (0: no kept BatchNorm).

    For each alpha of the method's ``statistics_alphas`` every batch of ``images`` runs with
    compression fully on; the BatchNorms normalise with the batch's statistics and average
    them (equal weight per batch, BatchNorm's ``momentum=None``) into that alpha's row. The
    rest of the network runs in eval mode: dropout and stochastic depth off and quantized
    activation ranges left alone, so the statistics are those of the network that will run
    at inference. A fixed-alpha baseline runs at its one alpha, into every row. A last batch
    of one image is left out (one value per channel has no variance).
    """
    norms = batch_norm_layers(model)
    if not norms:
        return 0
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    if batches and len(batches[-1]) < 2 and len(batches) > 1:
        batches.pop()
    if not batches or len(batches[0]) < 2:
        raise ValueError("BatchNorm recalibration needs at least two images")
    # The images may stay on the CPU (a large training split) while the model trains elsewhere.
    device = next(model.parameters()).device
    fixed = fixed_alpha_of(model)
    grid = model_method(model).statistics_alphas()
    rows = [(fixed, list(range(len(grid))))] if fixed is not None else [(alpha, [row]) for row, alpha in enumerate(grid)]
    with full_compression(model, training=False), _weights_computed_once(model):
        for alpha, targets in rows:
            for norm in norms:
                norm.start_recording()
            try:
                with at_alpha(model, float(alpha)):
                    for batch in batches:
                        model(batch.to(device))
            finally:
                recorded = [norm.stop_recording() for norm in norms]
            for norm, statistics in zip(norms, recorded):
                if statistics is None:
                    continue  # a BatchNorm the forward pass never reached keeps its rows
                norm.level_mean[targets] = statistics[0].to(norm.level_mean.dtype)
                norm.level_var[targets] = statistics[1].to(norm.level_var.dtype)
    return len(grid)


@contextmanager
def _weights_computed_once(model: nn.Module) -> Iterator[None]:
    """Within the block, each conv / linear layer computes its compressed weight once per
    alpha: the weights do not change while the statistics are re-estimated, and a top-k
    mask costs more than the forward pass it serves (ResNet18 at 32 px: 0.9 s a forward,
    mostly masks)."""
    layers = [layer for layer in compressible_layers(model) if isinstance(layer, CompressibleWeighted)]
    for layer in layers:
        layer.compressed_weight = _once_per_alpha(layer.compressed_weight)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for layer in layers:
            del layer.compressed_weight  # the class's own method again


def _once_per_alpha(compute: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``compute`` remembering its result for the last alpha it saw."""
    last: dict[float, Tensor] = {}

    def cached(alpha: Tensor) -> Tensor:
        key = float(alpha.reshape(-1)[0])
        if key not in last:
            last.clear()
            last[key] = compute(alpha)
        return last[key]

    return cached
