"""Elementwise unary and binary ops, comparisons, logical ops, select, cast, quantize.

NumPy's float16 arithmetic rounds each result to fp16, which is the per-op rounding of an fp16
Core ML program; the interpreter casts every result to the declared dtype anyway.
"""

from __future__ import annotations

import math

import numpy as np

from ..dtypes import compute_dtype, numpy_dtype_from_name
from ..registry import OpArgs, register

try:  # scipy ships with scikit-learn, a project dependency; fall back to math.erf otherwise
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover
    _erf = np.vectorize(math.erf, otypes=[np.float64])


def erf(x: np.ndarray) -> np.ndarray:
    """Error function on float arrays (computed in at least fp32)."""
    x = np.asarray(x)
    return np.asarray(_erf(x.astype(compute_dtype(x)))).astype(compute_dtype(x))


def _binary(fn):
    def impl(args: OpArgs) -> np.ndarray:
        return fn(np.asarray(args["x"]), np.asarray(args["y"]))

    return impl


def _floor_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.floor_divide(x, y)


def _pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if np.issubdtype(x.dtype, np.floating):
        dtype = compute_dtype(x, y)
        return np.power(x.astype(dtype), y.astype(dtype))
    return np.power(x, y)


def _real_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # On int32 inputs the declared output is int32: the quotient is truncated by the final
    # cast, as coremltools' own value inference does.
    return np.true_divide(x, y)


_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": _real_div,
    "floor_div": _floor_div,
    "mod": np.mod,
    "pow": _pow,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}
for _name, _fn in _BINARY.items():
    register(_name)(_binary(_fn))


def _float_unary(fn):
    """Unary float op computed in at least fp32 (result rounded to the declared dtype)."""

    def impl(args: OpArgs) -> np.ndarray:
        x = np.asarray(args["x"])
        return fn(x.astype(compute_dtype(x)))

    return impl


_UNARY = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    # MIL documents round as "0.5 is rounded to 0", i.e. ties to even; coremltools' own value
    # inference uses np.round (ties to even) and so does torch.round.
    "round": np.round,
}
for _name, _fn in _UNARY.items():
    register(_name)(_float_unary(_fn))


@register("logical_not")
def logical_not(args: OpArgs) -> np.ndarray:
    return np.logical_not(args["x"])


def _epsilon(args: OpArgs, default: float) -> float:
    eps = args.get("epsilon")
    return default if eps is None else float(eps)


@register("inverse")
def inverse(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    return 1.0 / (x.astype(compute_dtype(x)) + _epsilon(args, 1e-4))


@register("log")
def log(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    return np.log(x.astype(compute_dtype(x)) + _epsilon(args, 1e-45))


@register("rsqrt")
def rsqrt(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    return 1.0 / np.sqrt(x.astype(compute_dtype(x)) + _epsilon(args, 1e-12))


@register("threshold")
def threshold(args: OpArgs) -> np.ndarray:
    return np.maximum(args["x"], args["alpha"])


@register("clip")
def clip(args: OpArgs) -> np.ndarray:
    return np.minimum(np.maximum(args["x"], args["alpha"]), args["beta"])


@register("select")
def select(args: OpArgs) -> np.ndarray:
    return np.where(np.asarray(args["cond"]).astype(bool), args["a"], args["b"])


@register("cast")
def cast(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    dtype = numpy_dtype_from_name(str(args["dtype"]))
    if np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.floating):
        # Float to int truncates toward zero (C semantics), like NumPy's astype.
        x = np.trunc(x)
    return x.astype(dtype)


@register("identity")
def identity(args: OpArgs) -> np.ndarray:
    return np.array(args["x"])


def _per_axis(param: np.ndarray, rank: int, axis: int | None) -> np.ndarray:
    param = np.asarray(param)
    if param.ndim == 0 or axis is None:
        return param
    shape = [1] * rank
    shape[axis % rank] = param.shape[0]
    return param.reshape(shape)


@register("quantize")
def quantize(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["input"]).astype(np.float32)
    axis = args.get("axis")
    axis = None if axis is None else int(axis)
    dtype = numpy_dtype_from_name(str(args["output_dtype"]))
    scale = _per_axis(args["scale"], x.ndim, axis).astype(np.float32)
    zero_point = args.get("zero_point")
    q = np.round(x / scale)
    if zero_point is not None:
        q = q + _per_axis(zero_point, x.ndim, axis).astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


@register("dequantize")
def dequantize(args: OpArgs) -> np.ndarray:
    q = np.asarray(args["input"]).astype(np.float32)
    axis = args.get("axis")
    axis = None if axis is None else int(axis)
    scale = np.asarray(args["scale"])
    zero_point = args.get("zero_point")
    if zero_point is not None:
        q = q - _per_axis(zero_point, q.ndim, axis).astype(np.float32)
    return (q * _per_axis(scale, q.ndim, axis).astype(np.float32)).astype(scale.dtype)
