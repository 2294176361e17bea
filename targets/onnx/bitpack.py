"""5- to 7-bit weight codes packed back to back in an ONNX file, unpacked once at load.

ONNX has 8-bit and 4-bit integer types but none of 5, 6 or 7 bits, so such codes would sit
one per byte. Here the UINT8 code initializers of a level are replaced, all together, by one
``packed_codes`` initializer holding every code in ``bits`` bits (most significant bit first,
tensor after tensor, plus one padding byte), and one subgraph rebuilds each UINT8 code tensor
under its own name from it alone::

    i     = Range(0, total, 1);  first = i * bits
    byte  = first / 8;  shift = 16 - bits - (first - 8 * byte)
    word  = (bytes[byte] << 8) | bytes[byte + 1]                     # UINT32
    code  = Cast<uint8>((word >> shift) & (2 ** bits - 1))
    c1, c2, ... = Split(code, sizes);  codes_i = Reshape(c_i, shape_i)

A code spans at most two bytes (bits <= 8), hence the 16-bit word. Every input is an
initializer, so ONNX Runtime folds the subgraph once at session creation (integer ops only:
the codes come back exactly) and the ``DequantizeLinear`` nodes read the same UINT8 codes as
before.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Prefix of every node, value and initializer name the unpacking subgraph adds.
PREFIX = "packed_codes_"
#: Op types that only the unpacking subgraph puts in a level file (none is left once folded).
UNPACK_OP_TYPES = frozenset({"BitShift", "BitwiseOr", "BitwiseAnd", "Range"})
#: Bit widths stored packed: 8 fills a byte and 4 and below have ONNX's UINT4.
PACKED_BITS = range(5, 8)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """``codes`` (each below ``2 ** bits``) in ``bits`` bits each, MSB first, plus one zero byte."""
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if flat.size and int(flat.max()) >= 1 << bits:
        raise ValueError(f"a code does not fit in {bits} bits")
    columns = (flat[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint8)) & 1
    return np.concatenate([np.packbits(columns.reshape(-1)), np.zeros(1, np.uint8)])


def _constant(value: np.ndarray, name: str) -> TensorProto:
    return numpy_helper.from_array(value, PREFIX + name)


def _node(op: str, inputs: list[str], output: str, **attributes: object) -> onnx.NodeProto:
    return helper.make_node(op, [PREFIX + name for name in inputs], [PREFIX + output], name=PREFIX + output,
                            **attributes)


def unpack_graph(names: list[str], shapes: list[tuple[int, ...]], bits: int
                 ) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Nodes rebuilding UINT8 tensors ``names`` (of ``shapes``) from ``packed_codes_bytes``,
    and the constants they need besides it."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    constants = [
        _constant(np.array(0, np.int64), "zero"), _constant(np.array(sum(sizes), np.int64), "total"),
        _constant(np.array(1, np.int64), "one"), _constant(np.array(bits, np.int64), "bits"),
        _constant(np.array(8, np.int64), "eight"), _constant(np.array(16 - bits, np.int64), "top"),
        _constant(np.array(8, np.uint32), "byte_shift"), _constant(np.array((1 << bits) - 1, np.uint32), "low_bits"),
        _constant(np.array(sizes, np.int64), "sizes"),
    ]
    nodes = [
        _node("Range", ["zero", "total", "one"], "index"),
        _node("Mul", ["index", "bits"], "first_bit"),
        _node("Div", ["first_bit", "eight"], "byte"),  # non-negative: Div truncates = floors
        _node("Add", ["byte", "one"], "next_byte"),
        _node("Mul", ["byte", "eight"], "byte_bit"),
        _node("Sub", ["first_bit", "byte_bit"], "offset"),
        _node("Sub", ["top", "offset"], "shift_signed"),
        _node("Cast", ["shift_signed"], "shift", to=TensorProto.UINT32),
        _node("Cast", ["bytes"], "wide", to=TensorProto.UINT32),
        _node("Gather", ["wide", "byte"], "high", axis=0),
        _node("Gather", ["wide", "next_byte"], "low", axis=0),
        _node("BitShift", ["high", "byte_shift"], "high_shifted", direction="LEFT"),
        _node("BitwiseOr", ["high_shifted", "low"], "word"),
        _node("BitShift", ["word", "shift"], "aligned", direction="RIGHT"),
        _node("BitwiseAnd", ["aligned", "low_bits"], "code_wide"),
        _node("Cast", ["code_wide"], "codes", to=TensorProto.UINT8),
        helper.make_node("Split", [PREFIX + "codes", PREFIX + "sizes"],
                         [f"{PREFIX}part_{i}" for i in range(len(names))], axis=0, name=PREFIX + "split"),
    ]
    for i, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        constants.append(_constant(np.array(shape, np.int64), f"shape_{i}"))
        nodes.append(helper.make_node("Reshape", [f"{PREFIX}part_{i}", f"{PREFIX}shape_{i}"], [name],
                                      name=f"{PREFIX}reshape_{i}"))
    return nodes, constants


def store_packed_codes(model: onnx.ModelProto, names: list[str], bits: int) -> None:
    """Replace the UINT8 initializers ``names`` (codes below ``2 ** bits``) by one packed stream.

    The decoding nodes go first, so the graph stays topologically sorted.
    """
    if bits not in PACKED_BITS or not names:
        raise ValueError(f"codes are packed at {min(PACKED_BITS)} to {max(PACKED_BITS)} bits, not {bits}")
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    tensors = [initializers[name] for name in names]
    if any(tensor.data_type != TensorProto.UINT8 for tensor in tensors):
        raise ValueError("only UINT8 code initializers are packed")
    codes = [numpy_helper.to_array(tensor) for tensor in tensors]
    nodes, constants = unpack_graph(names, [c.shape for c in codes], bits)
    for tensor in tensors:
        graph.initializer.remove(tensor)
    stream = pack_codes(np.concatenate([c.reshape(-1) for c in codes]), bits)
    graph.initializer.extend([_constant(stream, "bytes"), *constants])
    for node in reversed(nodes):
        graph.node.insert(0, node)
