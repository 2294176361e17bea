"""From a torch module to ``.pte`` bytes: ``torch.export``, edge dialect, XNNPACK, ExecuTorch.

XNNPACK takes the subgraphs it supports (convolutions and linears with constant weights,
elementwise ops, pooling); what it leaves runs on ExecuTorch's portable kernels, which every
ExecuTorch runtime links. ``LoweredProgram.portable_ops`` lists what was left, so a manifest
says whether the whole graph was delegated.

The alpha-input graph finds each layer's top-k threshold with ``aten.sort``, which the
portable kernels lack (loading such a program fails with "Missing operator aten::sort.values").
The only thing that graph reads from the sort is the sorted values, which ``aten.topk`` with
k = the whole length and ``sorted=True`` also returns, and the portable kernels have
``topk``: ``SORT_AS_TOPK`` rewrites every sort that way before lowering.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

#: Call targets in a lowered graph that are bookkeeping, not kernels: delegate calls, the
#: tuple indexing of their results, memory planning and views that own no compute.
_BOOKKEEPING = ("executorch_call_delegate", "getitem", "alloc", "view", "sym_size")


def _sort_as_topk(values: Tensor, dim: int = -1, descending: bool = False) -> tuple[Tensor, Tensor]:
    return torch.ops.aten.topk.default(values, values.shape[dim], dim, descending, True)


def _stable_sort_as_topk(values: Tensor, *, stable: bool | None = None, dim: int = -1,
                         descending: bool = False) -> tuple[Tensor, Tensor]:
    # Stability only orders the indices of equal values; the values are the same.
    return _sort_as_topk(values, dim, descending)


#: Decompositions applied before lowering: every sort as a full-length sorted topk.
SORT_AS_TOPK: dict[Any, Any] = {
    torch.ops.aten.sort.default: _sort_as_topk,
    torch.ops.aten.sort.stable: _stable_sort_as_topk,
}


@dataclass
class LoweredProgram:
    """A serialised ``.pte`` and what lowering left outside the delegate, per method."""

    data: bytes
    portable_ops: dict[str, list[str]] = field(default_factory=dict)
    delegated_calls: dict[str, int] = field(default_factory=dict)

    @property
    def fully_delegated(self) -> bool:
        """True when every method runs entirely inside the delegate."""
        return not any(self.portable_ops.values())


def export_program(module: nn.Module, example: tuple[Tensor, ...], max_batch: int) -> torch.export.ExportedProgram:
    """``module`` captured with a dynamic batch (1..``max_batch``) on its first input, every
    sort rewritten as a topk (``SORT_AS_TOPK``)."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    shapes = ({0: batch}, *(None for _ in example[1:]))
    with torch.no_grad(), warnings.catch_warnings():
        # The alpha-input module sets each layer's alpha during the trace: expected.
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        program = torch.export.export(module, example, dynamic_shapes=shapes)
    if not any(node.op == "call_function" and node.target in SORT_AS_TOPK for node in program.graph.nodes):
        # Nothing to rewrite (a level): lowering decomposes the program itself, and doing it
        # here as well only re-traced it once more (6 % of a level's export).
        return program
    return program.run_decompositions(SORT_AS_TOPK)


def fold_constants(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with every computation on constants alone done now, at export: a
    quantized level's dequantization of its weight codes becomes float32 weights, which
    XNNPACK takes (it takes no convolution whose weights are computed in the graph)."""
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    return constant_prop_pass(program)


def lower(programs: Mapping[str, torch.export.ExportedProgram], delegate: bool = True) -> LoweredProgram:
    """One ``.pte`` holding every program of ``programs`` as a method of that name,
    XNNPACK-delegated where it can be (``delegate``), else on the portable kernels alone."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(dict(programs), partitioner=[XnnpackPartitioner()] if delegate else None)
    shape_passes = {name: declared_ranges(program) for name, program in programs.items()}
    executorch_program = edge.to_executorch(ExecutorchBackendConfig(sym_shape_eval_pass=shape_passes))
    portable, delegated = {}, {}
    for name in programs:
        calls = [node for node in executorch_program.exported_program(name).graph.nodes
                 if node.op == "call_function"]
        portable[name] = sorted({_op_name(node.target) for node in calls
                                 if not any(word in _op_name(node.target) for word in _BOOKKEEPING)})
        delegated[name] = sum("executorch_call_delegate" in _op_name(node.target) for node in calls)
    return LoweredProgram(executorch_program.buffer, portable, delegated)


def declared_ranges(program: torch.export.ExportedProgram) -> Any:
    """The memory-planning shape pass of ExecuTorch, run after every symbolic size of the
    graph's inputs is given back the range ``program`` (as exported, before lowering)
    declares in its ``range_constraints``.

    Re-tracing a convolution during lowering asks torch's fake kernel which CPU convolution
    backend it would pick, and that question narrows the batch symbol's range in the shared
    shape environment (to [2, 15] here), and in the lowered program's own range_constraints
    when the convolution stays outside the delegate, although nothing declared it. Memory planning reads
    the upper bound from there, so without this a program exported for batches up to 32
    refuses 16 ("Attempted to resize a bounded tensor"). The ranges are restored as the
    last step before planning, after every pass that re-traces.
    """
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    declared = {str(symbol): bounds for symbol, bounds in program.range_constraints.items()}

    class DeclaredRangesSymShapeEvalPass(ConstraintBasedSymShapeEvalPass):
        def call(self, graph_module: torch.fx.GraphModule) -> Any:
            for node in graph_module.graph.nodes:
                value = node.meta.get("val")
                if node.op == "placeholder" and isinstance(value, Tensor):
                    for size in value.shape:
                        if isinstance(size, torch.SymInt) and str(size.node.expr) in declared:
                            size.node.shape_env.var_to_range[size.node.expr] = declared[str(size.node.expr)]
            return super().call(graph_module)

    return DeclaredRangesSymShapeEvalPass()


def _op_name(target: Any) -> str:
    """An operator as the runtime's registry spells it (``aten::convolution.out``), from its
    schema; a Python callable (memory planning, views) by its function name."""
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return f"{schema.name}.{schema.overload_name}" if schema.overload_name else schema.name
    return getattr(target, "__name__", str(target))
