"""Mapping between MIL builtin types and NumPy dtypes."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..private_api import private

types = private("coremltools.converters.mil.mil:types")

# Names the ``cast`` op and friends accept for their ``dtype`` argument.
_NAME_TO_NUMPY: dict[str, np.dtype] = {
    "fp16": np.dtype(np.float16),
    "fp32": np.dtype(np.float32),
    "fp64": np.dtype(np.float64),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "int16": np.dtype(np.int16),
    "uint16": np.dtype(np.uint16),
    "int32": np.dtype(np.int32),
    "uint32": np.dtype(np.uint32),
    "int64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}


def numpy_dtype_from_name(name: str) -> np.dtype:
    """NumPy dtype for a MIL dtype name such as ``"fp16"`` or ``"int32"``."""
    try:
        return _NAME_TO_NUMPY[name]
    except KeyError:
        raise ValueError(f"unknown MIL dtype name {name!r}") from None


def numpy_dtype_of_builtin(builtin: Any) -> np.dtype | None:
    """NumPy dtype of a MIL builtin scalar type, or None for non-numeric types (str, list...)."""
    if builtin is types.str:
        return None
    try:
        return np.dtype(types.nptype_from_builtin(builtin))
    except Exception:  # coremltools raises several types for unmappable builtins
        return None


def numpy_dtype_of_var(var: Any) -> np.dtype | None:
    """NumPy dtype of a MIL Var holding a tensor or a scalar; None for anything else."""
    sym_type = var.sym_type
    if types.is_tensor(sym_type):
        return numpy_dtype_of_builtin(sym_type.get_primitive())
    if types.is_scalar(sym_type):
        return numpy_dtype_of_builtin(sym_type)
    return None


def compute_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype heavy ops (conv, matmul, reductions, transcendental) compute in.

    fp16 inputs are computed in fp32 and the result is rounded back to fp16 by the caller:
    this models an fp16 device kernel that accumulates in fp32 (what Core ML's GPU/ANE
    kernels do), rather than NumPy's fp16 accumulation which loses far more precision.
    """
    for a in arrays:
        if np.asarray(a).dtype == np.float16:
            return np.dtype(np.float32)
    return np.result_type(*arrays)
