"""The exact top-k magnitude threshold of a layer at alpha, without a sort at switch time.

Unstructured levels keep ``|w| > threshold`` where threshold is the k-th smallest ``|w(t)|``
(``lcs_train.compression.magnitude_threshold``). Inside a graph that is a full sort per layer,
which dominated the switch-once weights graph (84 % of its time on the demo model) and grows
as n log n with the layer. This module precomputes, once per export, a *bracket* per alpha
bin and replaces the sort by a small selection:

- the alpha range is cut into ``bins`` equal bins; for each bin a lower and an upper bound
  (``lower[b]``, ``upper[b]``) of the threshold over every alpha in the bin are stored, and
  the layer stores one count ``candidates`` that bounds, over all bins, how many weights can
  lie in [lower bound, upper bound];
- at alpha, with ``below`` = how many |w| are < ``lower[b]``: the threshold is the
  (k - below)-th smallest of the |w| that are >= ``lower[b]`` -- removing weights strictly
  below the k-th smallest does not move it down the order more than their number -- and it
  is at most ``upper[b]``, so it is that rank among the few |w| inside [lower[b], upper[b]]:
  those are gathered (ONNX ``Compress``) and one TopK of a constant k = ``candidates`` ranks
  them. The result is the sort's value bit for bit, ties included (the tie rule is in the
  caller's ``|w| > threshold``, unchanged).

The bounds are exact, not sampled: along a line ``w(t) = w0 + t (w1 - w0)`` each weight, as
computed in float32, is monotone in t, and t and k = round(alpha * n) are monotone in alpha,
so over a range of alphas every |w_i| lies between its values at the range's ends (0 where
the sign changes) and k between its values there. The bounds are evaluated with the layer's
own float32 code at alphas widened past each bin's edges, then moved a few units in the last
place outwards, so no rounding of the bin index or of t can leave them. For the count's sake
the bins are grouped in ``segments`` of t (each segment's per-weight bounds are sorted once):
a point subspace needs one segment, a line more.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from lcs_train.compression import pruned_count, pruned_counts

#: Largest count a float32 sum of ones holds exactly.
FLOAT_EXACT_COUNT = 2**24
#: Alpha bins of the lower-bound table (4 bytes each per layer).
BINS = 1024
#: t segments of a line: more segments tighten the count and cost one sort of the layer each
#: at export time. Large layers get more: their switch-time TopK grows with the count (about
#: 3.5 % of the weights at 64 segments, 1 % at 256, on a ResNet18-sized line), while small
#: layers' TopK is cheap anyway and their export stays quick.
LINE_SEGMENTS = 64
LARGE_LAYER_SEGMENTS = 256
#: Weights from which a layer counts as large.
LARGE_LAYER = 2**17
#: Widening of each alpha range past its edges: far above the rounding of alpha * bins / max
#: alpha in float32 (alpha <= 1, so about 1e-7), far below a bin's width.
ALPHA_MARGIN = 1e-6
#: Relative outward move of every bound: a few float32 units in the last place.
RELATIVE_MARGIN = 2.0**-20


class ThresholdBrackets(nn.Module):
    """Per-layer tables for the exact magnitude threshold at alpha (see the module docstring).

    ``weight_at(alpha)`` must be the layer's uncompressed weight at alpha (float32 [1]) and
    ``sparsity_of(alpha)`` the pruned fraction, both as the graph computes them; they are
    used here, to build the tables, and not kept. ``moves``: the weight depends on alpha (a
    line), so the bounds are taken per segment of alphas.
    """

    def __init__(self, weight_at: Callable[[Tensor], Tensor], sparsity_of: Callable[[Tensor], Tensor],
                 max_alpha: float, moves: bool) -> None:
        super().__init__()
        self.scale = float(np.float32(BINS / max_alpha))
        self.count = int(weight_at(_alpha(0.0)).numel())
        segments = (LARGE_LAYER_SEGMENTS if self.count >= LARGE_LAYER else LINE_SEGMENTS) if moves else 1
        lower, upper, candidates = _tables(weight_at, sparsity_of, float(max_alpha), self.count, segments)
        self.register_buffer("lower", lower)
        self.register_buffer("upper", upper)
        self.candidates = candidates

    def bin_index(self, alpha: Tensor) -> Tensor:
        """The bin of ``alpha`` (float32 [1], already clamped to [0, max_alpha]) as int64 [1]."""
        return torch.clamp(torch.floor(alpha * self.scale), 0, BINS - 1).long()

    def threshold(self, magnitudes: Tensor, alpha: Tensor, sparsity: Tensor) -> Tensor:
        """The k-th smallest of ``magnitudes`` (|w| at ``alpha``) with k = round(``sparsity`` * n)
        (``sparsity`` being ``sparsity_of(alpha)``), or -1 when k = 0; a scalar."""
        flat = magnitudes.reshape(-1)
        index = self.bin_index(alpha)
        lower, upper = self.lower.index_select(0, index), self.upper.index_select(0, index)
        under = flat < lower
        below = _count(under).reshape(1)
        # Only the weights inside [lower, upper] can be the k-th smallest, and there are at
        # most ``candidates`` of them: gather those few, then one small TopK ranks them. A TopK
        # over the whole layer cost ORT a selection over every weight (most of the switch).
        # lower <= upper, so "under" implies "<= upper" and one xor leaves the weights inside.
        inside = torch.masked_select(flat, torch.logical_xor(under, flat <= upper))
        # Padding keeps the TopK's k a constant whatever the number inside (a scalar
        # expanded, not an n-element constant in the file).
        padding = flat.new_full((1,), math.inf).expand(self.candidates)
        smallest = torch.topk(torch.cat([inside, padding]), self.candidates, largest=False, sorted=True).values
        # Index 0 means "prune nothing" (k = 0), as in magnitude_threshold's padded table.
        padded = torch.cat([smallest.new_full((1,), -1.0), smallest])
        rank = pruned_count(sparsity, self.count) - below
        return padded.index_select(0, rank).reshape(())


def _count(flags: Tensor) -> Tensor:
    """How many of ``flags`` (bool) are set, as int64.

    A float32 sum, where exact: ORT's integer ReduceSum is about 7x slower than its float one
    (12 vs 1.7 ms on 2.4 M weights), and a float32 sum of ones is exact while every partial
    sum stays under 2**24, whatever the order of summation.
    """
    if flags.numel() <= FLOAT_EXACT_COUNT:
        return flags.to(torch.float32).sum().long()
    return flags.sum()


def _alpha(value: float) -> Tensor:
    return torch.tensor([value], dtype=torch.float32)


def _outward(value: float, direction: int) -> float:
    """``value`` moved a few ulps outwards (down for a lower bound, up for an upper one)."""
    return value + direction * abs(value) * RELATIVE_MARGIN


@torch.no_grad()
def _tables(weight_at: Callable[[Tensor], Tensor], sparsity_of: Callable[[Tensor], Tensor], max_alpha: float,
            count: int, segments: int) -> tuple[Tensor, Tensor, int]:
    """The per-bin lower and upper bounds of the threshold and the layer's candidate count
    (see the module docstring)."""
    scale = np.float32(BINS / max_alpha)
    edges = [min(max(b / float(scale), 0.0), max_alpha) for b in range(BINS + 1)]
    # k at every widened bin edge, with the graph's own float32 arithmetic (vectorised).
    starts = torch.tensor([max(edge - ALPHA_MARGIN, 0.0) for edge in edges[:-1]], dtype=torch.float32)
    ends = torch.tensor([min(edge + ALPHA_MARGIN, max_alpha) for edge in edges[1:]], dtype=torch.float32)
    k_lows = pruned_counts(sparsity_of(starts), count).tolist()
    k_highs = pruned_counts(sparsity_of(ends), count).tolist()
    per_segment = math.ceil(BINS / segments)
    lower = np.empty(BINS, np.float32)
    upper = np.empty(BINS, np.float32)
    most = 1
    for first in range(0, BINS, per_segment):
        last = min(first + per_segment, BINS)
        low_bound, high_bound = _magnitude_bounds(weight_at, edges[first] - ALPHA_MARGIN, edges[last] + ALPHA_MARGIN,
                                                  max_alpha)
        sorted_low, sorted_high = np.sort(low_bound), np.sort(high_bound)
        for b in range(first, last):
            k_low, k_high = k_lows[b], k_highs[b]
            lo = _outward(float(sorted_low[k_low - 1]), -1) if k_low else -1.0
            hi = _outward(float(sorted_high[k_high - 1]), 1) if k_high else -1.0
            lower[b], upper[b] = lo, hi
            # Weights whose range meets [lo, hi]: every one that can sit between the bound and
            # the threshold (sorted_high < lo implies sorted_low <= hi, so a difference of counts).
            meeting = (int(np.searchsorted(sorted_low, hi, side="right"))
                       - int(np.searchsorted(sorted_high, lo, side="left")))
            most = max(most, meeting)
    return torch.from_numpy(lower), torch.from_numpy(upper), min(count, most)


def _magnitude_bounds(weight_at: Callable[[Tensor], Tensor], start: float, end: float,
                      max_alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per weight, a lower and an upper bound of |w| over alphas in [start, end] (clamped)."""
    first = weight_at(_alpha(max(start, 0.0))).reshape(-1).numpy()
    second = weight_at(_alpha(min(end, max_alpha))).reshape(-1).numpy()
    crosses = np.signbit(first) != np.signbit(second)
    low = np.where(crosses, 0.0, np.minimum(np.abs(first), np.abs(second)))
    high = np.maximum(np.abs(first), np.abs(second))
    low = (low - low * RELATIVE_MARGIN).astype(np.float32)
    high = (high + high * RELATIVE_MARGIN).astype(np.float32)
    return low, high
