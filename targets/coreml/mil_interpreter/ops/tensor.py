"""Shape and layout ops: reshape, transpose, concat, slicing, padding, tiling, fill, ranges..."""

from __future__ import annotations

import numpy as np

from ..registry import OpArgs, register


def _ints(value) -> list[int]:
    return [int(v) for v in np.ravel(np.asarray(value))]


@register("reshape")
def reshape(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    shape = _ints(args["shape"])
    # A 0 copies the matching dim of x counted from the right (iOS17 rule; for equal ranks it
    # is the iOS15 position-wise rule), or is 1 when x has no such dim.
    offset = x.ndim - len(shape)
    shape = [
        (x.shape[i + offset] if 0 <= i + offset < x.ndim else 1) if d == 0 else d
        for i, d in enumerate(shape)
    ]
    return x.reshape(shape)


@register("reshape_like")
def reshape_like(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    refs = args["ref_tensors"]
    begins, ends = _ints(args["begins"]), _ints(args["ends"])
    end_masks = [bool(v) for v in np.ravel(args["end_masks"])]
    shape: list[int] = []
    for ref, b, e, m in zip(refs, begins, ends, end_masks):
        dims = np.asarray(ref).shape
        shape.extend(dims[b:] if m else dims[b:e])
    return x.reshape(shape)


@register("transpose")
def transpose(args: OpArgs) -> np.ndarray:
    return np.transpose(args["x"], _ints(args["perm"]))


@register("concat")
def concat(args: OpArgs) -> np.ndarray:
    values = [np.asarray(v) for v in args["values"]]
    axis = int(args["axis"])
    if bool(args.get("interleave", False)):
        # Interleave equal-sized inputs along axis: a0, b0, a1, b1, ...
        stacked = np.stack(values, axis=axis % values[0].ndim + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate([np.atleast_1d(v) for v in values], axis=axis)


@register("stack")
def stack(args: OpArgs) -> np.ndarray:
    return np.stack([np.asarray(v) for v in args["values"]], axis=int(args["axis"]))


@register("split")
def split(args: OpArgs) -> tuple[np.ndarray, ...]:
    x = np.asarray(args["x"])
    axis = int(args["axis"])
    sizes = args.get("split_sizes")
    if sizes is not None:
        points = np.cumsum(_ints(sizes))[:-1]
        return tuple(np.split(x, points, axis=axis))
    return tuple(np.split(x, int(args["num_splits"]), axis=axis))


@register("squeeze")
def squeeze(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    axes = args.get("axes")
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(_ints(axes)))


@register("expand_dims")
def expand_dims(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    out_rank = x.ndim + len(_ints(args["axes"]))
    axes = sorted(a % out_rank for a in _ints(args["axes"]))
    return np.expand_dims(x, tuple(axes)) if axes else x


@register("flatten2d")
def flatten2d(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    axis = int(args.get("axis", 1)) % (x.ndim + 1) if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@register("slice_by_index")
def slice_by_index(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    rank = x.ndim
    begin, end = _ints(args["begin"]), _ints(args["end"])
    stride = _ints(args.get("stride", [1] * rank))
    begin_mask = [bool(v) for v in np.ravel(args.get("begin_mask", [False] * rank))]
    end_mask = [bool(v) for v in np.ravel(args.get("end_mask", [False] * rank))]
    squeeze_mask = [bool(v) for v in np.ravel(args.get("squeeze_mask", [False] * rank))]
    slices = []
    for i in range(rank):
        if squeeze_mask[i]:
            slices.append(slice(begin[i], begin[i] + 1 if begin[i] != -1 else None, 1))
            continue
        b = None if begin_mask[i] else begin[i]
        e = None if end_mask[i] else end[i]
        slices.append(slice(b, e, stride[i]))
    out = x[tuple(slices)]
    squeeze_axes = tuple(i for i, m in enumerate(squeeze_mask) if m)
    return np.squeeze(out, axis=squeeze_axes) if squeeze_axes else out


@register("slice_by_size")
def slice_by_size(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    begin, size = _ints(args["begin"]), _ints(args["size"])
    slices = []
    for b, s, dim in zip(begin, size, x.shape):
        b = b % dim if b < 0 else b
        slices.append(slice(b, None if s == -1 else b + s))
    return x[tuple(slices)]


@register("tile")
def tile(args: OpArgs) -> np.ndarray:
    return np.tile(args["x"], _ints(args["reps"]))


@register("pad")
def pad(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    p = _ints(args["pad"])
    n = len(p) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    mode = str(args.get("mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, constant_values=np.asarray(args.get("constant_val", 0)).astype(x.dtype))
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    raise ValueError(f"unknown pad mode {mode!r}")


@register("fill")
def fill(args: OpArgs) -> np.ndarray:
    value = np.asarray(args.get("value", 0.0))
    return np.full(_ints(args["shape"]), value, dtype=value.dtype)


@register("fill_like")
def fill_like(args: OpArgs) -> np.ndarray:
    value = np.asarray(args.get("value", 0.0))
    return np.full(np.asarray(args["ref_tensor"]).shape, value, dtype=value.dtype)


@register("shape")
def shape(args: OpArgs) -> np.ndarray:
    return np.array(np.asarray(args["x"]).shape, dtype=np.int32)


@register("range_1d")
def range_1d(args: OpArgs) -> np.ndarray:
    start, end, step = (np.asarray(args[k]).item() for k in ("start", "end", "step"))
    return np.arange(start, end, step)


@register("reverse")
def reverse(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    axes = args.get("axes")
    return np.flip(x, axis=None if axes is None else tuple(_ints(axes)))


@register("cumsum")
def cumsum(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    axis = int(args.get("axis", 0))
    reverse_ = bool(args.get("reverse", False))
    if reverse_:
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis, dtype=x.dtype)
    if bool(args.get("exclusive", False)):
        out = out - x
    return np.flip(out, axis) if reverse_ else out


@register("band_part")
def band_part(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    lower, upper = int(args.get("lower", -1)), int(args.get("upper", -1))
    rows, cols = x.shape[-2:]
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return np.where(keep, x, np.zeros((), x.dtype))


@register("one_hot")
def one_hot(args: OpArgs) -> np.ndarray:
    indices = np.asarray(args["indices"])
    depth = int(args["one_hot_vector_size"])
    axis = int(args.get("axis", -1))
    on, off = np.asarray(args.get("on_value", 1)), np.asarray(args.get("off_value", 0))
    hot = indices[..., None] == np.arange(depth)
    out = np.where(hot, on, off)
    return np.moveaxis(out, -1, axis % (indices.ndim + 1))


@register("non_zero")
def non_zero(args: OpArgs) -> np.ndarray:
    return np.argwhere(np.asarray(args["x"])).astype(np.int32)


def _depth_to_space(x: np.ndarray, block: int) -> np.ndarray:
    n, c, h, w = x.shape
    x = x.reshape(n, block, block, c // block**2, h, w)
    return x.transpose(0, 3, 4, 1, 5, 2).reshape(n, c // block**2, h * block, w * block)


@register("depth_to_space")
def depth_to_space(args: OpArgs) -> np.ndarray:
    return _depth_to_space(np.asarray(args["x"]), int(args["block_size"]))


@register("space_to_depth")
def space_to_depth(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    b = int(args["block_size"])
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // b, b, w // b, b)
    return x.transpose(0, 3, 5, 1, 2, 4).reshape(n, c * b * b, h // b, w // b)


@register("pixel_shuffle")
def pixel_shuffle(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    f = int(args["upscale_factor"])
    n, c, h, w = x.shape
    x = x.reshape(n, c // f**2, f, f, h, w)
    return x.transpose(0, 1, 4, 2, 5, 3).reshape(n, c // f**2, h * f, w * f)


@register("pixel_unshuffle")
def pixel_unshuffle(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    f = int(args["downscale_factor"])
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // f, f, w // f, f)
    return x.transpose(0, 1, 3, 5, 2, 4).reshape(n, c * f * f, h // f, w // f)


@register("upsample_nearest_neighbor")
def upsample_nearest_neighbor(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    sh = float(args.get("scale_factor_height", 1))
    sw = float(args.get("scale_factor_width", 1))
    h, w = x.shape[-2:]
    rows = np.minimum(np.floor(np.arange(int(np.floor(h * sh))) / sh).astype(int), h - 1)
    cols = np.minimum(np.floor(np.arange(int(np.floor(w * sw))) / sw).astype(int), w - 1)
    return x[..., rows[:, None], cols[None, :]]


@register("crop")
def crop(args: OpArgs) -> np.ndarray:
    x = np.asarray(args["x"])
    top, bottom = _ints(args["crop_height"])
    left, right = _ints(args["crop_width"])
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]
