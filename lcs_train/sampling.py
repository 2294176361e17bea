"""Which alphas a training step trains at, per subspace shape and method (LCS, section 4)."""

from __future__ import annotations

import torch

from lcs_train.methods.base import CompressionMethod
from lcs_train.shapes import Line, Point


def _uniform(method: CompressionMethod, generator: torch.Generator) -> float:
    discrete = method.discrete_alphas()
    if discrete is not None:
        return discrete[int(torch.randint(len(discrete), (1,), generator=generator))]
    return float(torch.rand((), generator=generator)) * method.max_alpha


def sample_alphas(
    method: CompressionMethod, shape: Point | Line, generator: torch.Generator
) -> list[float]:
    """The alphas of one step; their losses are summed.

    - structured (either shape): a sandwich of both ends plus two random alphas;
    - line: with probability 0.5 an endpoint (each half the time), else uniform;
    - point: uniform.
    Quantized methods draw from the discrete alphas that map to integer bit widths.
    """
    if method.sandwich:
        return [0.0, method.max_alpha, _uniform(method, generator), _uniform(method, generator)]
    if isinstance(shape, Line) and float(torch.rand((), generator=generator)) < 0.5:
        return [0.0 if float(torch.rand((), generator=generator)) < 0.5 else method.max_alpha]
    return [_uniform(method, generator)]
