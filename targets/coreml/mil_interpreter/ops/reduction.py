"""reduce_* ops. Float reductions accumulate in at least fp32."""

from __future__ import annotations

import numpy as np

from ..dtypes import compute_dtype
from ..registry import OpArgs, register


def _reduce(fn):
    def impl(args: OpArgs) -> np.ndarray:
        x = np.asarray(args["x"])
        if np.issubdtype(x.dtype, np.floating):
            x = x.astype(compute_dtype(x))
        axes = args.get("axes")
        axes = None if axes is None else tuple(int(a) for a in np.ravel(axes))
        return fn(x, axes, bool(args.get("keep_dims", False)))

    return impl


def _log_sum_exp(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keep else np.squeeze(out, axis=axes)


_REDUCTIONS = {
    "reduce_mean": lambda x, a, k: np.mean(x, axis=a, keepdims=k),
    "reduce_sum": lambda x, a, k: np.sum(x, axis=a, keepdims=k),
    "reduce_max": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "reduce_min": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "reduce_prod": lambda x, a, k: np.prod(x, axis=a, keepdims=k),
    "reduce_l1_norm": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k),
    "reduce_l2_norm": lambda x, a, k: np.sqrt(np.sum(np.square(x), axis=a, keepdims=k)),
    "reduce_sum_square": lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k),
    "reduce_log_sum": lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)),
    "reduce_log_sum_exp": _log_sum_exp,
}
for _name, _fn in _REDUCTIONS.items():
    register(_name)(_reduce(_fn))


def _arg_reduce(fn):
    def impl(args: OpArgs) -> np.ndarray:
        x = np.asarray(args["x"])
        axis = int(args.get("axis", -1))
        out = fn(x, axis=axis)
        if bool(args.get("keep_dims", False)):
            out = np.expand_dims(out, axis)
        return out.astype(np.int32)

    return impl


register("reduce_argmax")(_arg_reduce(np.argmax))
register("reduce_argmin")(_arg_reduce(np.argmin))
