"""The switch-once constant table: where each alpha-dependent constant's raw bytes lie in
``alpha_predict.onnx``, checked (``check_constant_offsets``, also used by the manifest's
validator) and patched (``patch_constants``). Byte offsets into an ONNX file are ONNX's fact,
so they live here; this module needs NumPy only (no onnx, no onnxruntime).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lcs_train.errors import LcsError

#: dtypes a switch-once constant may have, and their byte sizes.
CONSTANT_DTYPES = {"float32": 4, "float16": 2, "int64": 8, "int32": 4, "uint8": 1, "int8": 1}


def check_constant_offsets(offsets: Any, file_bytes: int, what: str) -> list[dict[str, Any]]:
    """Validate a switch-once constant table against the predict file's size.

    Each entry: ``name`` (str), ``offset`` and ``bytes`` (ints), ``dtype`` (see
    ``CONSTANT_DTYPES``), ``shape`` (list of ints) with bytes = product(shape) * itemsize;
    every range inside the file, no two ranges overlapping. Returns the table.
    """
    def bad(problem: str) -> LcsError:
        return LcsError(f"{what}: constant_offsets {problem}", "re-export the bundle with this version of lcs-export")

    if not isinstance(offsets, list) or not offsets:
        raise bad("is missing or empty")
    ranges, names = [], set()
    for index, item in enumerate(offsets):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise bad(f"entry {index} has no name")
        fields = [item.get(key) for key in ("offset", "bytes")]
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in fields):
            raise bad(f"entry {item['name']!r} has no valid offset and byte count")
        offset, size = fields
        shape = item.get("shape")
        if item.get("dtype") not in CONSTANT_DTYPES or not isinstance(shape, list) or any(
                not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
            raise bad(f"entry {item['name']!r} has no valid dtype and shape")
        if math.prod(shape) * CONSTANT_DTYPES[item["dtype"]] != size:
            raise bad(f"entry {item['name']!r} has {size} bytes, but its shape and dtype make "
                      f"{math.prod(shape) * CONSTANT_DTYPES[item['dtype']]}")
        if offset + size > file_bytes:
            raise bad(f"entry {item['name']!r} ends at byte {offset + size}, past the file's {file_bytes}")
        if item["name"] in names:
            raise bad(f"names {item['name']!r} twice")
        names.add(item["name"])
        ranges.append((offset, offset + size, item["name"]))
    ranges.sort()
    for (_, end, first), (start, _, second) in zip(ranges, ranges[1:]):
        if start < end:
            raise bad(f"entries {first!r} and {second!r} overlap")
    return offsets


def patch_constants(model: bytes, offsets: dict[str, dict[str, Any]], values: dict[str, np.ndarray]) -> bytes:
    """The predict graph's bytes with each named constant's raw data replaced by ``values``."""
    patched = bytearray(model)
    for name, value in values.items():
        entry = offsets[name]
        raw = np.ascontiguousarray(value, dtype=np.dtype(entry["dtype"]).newbyteorder("<")).tobytes()
        if len(raw) != entry["bytes"] or entry["offset"] + len(raw) > len(model):
            raise LcsError(f"constant {name} has {len(raw)} bytes, the predict graph expects {entry['bytes']}",
                           "use the weights and predict graphs of the same export")
        patched[entry["offset"]:entry["offset"] + len(raw)] = raw
    return bytes(patched)


