"""ONNX files: export a module with the dynamo exporter, strip, check and save it inline.

Files are exported with ``torch.onnx.export(dynamo=True)`` with a dynamic batch dimension and
saved with every weight inline (no ``.onnx.data`` side file: a browser session is handed one
file). Every ``details["opset"]`` is the opset read back from the written file (the exporter
may write a newer one than asked; UINT4 weights need 21), so a bundle can list several.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from targets.onnx.torchlib_registry import shared_torchlib_registry

#: Opset of float graphs, and of graphs holding UINT4 initializers (DequantizeLinear-21).
FLOAT_OPSET = 18
INT4_OPSET = 21
#: The opsets ``--opset`` accepts: the dynamo exporter writes 18 and newer (asked for less, it
#: silently keeps 18); the newest is what the installed onnx package defines.
MIN_OPSET = FLOAT_OPSET
MAX_OPSET = onnx.defs.onnx_opset_version()


def export_onnx(
    module: nn.Module, args: tuple[Tensor, ...], input_names: list[str], output_names: list[str],
    dynamic_shapes: tuple[Any, ...], opset: int, keep_initializers: list[str] | None = None,
) -> onnx.ModelProto:
    """Export ``module`` with the dynamo exporter and return the in-memory model proto.

    ``keep_initializers`` names initializers that must survive the exporter's optimiser
    as themselves: its constant folding and initializer deduplication would otherwise merge
    equal small constants (two layers' zero points) or fold them into others. They are
    declared graph inputs while the optimiser runs (it leaves inputs alone), then restored.
    """
    for logger in ("torch.onnx", "onnx_ir", "onnxscript"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), shared_torchlib_registry():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=input_names, output_names=output_names,
            dynamic_shapes=dynamic_shapes, opset_version=opset, external_data=False,
            verbose=False, report=False, optimize=not keep_initializers,
            custom_translation_table={torch.ops.aten.masked_select.default: _compress},
        )
        if keep_initializers:
            _optimize_keeping(program.model, keep_initializers)
    return program.model_proto


def _compress(values: Any, mask: Any) -> Any:
    """``masked_select`` (a mask of the values' shape) as ONNX's one ``Compress``, which
    flattens as it does. Its default translation, NonZero then GatherND, took ORT 2 to 3x
    longer: most of the selection in a switch-once weights graph."""
    from onnxscript import opset18 as op

    return op.Compress(values, mask)


def _optimize_keeping(model: Any, names: list[str]) -> None:
    """Run onnxscript's optimiser on an ``onnx_ir`` model without touching ``names``."""
    import onnxscript.optimizer

    graph = model.graph
    protected = [graph.initializers[name] for name in names if name in graph.initializers]
    graph.inputs.extend(protected)
    try:
        onnxscript.optimizer.optimize(model)
    finally:
        for value in protected:
            graph.inputs.remove(value)


def strip_debug_info(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debug metadata (source stack, FX node text, scopes).

    On a small network it is most of the file: an 8-bit level was 2.6x larger with it.
    """
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    model.graph.doc_string = ""


def save_inline(model: onnx.ModelProto, path: Path) -> None:
    """Check and save ``model`` as one file with every initializer inside it."""
    strip_debug_info(model)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=False)


def file_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset a model file declares (what a runtime will see)."""
    versions = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    if not versions:
        raise RuntimeError("the exported model declares no ONNX opset")
    return int(versions[0])


def batch_dynamic() -> dict[int, Any]:
    """The dynamic batch dimension of an ``input``."""
    return {0: torch.export.Dim("batch", min=1, max=4096)}
