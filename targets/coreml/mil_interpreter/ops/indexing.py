"""Gather/scatter, sorting and top-k."""

from __future__ import annotations

import numpy as np

from ..registry import OpArgs, register

# Scatter modes as NumPy ufuncs; "update" is plain assignment.
_SCATTER_UFUNCS = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.true_divide,
    "max": np.maximum,
    "min": np.minimum,
}


def _mode(args: OpArgs) -> str:
    return str(args.get("mode", "add"))


def _normalize_indices(indices: np.ndarray, dim: int) -> np.ndarray:
    indices = np.asarray(indices).astype(np.int64)
    return np.where(indices < 0, indices + dim, indices)


@register("gather")
def gather(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    indices = np.asarray(args["indices"]).astype(np.int64)
    axis = int(args.get("axis", 0)) % x.ndim
    batch_dims = int(args.get("batch_dims", 0))
    if batch_dims == 0:
        return np.take(x, indices, axis=axis)
    # Gather independently for every combination of the leading batch dims.
    batch_shape = x.shape[:batch_dims]
    xb = x.reshape(-1, *x.shape[batch_dims:])
    ib = indices.reshape(-1, *indices.shape[batch_dims:])
    parts = [np.take(xb[k], ib[k], axis=axis - batch_dims) for k in range(xb.shape[0])]
    return np.stack(parts).reshape(*batch_shape, *parts[0].shape)


@register("gather_along_axis")
def gather_along_axis(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    axis = int(args.get("axis", 0)) % x.ndim
    return np.take_along_axis(x, _normalize_indices(args["indices"], x.shape[axis]), axis=axis)


@register("gather_nd")
def gather_nd(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    indices = np.asarray(args["indices"]).astype(np.int64)
    batch_dims = int(args.get("batch_dims", 0))

    def one(xs: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return xs[tuple(np.moveaxis(ids, -1, 0))]

    if batch_dims == 0:
        return one(x, indices)
    xb = x.reshape(-1, *x.shape[batch_dims:])
    ib = indices.reshape(-1, *indices.shape[batch_dims:])
    parts = [one(xb[k], ib[k]) for k in range(xb.shape[0])]
    return np.stack(parts).reshape(*x.shape[:batch_dims], *parts[0].shape)


def _apply(out: np.ndarray, index, updates: np.ndarray, mode: str) -> None:
    if mode == "update":
        out[index] = updates
    else:
        _SCATTER_UFUNCS[mode].at(out, index, updates)


@register("scatter")
def scatter(args: OpArgs) -> np.ndarray:
    data = np.array(args["data"])
    axis = int(args.get("axis", 0)) % data.ndim
    indices = _normalize_indices(args["indices"], data.shape[axis]).ravel()
    updates = np.moveaxis(np.asarray(args["updates"]).astype(data.dtype), axis, 0)
    view = np.moveaxis(data, axis, 0)  # a view: writes land in data
    mode = _mode(args)
    for j, idx in enumerate(indices):  # in order, so repeated indices accumulate or overwrite
        _apply(view, idx, updates[j], mode)
    return data


@register("scatter_along_axis")
def scatter_along_axis(args: OpArgs) -> np.ndarray:
    data = np.array(args["data"])
    axis = int(args.get("axis", 0)) % data.ndim
    updates = np.asarray(args["updates"]).astype(data.dtype)
    indices = _normalize_indices(args["indices"], data.shape[axis])
    grid = list(np.indices(indices.shape, sparse=True))
    grid[axis] = indices
    _apply(data, tuple(grid), updates, _mode(args))
    return data


@register("scatter_nd")
def scatter_nd(args: OpArgs) -> np.ndarray:
    data = np.array(args["data"])
    indices = np.asarray(args["indices"]).astype(np.int64)
    updates = np.asarray(args["updates"]).astype(data.dtype)
    _apply(data, tuple(np.moveaxis(indices, -1, 0)), updates, _mode(args))
    return data


def _argsort(x: np.ndarray, axis: int, ascending: bool) -> np.ndarray:
    # Stable sort; descending order is a stable sort of the reversed comparison.
    if ascending:
        return np.argsort(x, axis=axis, kind="stable")
    if np.issubdtype(x.dtype, np.bool_):
        x = x.astype(np.int8)
    return np.argsort(-x.astype(np.float64) if np.issubdtype(x.dtype, np.integer) else -x, axis=axis, kind="stable")


@register("argsort")
def argsort(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    return _argsort(x, int(args.get("axis", -1)), bool(args.get("ascending", False))).astype(np.int32)


@register("topk")
def topk(args: OpArgs):
    x = np.asarray(args["x"])
    k = int(args.get("k", 1))
    axis = int(args.get("axis", -1)) % x.ndim
    order = _argsort(x, axis, bool(args.get("ascending", False)))
    k = x.shape[axis] if k == -1 else k
    idx = np.take(order, np.arange(k), axis=axis)
    # sort=False lets Core ML return the top k in any order; sorted is one valid order.
    values = np.take_along_axis(x, idx, axis=axis)
    if not bool(args.get("return_indices", True)):
        return values
    return values, idx.astype(np.int32)
