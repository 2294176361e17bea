"""Convolution, linear/matmul and pooling.

fp16 inputs are computed in fp32 (products summed in fp32) and rounded to fp16 once at the end,
which models Core ML's fp16 kernels accumulating in fp32 rather than NumPy's fp16 summation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..dtypes import compute_dtype
from ..registry import OpArgs, register


def _ints(value, default: list[int]) -> list[int]:
    return default if value is None else [int(v) for v in np.asarray(value).ravel()]


def spatial_pads(
    pad_type: str,
    pad: list[int] | None,
    in_sizes: list[int],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial dim for a MIL ``pad_type``."""
    n = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        pad = pad or [0] * (2 * n)
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            out = math.ceil(size / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            # "same" puts the odd pixel at the end, "same_lower" at the beginning.
            pads.append((small, big) if pad_type == "same" else (big, small))
        return pads
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _conv_geometry(args: OpArgs, x: np.ndarray, kernel: list[int]):
    n = len(kernel)
    strides = _ints(args.get("strides"), [1] * n)
    dilations = _ints(args.get("dilations"), [1] * n)
    pad_type = str(args.get("pad_type", "valid"))
    pads = spatial_pads(pad_type, _ints(args.get("pad"), None), list(x.shape[2:]), kernel, strides, dilations)
    return strides, dilations, pads


@register("conv")
def conv(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    w = np.asarray(args["weight"])
    dtype = compute_dtype(x, w)
    x, w = x.astype(dtype), w.astype(dtype)
    groups = int(args.get("groups", 1))
    kernel = list(w.shape[2:])
    strides, dilations, pads = _conv_geometry(args, x, kernel)
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    n_batch, c_in = x.shape[:2]
    c_out = w.shape[0]
    out_sizes = [
        (size - (k - 1) * d - 1) // s + 1
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations)
    ]
    # Sum over kernel offsets; each offset is one batched (per-group) matrix product.
    cg, og = c_in // groups, c_out // groups
    w_g = w.reshape(groups, og, cg, *kernel)
    out = np.zeros((n_batch, groups, og, int(np.prod(out_sizes))), dtype=dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = tuple(
            slice(o * d, o * d + (size - 1) * s + 1, s)
            for o, d, s, size in zip(offset, dilations, strides, out_sizes)
        )
        xs = x[(slice(None), slice(None), *window)].reshape(n_batch, groups, cg, -1)
        out += np.matmul(w_g[(slice(None), slice(None), slice(None), *offset)], xs)
    out = out.reshape(n_batch, c_out, *out_sizes)
    bias = args.get("bias")
    if bias is not None:
        out += np.asarray(bias).astype(dtype).reshape(1, -1, *([1] * len(kernel)))
    return out


@register("conv_transpose")
def conv_transpose(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    w = np.asarray(args["weight"])  # (C_in, C_out / groups, *K)
    dtype = compute_dtype(x, w)
    x, w = x.astype(dtype), w.astype(dtype)
    groups = int(args.get("groups", 1))
    kernel = list(w.shape[2:])
    n = len(kernel)
    strides = _ints(args.get("strides"), [1] * n)
    dilations = _ints(args.get("dilations"), [1] * n)
    n_batch, c_in = x.shape[:2]
    in_sizes = list(x.shape[2:])
    cg, og = c_in // groups, w.shape[1]
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(in_sizes, strides, kernel, dilations)]
    out = np.zeros((n_batch, groups, og, *full), dtype=dtype)
    xs = x.reshape(n_batch, groups, cg, -1)
    w_g = w.reshape(groups, cg, og, *kernel)
    for offset in itertools.product(*(range(k) for k in kernel)):
        wk = np.swapaxes(w_g[(slice(None), slice(None), slice(None), *offset)], 1, 2)  # (G, og, cg)
        contrib = np.matmul(wk, xs).reshape(n_batch, groups, og, *in_sizes)
        window = tuple(
            slice(o * d, o * d + (size - 1) * s + 1, s)
            for o, d, s, size in zip(offset, dilations, strides, in_sizes)
        )
        out[(slice(None), slice(None), slice(None), *window)] += contrib
    out = out.reshape(n_batch, groups * og, *full)
    pad_type = str(args.get("pad_type", "valid"))
    output_shape = args.get("output_shape")
    if output_shape is not None:
        target = [int(v) for v in np.asarray(output_shape)[2:]]
        pads = [((f - t) // 2, f - t - (f - t) // 2) for f, t in zip(full, target)]
    elif pad_type == "custom":
        p = _ints(args.get("pad"), [0] * (2 * n))
        pads = [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    elif pad_type in ("same", "same_lower"):
        totals = [f - i * s for f, i, s in zip(full, in_sizes, strides)]
        pads = [(t // 2, t - t // 2) if pad_type == "same" else (t - t // 2, t // 2) for t in totals]
    else:
        pads = [(0, 0)] * n
    crop = tuple(slice(b, f - e) for (b, e), f in zip(pads, full))
    out = out[(slice(None), slice(None), *crop)]
    bias = args.get("bias")
    if bias is not None:
        out = out + np.asarray(bias).astype(dtype).reshape(1, -1, *([1] * n))
    return out


@register("linear")
def linear(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    w = np.asarray(args["weight"])
    dtype = compute_dtype(x, w)
    out = np.matmul(x.astype(dtype), w.astype(dtype).T)
    bias = args.get("bias")
    if bias is not None:
        out = out + np.asarray(bias).astype(dtype)
    return out


@register("matmul")
def matmul(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    y = np.asarray(args["y"])
    dtype = compute_dtype(x, y)
    x, y = x.astype(dtype), y.astype(dtype)
    if bool(args.get("transpose_x", False)) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if bool(args.get("transpose_y", False)) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _pool(args: OpArgs, kind: str) -> np.ndarray:
    x = np.asarray(args["x"])
    x = x.astype(compute_dtype(x))
    kernel = _ints(args["kernel_sizes"], None)
    n = len(kernel)
    strides, dilations, pads = _conv_geometry(args, x, kernel)
    in_sizes = list(x.shape[2:])
    ceil_mode = bool(args.get("ceil_mode", False))
    out_sizes, extra = [], []
    for size, (b, e), k, s in zip(in_sizes, pads, kernel, strides):
        span = size + b + e - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + b:
            out -= 1  # the last window must start inside the input or the begin padding
        out_sizes.append(out)
        extra.append(max((out - 1) * s + k - (size + b + e), 0))
    full_pads = [(0, 0), (0, 0)] + [(b, e + x_) for (b, e), x_ in zip(pads, extra)]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, full_pads, constant_values=fill)
    windows = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=tuple(range(2, 2 + n)))
    windows = windows[(slice(None), slice(None), *(slice(None, o * s, s) for o, s in zip(out_sizes, strides)))]
    win_axes = tuple(range(2 + n, 2 + 2 * n))
    if kind == "max":
        return windows.max(axis=win_axes)
    if kind == "l2":
        return np.sqrt(np.square(windows).sum(axis=win_axes))
    total = windows.sum(axis=win_axes)
    # Window element counts: real input only, or input plus explicit padding (never the
    # ceil_mode overhang), as PyTorch's count_include_pad does.
    exclude = bool(args.get("exclude_padding_from_average", False))
    ones = np.zeros([1, 1] + [s + b + e + x_ for s, (b, e), x_ in zip(in_sizes, pads, extra)], dtype=x.dtype)
    inner = tuple(
        slice(b, b + s) if exclude else slice(0, b + s + e)
        for s, (b, e) in zip(in_sizes, pads)
    )
    ones[(slice(None), slice(None), *inner)] = 1
    counts = np.lib.stride_tricks.sliding_window_view(ones, kernel, axis=tuple(range(2, 2 + n)))
    counts = counts[(slice(None), slice(None), *(slice(None, o * s, s) for o, s in zip(out_sizes, strides)))]
    return total / np.maximum(counts.sum(axis=win_axes), 1)


@register("avg_pool")
def avg_pool(args: OpArgs) -> np.ndarray:
    return _pool(args, "avg")


@register("max_pool")
def max_pool(args: OpArgs) -> np.ndarray:
    return _pool(args, "max")


@register("l2_pool")
def l2_pool(args: OpArgs) -> np.ndarray:
    return _pool(args, "l2")
