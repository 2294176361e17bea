"""Compact storage of pruned weights in an ONNX file: a bit mask plus the nonzero values.

An unstructured level keeps most of its weights at zero, but an ONNX initializer stores every
element. Here the float32 weight initializers with enough zeros are replaced, all together,
by two initializers, ``compact_mask`` (one bit per weight of every replaced tensor in turn,
UINT8, most significant bit first as ``numpy.packbits`` writes it) and ``compact_values``
(their nonzero weights in the same order, float32), and one subgraph rebuilds each dense
tensor under its own name from them alone::

    table  = Cast<int32>(BitwiseAnd(BitShift(Unsqueeze(Cast<uint8>(Range(0, 256)), 1),
                                             [7, 6, ..., 0]), 1))          # [256, 8]: a byte's bits
    bits   = Gather(table, Cast<int32>(mask))                              # [bytes, 8] -> 0 / 1
    keep   = Slice(Reshape(bits, [-1]), 0, total)                          # the padding bits cut off
    index  = CumSum(keep) * keep              # k at the k-th nonzero, 0 at a zero
    dense  = Gather(Concat([0.0], values), index)
    w1, w2, ... = Split(dense, sizes);  weight_i = Reshape(w_i, shape_i)

Every input of that subgraph is an initializer, so ONNX Runtime's constant folding (on from
``ORT_ENABLE_BASIC``; sessions default to ``ORT_ENABLE_ALL``) evaluates it once when a session
is created and the inference graph sees ordinary dense constants: no per-call cost, and the
runtime pre-packs them as any other weight. Only copies (Concat, Gather, Split, Reshape) touch
the values, so each rebuilt tensor equals the original exactly, except that a ``-0.0`` comes back
as ``+0.0`` (see ``pack_mask``). One subgraph for all tensors keeps the node count (and the
file bytes the nodes take) independent of the number of layers; the bits come from a
256-row table looked up per mask byte because ONNX Runtime's broadcasting ``BitShift`` over
every byte took most of the decoding time.

A tensor is stored this way only when its mask bits and values take fewer bytes than the
dense tensor, less a margin for its Split output and Reshape (a dense layer, or a level at
alpha 0, is left alone), and only when all of them together, with the subgraph, take fewer
bytes than the tensors they replace.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Bytes a replaced tensor costs in the file besides its mask bits and values: its Reshape
#: node and shape constant took 86 + 56 on average in the demo's 90 % level file. An estimate
#: for picking tensors; ``store_compact_weights`` then counts the whole subgraph exactly.
PER_TENSOR_BYTES = 140
#: Op types that only the decoding subgraph puts in a level file (none is left once folded).
DECODE_OP_TYPES = frozenset({"BitShift", "BitwiseAnd", "CumSum", "Range"})
#: Prefix of every node, value and initializer name the decoding subgraph adds.
PREFIX = "compact_"


def pack_mask(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, nonzero values)`` of a float32 tensor in C order; ``keep`` is boolean.

    A negative zero counts as a zero and comes back as ``+0.0``: materialised levels hold
    pruned negative weights as ``-0.0`` (weight times mask), about half of every pruned
    tensor, and storing them as values would keep half the zeros.
    """
    flat = np.ascontiguousarray(weight, dtype=np.float32).reshape(-1)
    keep = flat != 0
    return keep, flat[keep]


def worth_compacting(weight: np.ndarray) -> bool:
    """Whether mask bits plus nonzero values (plus ``PER_TENSOR_BYTES``) are smaller than ``weight``."""
    nonzeros = int(np.count_nonzero(weight))
    return weight.size / 8 + 4 * nonzeros + PER_TENSOR_BYTES < weight.nbytes


def _constant(value: np.ndarray, name: str) -> TensorProto:
    return numpy_helper.from_array(value, PREFIX + name)


def _node(op: str, inputs: list[str], outputs: list[str], **attributes: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, name=PREFIX + outputs[0].removeprefix(PREFIX), **attributes)


def decode_graph(names: list[str], shapes: list[tuple[int, ...]], total: int
                 ) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Nodes rebuilding tensors ``names`` (of ``shapes``, ``total`` elements together) from
    ``compact_mask`` and ``compact_values``, and the constants they need besides those two."""
    p = PREFIX
    constants = [
        _constant(np.array(0, dtype=np.int32), "range_start"),
        _constant(np.array(256, dtype=np.int32), "range_end"),
        _constant(np.array(1, dtype=np.int32), "range_step"),
        _constant(np.array([1], dtype=np.int64), "column_axis"),
        _constant(np.arange(7, -1, -1, dtype=np.uint8), "bit_shifts"),
        _constant(np.array(1, dtype=np.uint8), "bit_one"),
        _constant(np.array([-1], dtype=np.int64), "flat_shape"),
        _constant(np.array([0], dtype=np.int64), "start"),
        _constant(np.array([total], dtype=np.int64), "total"),
        _constant(np.array(0, dtype=np.int32), "axis"),
        _constant(np.zeros(1, dtype=np.float32), "zero"),
        _constant(np.array([int(np.prod(shape)) for shape in shapes], dtype=np.int64), "sizes"),
    ]
    nodes = [
        _node("Range", [p + "range_start", p + "range_end", p + "range_step"], [p + "byte_values"]),
        _node("Cast", [p + "byte_values"], [p + "byte_codes"], to=TensorProto.UINT8),
        _node("Unsqueeze", [p + "byte_codes", p + "column_axis"], [p + "column"]),
        _node("BitShift", [p + "column", p + "bit_shifts"], [p + "shifted"], direction="RIGHT"),
        _node("BitwiseAnd", [p + "shifted", p + "bit_one"], [p + "table_bits"]),
        _node("Cast", [p + "table_bits"], [p + "table_rows"], to=TensorProto.INT32),
        _node("Cast", [p + "mask"], [p + "mask_index"], to=TensorProto.INT32),
        _node("Gather", [p + "table_rows", p + "mask_index"], [p + "bits"], axis=0),
        _node("Reshape", [p + "bits", p + "flat_shape"], [p + "flat_bits"]),
        _node("Slice", [p + "flat_bits", p + "start", p + "total"], [p + "keep"]),
        _node("CumSum", [p + "keep", p + "axis"], [p + "rank"]),
        _node("Mul", [p + "rank", p + "keep"], [p + "index"]),
        _node("Concat", [p + "zero", p + "values"], [p + "table"], axis=0),
        _node("Gather", [p + "table", p + "index"], [p + "dense"], axis=0),
        _node("Split", [p + "dense", p + "sizes"], [f"{p}part_{i}" for i in range(len(names))], axis=0),
    ]
    for i, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        constants.append(_constant(np.array(shape, dtype=np.int64), f"shape_{i}"))
        nodes.append(helper.make_node("Reshape", [f"{p}part_{i}", f"{p}shape_{i}"], [name], name=f"{p}reshape_{i}"))
    return nodes, constants


def store_compact_weights(model: onnx.ModelProto) -> list[str]:
    """Replace every float32 initializer of rank 2 or more that ``worth_compacting`` picks
    (none when, with the decoding subgraph, they would not take fewer bytes).

    Returns the names replaced, in file order. The graph computes the same tensors (see the
    module's docstring); the decoding nodes go first, so the graph stays topologically sorted.
    """
    graph = model.graph
    if any(tensor.name.startswith(PREFIX) for tensor in graph.initializer):
        raise RuntimeError("this model already holds compact weights")
    chosen = [(tensor, numpy_helper.to_array(tensor)) for tensor in graph.initializer
              if tensor.data_type == TensorProto.FLOAT and len(tensor.dims) >= 2]
    chosen = [(tensor, weight) for tensor, weight in chosen if worth_compacting(weight)]
    if not chosen:
        return []
    packed = [pack_mask(weight) for _, weight in chosen]
    keep = np.concatenate([k for k, _ in packed])
    values = np.concatenate([v for _, v in packed])
    names = [tensor.name for tensor, _ in chosen]
    nodes, constants = decode_graph(names, [weight.shape for _, weight in chosen], keep.size)
    mask = np.packbits(keep)
    decoding = sum(proto.ByteSize() for proto in [*nodes, *constants])
    if mask.nbytes + values.nbytes + decoding >= sum(weight.nbytes for _, weight in chosen):
        return []  # a few small tensors do not pay for the subgraph
    for tensor, _ in chosen:
        graph.initializer.remove(tensor)
    graph.initializer.extend([_constant(mask, "mask"), _constant(values, "values"), *constants])
    for node in reversed(nodes):
        graph.node.insert(0, node)
    return names
