"""The compression functions of LCS, on plain tensors.

Every function takes ``alpha`` (or a value derived from it) as a tensor so that the same code
runs eagerly, under ``torch.export`` and in ONNX: no data-dependent shapes anywhere. The top-k
threshold comes from a sort and a gather, channel masks from a comparison with ``arange``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def capturing_graph() -> bool:
    """True while torch.export, dynamo or the TorchScript tracer is capturing a graph."""
    return bool(
        torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing()
    )


def pruned_count(sparsity: Tensor, count: int) -> Tensor:
    """k = round(sparsity * count), computed in float32 by every path alike."""
    return pruned_counts(sparsity.reshape(-1)[:1], count)


def pruned_counts(sparsities: Tensor, count: int) -> Tensor:
    """``pruned_count`` of each element of ``sparsities`` (shape kept)."""
    return torch.round(sparsities.float() * count).clamp(0, count).long()


def magnitude_threshold(weight: Tensor, sparsity: Tensor) -> Tensor:
    """The |w| at or below which ``round(sparsity * numel)`` weights fall (the k smallest).

    Returns -1 when nothing is to be pruned, so ``|w| > threshold`` keeps every weight.
    """
    return _threshold_of_magnitudes(weight.detach().abs().flatten(), sparsity)


def _threshold_of_magnitudes(magnitudes: Tensor, sparsity: Tensor) -> Tensor:
    """``magnitude_threshold`` from the flat |w| (computed once by the caller).

    Eagerly a selection finds the k-th smallest |w| (a full sort costs a training step about
    4 % on CPU); while a graph is captured, a sort and a gather express the same value
    without data-dependent shapes.
    """
    count = magnitudes.numel()
    if not capturing_graph():
        k = int(pruned_count(sparsity, count))
        if k == 0:
            return magnitudes.new_full((), -1.0)
        if magnitudes.device.type == "cpu":
            # A copy: the caller compares these magnitudes in their own order afterwards.
            return torch.tensor(_kth_smallest_in_place(magnitudes.numpy().copy(), k), dtype=magnitudes.dtype)
        return torch.kthvalue(magnitudes, k).values
    ordered = torch.sort(magnitudes).values
    # Index 0 of the padded table means "prune nothing"; index k is the k-th smallest |w|.
    padded = torch.cat([ordered.new_full((1,), -1.0), ordered])
    return padded.index_select(0, pruned_count(sparsity, count)).reshape(())


def magnitude_keep(weight: Tensor, sparsity: Tensor) -> Tensor:
    """True for the weights a ``sparsity`` top-k keeps (the largest |w|), as a bool tensor.

    Computed without gradient: pruned weights receive no task gradient (LCS, section 3).
    """
    with torch.no_grad():
        magnitudes = weight.detach().abs()
        return magnitudes > _threshold_of_magnitudes(magnitudes.flatten(), sparsity)


def magnitude_mask(weight: Tensor, sparsity: Tensor) -> Tensor:
    """Keep the largest |w| of a layer, zero the ``sparsity`` fraction with the smallest:
    ``magnitude_keep`` as 1.0 / 0.0 in the weight's dtype."""
    return magnitude_keep(weight, sparsity).to(weight.dtype)


def apply_magnitude_mask(weight: Tensor, sparsity: Tensor) -> Tensor:
    """``weight`` with the ``sparsity`` fraction of smallest |w| zeroed; the gradient flows
    to the kept weights only.

    Eagerly on the CPU, ``hardshrink`` at the threshold: it is exactly "keep |w| >
    threshold", in one fused pass forward and one backward, where an abs, a comparison and
    a ``where`` took three (on ResNet18's 2.4 M-weight layers these passes were a visible
    part of a step). Elsewhere eagerly a ``where`` on the bool mask (a GPU threshold stays
    on the device: no sync per layer). While a graph is captured, a multiply by the float
    mask: what every exporter and runtime handles.
    """
    if capturing_graph():
        return weight * magnitude_mask(weight, sparsity)
    if weight.device.type == "cpu":
        threshold = _cpu_threshold(weight, sparsity)
        return weight if threshold is None else torch.nn.functional.hardshrink(weight, threshold)
    return torch.where(magnitude_keep(weight, sparsity), weight, 0.0)


def _cpu_threshold(weight: Tensor, sparsity: Tensor) -> float | None:
    """The k-th smallest |w| of a CPU weight (None when k = 0): the same value as
    ``magnitude_threshold``, by a selection in place on one fresh array of magnitudes."""
    k = int(pruned_count(sparsity, weight.numel()))
    if k == 0:
        return None
    return _kth_smallest_in_place(np.abs(weight.detach().reshape(-1).numpy()), k)


def _kth_smallest_in_place(magnitudes: np.ndarray, k: int) -> float:
    """The k-th smallest (1-based) of the non-negative floats ``magnitudes``, reordering them.

    Non-negative floats order as their bit patterns do (NaN last, as NumPy orders it), and
    NumPy partitions integers about twice as fast as floats (2.4 M values: 0.8 vs 1.6 ms).
    """
    magnitudes.view(f"i{magnitudes.itemsize}").partition(k - 1)
    return float(magnitudes[k - 1])


def kept_channels(channels: int, width: Tensor) -> Tensor:
    """How many leading channels a layer of ``channels`` keeps at ``width`` (at least one)."""
    return torch.round(width.reshape(-1)[:1] * channels).clamp(1, channels)


def channel_mask(channels: int, width: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """1 for the first ``round(channels * width)`` channels, 0 for the rest, shape [channels]."""
    positions = torch.arange(channels, device=width.device, dtype=width.dtype)
    return (positions < kept_channels(channels, width)).to(dtype)


def affine_qparams(low: Tensor, high: Tensor, bits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Scale, zero point and largest code of asymmetric per-tensor quantization.

    The range is widened to include 0 so that zero is exactly representable (padding and
    pruned weights stay exactly zero after quantization).
    """
    low = torch.clamp(low, max=0.0)
    high = torch.clamp(high, min=0.0)
    levels = torch.pow(2.0, bits) - 1.0
    scale = torch.clamp((high - low) / levels, min=1e-8)
    zero_point = torch.clamp(torch.round(-low / scale), min=0.0).minimum(levels)
    return scale, zero_point, levels


def quantize_codes(x: Tensor, scale: Tensor, zero_point: Tensor, levels: Tensor) -> Tensor:
    """Integer codes (as floats) of ``x`` on the affine grid: clamp(round(x / s) + z, 0, levels)."""
    return torch.minimum(torch.clamp(torch.round(x / scale) + zero_point, min=0.0), levels)


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, levels: Tensor) -> Tensor:
    """Quantize then dequantize, with a straight-through gradient to ``x``."""
    codes = quantize_codes(x, scale, zero_point, levels)
    dequantized = (codes - zero_point) * scale
    return x + (dequantized - x).detach()


def fake_quantize_tensor(x: Tensor, bits: Tensor) -> Tensor:
    """Per-tensor affine fake quantization of ``x`` at ``bits``, range from x's own min and max."""
    scale, zero_point, levels = affine_qparams(x.detach().min(), x.detach().max(), bits)
    return fake_quantize(x, scale, zero_point, levels)
