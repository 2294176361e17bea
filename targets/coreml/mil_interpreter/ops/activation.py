"""Activation functions. Float math runs in at least fp32; results are rounded to the declared
dtype by the interpreter, modelling an fp16 kernel with fp32 internals."""

from __future__ import annotations

import numpy as np

from ..dtypes import compute_dtype
from ..registry import OpArgs, register
from .elementwise import erf


def _x(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    return x.astype(compute_dtype(x))


def _param(args: OpArgs, name: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(args[name]).astype(x.dtype)


def _per_channel(param: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Broadcast a per-channel vector (axis 1) against ``x``."""
    return param.reshape([1, -1] + [1] * (x.ndim - 2)) if param.ndim == 1 else param


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


@register("relu")
def relu(args: OpArgs) -> np.ndarray:
    return np.maximum(args["x"], 0)


@register("relu6")
def relu6(args: OpArgs) -> np.ndarray:
    return np.minimum(np.maximum(args["x"], 0), 6)


@register("sigmoid")
def sigmoid(args: OpArgs) -> np.ndarray:
    return _sigmoid(_x(args))


@register("silu")
def silu(args: OpArgs) -> np.ndarray:
    x = _x(args)
    return x * _sigmoid(x)


@register("sigmoid_hard")
def sigmoid_hard(args: OpArgs) -> np.ndarray:
    x = _x(args)
    return np.clip(_param(args, "alpha", x) * x + _param(args, "beta", x), 0, 1)


@register("softplus")
def softplus(args: OpArgs) -> np.ndarray:
    return np.logaddexp(0, _x(args))


@register("softplus_parametric")
def softplus_parametric(args: OpArgs) -> np.ndarray:
    x = _x(args)
    alpha = _per_channel(_param(args, "alpha", x), x)
    beta = _per_channel(_param(args, "beta", x), x)
    return alpha * np.logaddexp(0, beta * x)


@register("softsign")
def softsign(args: OpArgs) -> np.ndarray:
    x = _x(args)
    return x / (1 + np.abs(x))


@register("elu")
def elu(args: OpArgs) -> np.ndarray:
    x = _x(args)
    return np.where(x > 0, x, _param(args, "alpha", x) * np.expm1(np.minimum(x, 0)))


@register("leaky_relu")
def leaky_relu(args: OpArgs) -> np.ndarray:
    x = _x(args)
    return np.where(x >= 0, x, x * _param(args, "alpha", x))


@register("prelu")
def prelu(args: OpArgs) -> np.ndarray:
    x = _x(args)
    alpha = _per_channel(_param(args, "alpha", x), x)
    return np.where(x >= 0, x, x * alpha)


@register("clamped_relu")
def clamped_relu(args: OpArgs) -> np.ndarray:
    x = _x(args)
    alpha, beta = _param(args, "alpha", x), _param(args, "beta", x)
    return np.minimum(np.where(x >= 0, x, alpha * x), beta)


@register("thresholded_relu")
def thresholded_relu(args: OpArgs) -> np.ndarray:
    x = _x(args)
    return np.where(x >= _param(args, "alpha", x), x, 0)


@register("linear_activation")
def linear_activation(args: OpArgs) -> np.ndarray:
    x = _x(args)
    return _param(args, "alpha", x) * x + _param(args, "beta", x)


@register("scaled_tanh")
def scaled_tanh(args: OpArgs) -> np.ndarray:
    x = _x(args)
    return _param(args, "alpha", x) * np.tanh(_param(args, "beta", x) * x)


@register("gelu")
def gelu(args: OpArgs) -> np.ndarray:
    x = _x(args)
    mode = str(args.get("mode") or "EXACT")
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    return 0.5 * x * (1 + erf(x / np.sqrt(2).astype(x.dtype)))


@register("softmax")
def softmax(args: OpArgs) -> np.ndarray:
    x = _x(args)
    axis = int(args.get("axis", -1))
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)
