"""``const`` and the ``constexpr_*`` ops that decompress stored weights.

Implemented from the MIL op specifications (iOS16 and iOS18 variants), not by calling
coremltools' own decompression helpers, so the tests can cross-check the two.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import numpy_dtype_from_name
from ..registry import OpArgs, register


@register("const")
def const(args: OpArgs):
    return args.op.outputs[0].val


def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unpack ``count`` unsigned ``nbits``-bit values packed LSB-first into bytes (iOS16 format)."""
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8).ravel(), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.uint16)
    return (bits << np.arange(nbits, dtype=np.uint16)).sum(axis=1).astype(np.uint8)


def _broadcast_along_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """Reshape a per-axis vector so it broadcasts against a rank-``rank`` tensor."""
    param = np.asarray(param)
    if param.ndim == 0:
        return param
    shape = [1] * rank
    shape[axis] = param.shape[0]
    return param.reshape(shape)


@register("constexpr_affine_dequantize")
def constexpr_affine_dequantize(args: OpArgs) -> np.ndarray:
    data = np.asarray(args["quantized_data"])
    axis = int(args["axis"]) % data.ndim
    scale = np.asarray(args["scale"])
    zero_point = _broadcast_along_axis(args["zero_point"], data.ndim, axis)
    # Subtract in a wide type: uint8 data minus a zero point must not wrap around.
    shifted = data.astype(np.float32) - zero_point.astype(np.float32)
    return (_broadcast_along_axis(scale, data.ndim, axis).astype(np.float32) * shifted).astype(scale.dtype)


@register("constexpr_cast")
def constexpr_cast(args: OpArgs) -> np.ndarray:
    return np.asarray(args["source_val"]).astype(numpy_dtype_from_name(str(args["output_dtype"])))


def _repeat_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Expand a per-block parameter to ``shape`` (block size = shape[d] // param.shape[d])."""
    for axis, (full, blocks) in enumerate(zip(shape, param.shape)):
        if full != blocks:
            param = np.repeat(param, full // blocks, axis=axis)
    return param


def _shift_scale(data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    scale = np.asarray(scale)
    values = np.asarray(data).astype(np.float32)
    if offset is not None:
        values = values - _repeat_blocks(np.asarray(offset).astype(np.float32), values.shape)
    return (values * _repeat_blocks(scale.astype(np.float32), values.shape)).astype(scale.dtype)


@register("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(args: OpArgs) -> np.ndarray:
    return _shift_scale(args["data"], args["scale"], args.get("offset"))


def _lut_lookup(indices: np.ndarray, lut: np.ndarray, vector_axis: int | None) -> np.ndarray:
    """iOS18 ``constexpr_lut_to_dense`` on already-unpacked indices.

    ``lut`` has shape [g_0..g_{K-1}, palettes, vector_size]; dimension d of ``indices`` is
    split into g_d equal blocks, each with its own palette.
    """
    indices = np.asarray(indices).astype(np.intp)
    rank = indices.ndim
    group_coords = []
    for axis, (size, groups) in enumerate(zip(indices.shape, lut.shape[:rank])):
        shape = [1] * rank
        shape[axis] = size
        group_coords.append((np.arange(size) // (size // groups)).reshape(shape))
    values = lut[(*group_coords, indices)]  # shape: indices.shape + [vector_size]
    vector_size = lut.shape[-1]
    if vector_size == 1:
        return values[..., 0]
    axis = int(vector_axis) % rank
    # Each index expands into vector_size consecutive entries along vector_axis.
    values = np.moveaxis(values, -1, axis + 1)
    out_shape = list(indices.shape)
    out_shape[axis] *= vector_size
    return values.reshape(out_shape)


@register("constexpr_lut_to_dense")
def constexpr_lut_to_dense(args: OpArgs) -> np.ndarray:
    lut = np.asarray(args["lut"])
    if "shape" in args:
        # iOS16: flat LUT of 2**nbits entries, indices packed into a byte vector.
        shape = tuple(int(d) for d in np.asarray(args["shape"]))
        nbits = int(np.log2(lut.shape[0]))
        count = int(np.prod(shape))
        return lut[unpack_bits(args["indices"], nbits, count)].reshape(shape)
    vector_axis = args.get("vector_axis")
    return _lut_lookup(args["indices"], lut, None if vector_axis is None else int(vector_axis))


def _scatter_nonzero(nonzero_data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    nonzero_data = np.asarray(nonzero_data)
    dense = np.zeros(mask.shape, dtype=nonzero_data.dtype)
    dense[mask != 0] = nonzero_data  # row-major order, as the spec stores nonzeros
    return dense


@register("constexpr_sparse_to_dense")
def constexpr_sparse_to_dense(args: OpArgs) -> np.ndarray:
    mask = np.asarray(args["mask"])
    if "shape" in args:
        # iOS16: the mask is a packed bit vector plus an explicit shape.
        shape = tuple(int(d) for d in np.asarray(args["shape"]))
        mask = unpack_bits(mask, 1, int(np.prod(shape))).reshape(shape)
    return _scatter_nonzero(args["nonzero_data"], mask)


@register("constexpr_lut_to_sparse")
def constexpr_lut_to_sparse(args: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(args["indices_mask"])
    lut = np.asarray(args["lut"])
    vector_axis = args.get("vector_axis")
    indices = _scatter_nonzero(args["indices_nonzero_data"], mask)
    dense = _lut_lookup(indices, lut, None if vector_axis is None else int(vector_axis))
    if lut.shape[-1] > 1:
        mask = np.repeat(mask, lut.shape[-1], axis=int(vector_axis))
    return mask, dense[mask != 0]


@register("constexpr_sparse_blockwise_shift_scale")
def constexpr_sparse_blockwise_shift_scale(args: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(args["data_mask"])
    dense = _shift_scale(_scatter_nonzero(args["nonzero_data"], mask), args["scale"], args.get("offset"))
    return mask, dense[mask != 0]
