"""Normalisation ops. Statistics are computed in at least fp32 (biased variance)."""

from __future__ import annotations

import numpy as np

from ..dtypes import compute_dtype
from ..registry import OpArgs, register


def _x(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    return x.astype(compute_dtype(x))


def _eps(args: OpArgs, default: float) -> float:
    eps = args.get("epsilon")
    return default if eps is None else float(eps)


def _channel_param(args: OpArgs, name: str, x: np.ndarray) -> np.ndarray | None:
    value = args.get(name)
    if value is None:
        return None
    return np.asarray(value).astype(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))


def _normalize(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _affine(out: np.ndarray, args: OpArgs, x: np.ndarray) -> np.ndarray:
    """Apply the optional per-channel ``gamma`` and ``beta`` of a norm op."""
    gamma, beta = _channel_param(args, "gamma", x), _channel_param(args, "beta", x)
    if gamma is not None:
        out = out * gamma
    if beta is not None:
        out = out + beta
    return out


@register("batch_norm")
def batch_norm(args: OpArgs) -> np.ndarray:
    x = _x(args)
    mean = _channel_param(args, "mean", x)
    var = _channel_param(args, "variance", x)
    out = (x - mean) / np.sqrt(var + _eps(args, 1e-5))
    return _affine(out, args, x)


@register("instance_norm")
def instance_norm(args: OpArgs) -> np.ndarray:
    x = _x(args)
    out = _normalize(x, tuple(range(2, x.ndim)), _eps(args, 1e-5))
    return _affine(out, args, x)


@register("layer_norm")
def layer_norm(args: OpArgs) -> np.ndarray:
    x = _x(args)
    axes_val = args.get("axes")
    axes = tuple(range(x.ndim)) if axes_val is None else tuple(int(a) % x.ndim for a in np.ravel(axes_val))
    out = _normalize(x, axes, _eps(args, 1e-5))
    # gamma/beta have shape x.shape[axes]; place them on those axes.
    param_shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    gamma, beta = args.get("gamma"), args.get("beta")
    if gamma is not None:
        out = out * np.asarray(gamma).astype(x.dtype).reshape(param_shape)
    if beta is not None:
        out = out + np.asarray(beta).astype(x.dtype).reshape(param_shape)
    return out


@register("l2_norm")
def l2_norm(args: OpArgs) -> np.ndarray:
    x = _x(args)
    # Normalises over the last three dims (all dims of a rank-3 input), per the MIL spec.
    axes = tuple(range(max(x.ndim - 3, 0), x.ndim))
    square_sum = np.square(x).sum(axis=axes, keepdims=True)
    return x / np.sqrt(square_sum + _eps(args, 1e-6))


@register("local_response_norm")
def local_response_norm(args: OpArgs) -> np.ndarray:
    x = _x(args)
    size = int(args["size"])
    alpha = float(args.get("alpha", 1e-4))
    beta = float(args.get("beta", 0.75))
    k = float(args.get("k", 1.0))
    sq = np.square(x)
    # Sum over a window of `size` channels centred on each channel.
    lo, hi = (size - 1) // 2, size // 2
    padded = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    window = sum(padded[:, i : i + x.shape[1]] for i in range(size))
    return x / np.power(k + alpha / size * window, beta)
