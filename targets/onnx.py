"""ONNX target: one self-contained .onnx file per level, plus the alpha-input graphs.

Files are exported with ``torch.onnx.export(dynamo=True)`` with a dynamic batch dimension and
saved with every weight inline (no ``.onnx.data`` side file: a browser session is handed one
file). Quantized levels store their weights as integers: each float weight initializer is
replaced by ``DequantizeLinear`` over a UINT8 initializer, or a UINT4 one (packed two per
byte, opset 21) at 4 bits and below, with the per-tensor scale and zero point.

Alpha-input artifacts (alpha is float32 [1], clamped to the trained range in the graph; a
NaN alpha runs as alpha 0, the most accurate end, see ``lcs_train.alpha_graph.clamp_alpha``):

- ``alpha_input.onnx`` (kind ``alpha_input``, details ``mode: single_graph``): inputs
  ``input`` and ``alpha``, output ``logits``; recomputes the compressed weights every call.
- ``alpha_weights.onnx`` (kind ``alpha_weights``) + ``alpha_predict.onnx`` (kind
  ``alpha_predict``; it takes no alpha): the switch-once pair. The weights graph maps
  ``alpha`` to every alpha-dependent constant (outputs named ``details["constants"]``); the
  predict graph maps ``input`` to ``logits`` with those constants as initializers of the same
  names, whose raw bytes sit at ``details["constant_offsets"][i]["offset"]`` in the file. Per
  level switch a host runs::

      values = weights_session.run(None, {"alpha": np.array([a], np.float32)})
      data = bytearray(predict_file_bytes)
      for entry, value in zip(details["constant_offsets"], values):   # same order as outputs
          data[entry["offset"]:entry["offset"] + entry["bytes"]] = value.astype("<f4").tobytes()
      predict = ort.InferenceSession(bytes(data), options)

  then ``predict.run(None, {"input": images})`` per call. Every runtime that opens a model
  from bytes can do this (onnxruntime-web, ORT mobile), the runtime sees ordinary constant
  initializers and applies every optimisation (layout transforms, pre-packing), so
  steady-state calls cost what a static level costs; a switch costs one weights-graph run,
  a byte copy and one session creation.

  ``SessionOptions.add_initializer(name, OrtValue)`` is NOT a way to swap these constants
  unless graph optimisation is off entirely (``ORT_DISABLE_ALL``): from ``ORT_ENABLE_BASIC``
  up, constant folding computes nodes from the file's own (alpha-0) initializer values at
  session creation (the norm layers' scale and shift, for one), so the overrides are
  silently ignored there and the logits are wrong (measured on onnxruntime 1.32 at BASIC,
  EXTENDED and ALL; ``tests/test_targets_onnx_ptl.py`` shows it). Byte patching is the
  supported path; ``SwitchOnceRunner(mode="add_initializer")`` exists for the benchmark
  and uses ``ORT_DISABLE_ALL``, which gives up every optimisation.

Every ``details["opset"]`` is the opset read back from the written file (the exporter may
write a newer one than asked; UINT4 weights need 21), so a bundle can list several.
Runners open a model from bytes read through Python, never from a path: a model from a
bundle cannot name external data files, so it cannot make ONNX Runtime read outside it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from torch import Tensor, nn

from lcs_train.alpha_graph import (
    ALPHA_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    AlphaInputModule,
    AlphaWeightsModule,
    alpha_predict_module,
)
from lcs_train.level_layers import QuantizedConv2d, QuantizedLinear, QuantizedWeight
from lcs_train.errors import LcsError
from lcs_train.subspace import model_method
from targets.base import Artifact, Level, Target, artifact_path, option_value, register_target

#: Opset of float graphs, and of graphs holding UINT4 initializers (DequantizeLinear-21).
FLOAT_OPSET = 18
INT4_OPSET = 21
#: The opsets ``--opset`` accepts: the dynamo exporter writes 18 and newer (asked for less, it
#: silently keeps 18); the newest is what the installed onnx package defines.
MIN_OPSET = FLOAT_OPSET
MAX_OPSET = onnx.defs.onnx_opset_version()
#: Runner threads, as the benchmarks and the apps use them.
INTRA_OP_THREADS = 2
ALPHA_TOLERANCE = 1e-6


def batch_example(example: Tensor) -> Tensor:
    """An example with batch 2: torch.export specialises a batch of 1 to a constant."""
    return example[:1].expand(2, *example.shape[1:]).contiguous()


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
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=input_names, output_names=output_names,
            dynamic_shapes=dynamic_shapes, opset_version=opset, external_data=False,
            verbose=False, report=False, optimize=not keep_initializers,
        )
        if keep_initializers:
            _optimize_keeping(program.model, keep_initializers)
    return program.model_proto


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


def _float_view(level: nn.Module) -> tuple[nn.Module, dict[str, QuantizedWeight]]:
    """A copy whose integer-coded weights are float buffers named ``<layer>.weight.value``.

    The exporter would constant-fold small dequantizations and keep large ones as
    Cast/Sub/Mul; exporting plain float weights and swapping each for a DequantizeLinear
    afterwards gives the same integer storage for every layer.
    """
    view = copy.deepcopy(level)
    originals: dict[str, QuantizedWeight] = {}
    for name, module in list(view.named_modules()):
        if isinstance(module, QuantizedConv2d | QuantizedLinear):
            originals[f"{name}.weight.value"] = module.weight
            module.weight = _FloatWeight(module.weight())
    return view, originals


class _FloatWeight(nn.Module):
    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value.detach().clone())

    def forward(self) -> Tensor:
        return self.value


def _integer_initializers(weight: QuantizedWeight, name: str) -> list[onnx.TensorProto]:
    """Codes, scale and zero point of one weight; 4 bits and below stored as packed UINT4."""
    codes = weight.codes.numpy()
    zero_point = np.asarray(weight.zero_point.item())
    if weight.bits <= 4:
        import ml_dtypes

        codes, zero_point = codes.astype(ml_dtypes.uint4), zero_point.astype(ml_dtypes.uint4)
    else:
        zero_point = zero_point.astype(np.uint8)
    return [
        numpy_helper.from_array(codes, f"{name}_quantized"),
        numpy_helper.from_array(np.asarray(weight.scale.item(), dtype=np.float32), f"{name}_scale"),
        numpy_helper.from_array(zero_point, f"{name}_zero_point"),
    ]


def store_integer_weights(model: onnx.ModelProto, quantized: dict[str, QuantizedWeight]) -> int:
    """Replace each float weight initializer by DequantizeLinear over its integer codes.

    The float initializer must equal the dequantized codes bit for bit (it was exported from
    them), so the graph computes exactly what it did. Returns how many were replaced.
    """
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    nodes = []
    for name, weight in quantized.items():
        tensor = initializers.get(name)
        if tensor is None:
            raise RuntimeError(f"the ONNX export renamed or folded quantized weight {name}")
        if not np.array_equal(numpy_helper.to_array(tensor), weight().numpy()):
            raise RuntimeError(f"the exported weight {name} differs from its dequantized codes")
        model.graph.initializer.remove(tensor)
        model.graph.initializer.extend(_integer_initializers(weight, name))
        nodes.append(helper.make_node(
            "DequantizeLinear", [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"], [name],
            name=f"{name}_dequantize",
        ))
    # Initializer-only inputs: placing the nodes first keeps the graph topologically sorted.
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    return len(nodes)


def constant_offsets(model: onnx.ModelProto, names: list[str]) -> tuple[bytes, list[dict[str, Any]]]:
    """Serialise ``model`` and find where each named initializer's raw bytes lie in the file.

    Each named initializer is first given unique random bytes of the same length, so the
    protobuf layout is the same as with the real values and every search has one answer;
    the real values are then written at the found offsets. Returns the file bytes and, per
    name, ``{"name", "offset", "bytes", "dtype", "shape"}`` (little-endian raw data).
    """
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    marked = copy.deepcopy(model)
    marked_initializers = {tensor.name: tensor for tensor in marked.graph.initializer}
    generator = np.random.default_rng(0)
    markers = {}
    for name in names:
        raw = initializers[name].raw_data
        if not raw:
            raise RuntimeError(f"initializer {name} is not stored as raw data")
        markers[name] = generator.bytes(max(len(raw), 1))
        marked_initializers[name].raw_data = markers[name]
    data = bytearray(marked.SerializeToString())
    table = []
    for name in names:
        raw, marker = initializers[name].raw_data, markers[name]
        offset = data.find(marker)
        if offset < 0 or (len(marker) >= 8 and data.find(marker, offset + 1) >= 0):
            raise RuntimeError(f"could not locate initializer {name} in the serialised predict graph")
        data[offset:offset + len(raw)] = raw
        array = numpy_helper.to_array(initializers[name])
        table.append({"name": name, "offset": offset, "bytes": len(raw),
                      "dtype": str(array.dtype), "shape": list(array.shape)})
    return bytes(data), table


def _level_file(alpha: float) -> str:
    return f"level_alpha_{alpha:.4f}.onnx"


def _session(model: str | bytes, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    options = options or ort.SessionOptions()
    options.log_severity_level = 3  # warnings about initializers ORT's own optimiser dropped
    options.intra_op_num_threads = INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class LevelRunner:
    """One level file: runs only at its own alpha."""

    def __init__(self, path: Path, alpha: float) -> None:
        self.session, self.alpha, self.path = _session(Path(path).read_bytes()), alpha, Path(path)

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        if abs(float(alpha) - self.alpha) > ALPHA_TOLERANCE:
            raise LcsError(
                f"{self.path.name} is the level at alpha {self.alpha:g}; it cannot run alpha {alpha:g}",
                "load the level file of that alpha, or an alpha-input artifact",
            )
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, np.float32)})[0]


class AlphaInputRunner:
    """The single alpha-input graph: alpha fed with every call."""

    def __init__(self, path: Path) -> None:
        self.session = _session(Path(path).read_bytes())

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        feeds = {INPUT_NAME: np.ascontiguousarray(images, np.float32),
                 ALPHA_NAME: np.array([alpha], dtype=np.float32)}
        return self.session.run([OUTPUT_NAME], feeds)[0]


class SwitchOnceRunner:
    """The switch-once pair: weights graph once per alpha change, then the predict graph.

    ``mode="patch"`` (default) writes the weights graph's outputs into a copy of the predict
    file's bytes at the recorded offsets and opens that with every optimisation;
    ``mode="add_initializer"`` binds them with ``SessionOptions.add_initializer`` instead,
    which is only correct with ``ORT_DISABLE_ALL`` (constant folding at BASIC and above
    bakes the file's own values in), so it runs unoptimised. The offsets are checked against
    the predict file first: each must hold exactly that initializer's bytes.
    """

    def __init__(self, weights_path: Path, predict_path: Path, offsets: list[dict[str, Any]],
                 mode: str = "patch") -> None:
        if mode not in ("patch", "add_initializer"):
            raise LcsError(f"unknown switch mode {mode!r}", "use mode 'patch' (or 'add_initializer')")
        self.weights = _session(Path(weights_path).read_bytes())
        self.predict_bytes = Path(predict_path).read_bytes()
        self.names = [output.name for output in self.weights.get_outputs()]
        self.offsets = {entry["name"]: entry for entry in check_offsets_in_file(self.predict_bytes, offsets)}
        missing = [name for name in self.names if name not in self.offsets]
        if missing:
            raise LcsError(f"the weights graph computes {missing[0]!r}, which constant_offsets does not place",
                           "use the weights and predict graphs of the same export")
        self.mode = mode
        self.alpha: float | None = None
        self.predict: ort.InferenceSession | None = None
        self._values: list[Any] = []

    def switch(self, alpha: float) -> None:
        """Compute the constants at ``alpha`` and open the predict graph with them."""
        arrays = self.weights.run(None, {ALPHA_NAME: np.array([alpha], dtype=np.float32)})
        if self.mode == "add_initializer":
            # OrtValues borrow the numpy memory; both must outlive the session.
            values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for a in arrays]
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            for name, value in zip(self.names, values):
                options.add_initializer(name, value)
            self.predict = _session(self.predict_bytes, options)
            self._values = [arrays, values]
        else:
            self.predict = _session(patch_constants(self.predict_bytes, self.offsets, dict(zip(self.names, arrays))))
        self.alpha = float(alpha)

    def run(self, images: np.ndarray, alpha: float) -> np.ndarray:
        if self.alpha != float(alpha):
            self.switch(alpha)
        assert self.predict is not None
        return self.predict.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, np.float32)})[0]


def check_offsets_in_file(model: bytes, offsets: Any) -> list[dict[str, Any]]:
    """The constant table, checked: well formed, inside the file, not overlapping, and each
    range holding exactly the raw bytes of the initializer it names."""
    from lcs_export.manifest import check_constant_offsets

    check_constant_offsets(offsets, len(model), "alpha_predict.onnx")
    try:
        initializers = {t.name: t for t in onnx.load_from_string(model).graph.initializer}
    except Exception as error:  # noqa: BLE001 (any parse failure: not an ONNX model)
        raise LcsError(f"the predict graph is not a readable ONNX model ({type(error).__name__})",
                       "re-export the bundle") from None
    for entry in offsets:
        tensor = initializers.get(entry["name"])
        if tensor is None or tensor.raw_data != model[entry["offset"]:entry["offset"] + entry["bytes"]]:
            raise LcsError(f"constant_offsets places {entry['name']!r} at byte {entry['offset']}, where the predict "
                           "graph does not hold that initializer", "re-export the bundle")
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


def _batch_dynamic() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1, max=4096)}


@register_target
class OnnxTarget(Target):
    """ONNX files run by ONNX Runtime (CPU), one per level plus the alpha-input graphs."""

    name = "onnx"
    runtime = f"onnxruntime {ort.__version__}"

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``opset``: a whole number in [MIN_OPSET, MAX_OPSET]; the switches are booleans."""
        opset = option_value(options, "opset", int, "--opset", f"--opset {FLOAT_OPSET}")
        if opset is not None:
            if not MIN_OPSET <= opset <= MAX_OPSET:
                raise LcsError(f"--opset {opset} is not an opset this exporter writes",
                               f"give --opset between {MIN_OPSET} and {MAX_OPSET} (default {FLOAT_OPSET})")
            options["opset"] = opset
        for switch in ("single_graph", "switch_once"):
            if switch in options and not isinstance(options[switch], bool):
                raise LcsError(f"--option {switch}={options[switch]!r} is not true or false",
                               f"write --option {switch}=true or --option {switch}=false")
        return options

    def export_levels(
        self, levels: list[Level], example: Tensor, directory: Path, options: dict[str, Any]
    ) -> list[Artifact]:
        """One inline .onnx per level; quantized weights stored as UINT8 / UINT4 codes."""
        directory = Path(directory)
        artifacts = []
        for level in levels:
            view, quantized = _float_view(level.module)
            bits = min((w.bits for w in quantized.values()), default=32)
            requested = int(options.get("opset") or FLOAT_OPSET)
            opset = max(requested, INT4_OPSET) if bits <= 4 else requested
            with torch.no_grad():
                model = export_onnx(
                    view.eval(), (batch_example(example),), [INPUT_NAME], [OUTPUT_NAME],
                    (_batch_dynamic(),), opset, keep_initializers=list(quantized),
                )
            replaced = store_integer_weights(model, quantized)
            path = directory / _level_file(level.alpha)
            save_inline(model, path)
            details: dict[str, Any] = {
                "opset": file_opset(model), "alpha": level.alpha, "dynamic_batch": True, "inline_weights": True,
                "inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME],
                "weight_storage": "float32" if not quantized else ("uint4" if bits <= 4 else "uint8"),
            }
            if quantized:
                details["dequantize_linear_weights"] = replaced
            artifacts.append(Artifact(path.name, "level", [level.alpha], details))
        return artifacts

    def export_alpha_input(
        self, subspace: nn.Module, example: Tensor, directory: Path, options: dict[str, Any]
    ) -> list[Artifact]:
        """The single alpha-input graph and the switch-once pair (weights + predict)."""
        directory = Path(directory)
        method = model_method(subspace)
        alphas = [0.0, float(method.max_alpha)]
        opset = int(options.get("opset") or FLOAT_OPSET)
        alpha = torch.tensor([0.0], dtype=torch.float32)
        batch = batch_example(example)
        artifacts = []
        with torch.no_grad():
            if options.get("single_graph", True):
                model = export_onnx(
                    AlphaInputModule(subspace), (batch, alpha), [INPUT_NAME, ALPHA_NAME], [OUTPUT_NAME],
                    (_batch_dynamic(), None), opset,
                )
                save_inline(model, directory / "alpha_input.onnx")
                artifacts.append(Artifact("alpha_input.onnx", "alpha_input", alphas, {
                    "opset": file_opset(model), "mode": "single_graph", "inputs": [INPUT_NAME, ALPHA_NAME],
                    "outputs": [OUTPUT_NAME], "alpha_clamped_to": alphas,
                    "usage": "feed input (float32 NCHW) and alpha (float32 [1]) with every call; "
                             "the compressed weights are recomputed on every call (slow per call)",
                }))
            if options.get("switch_once", True):
                artifacts.extend(self._export_switch_once(subspace, batch, directory, opset, alphas))
        return artifacts

    def _export_switch_once(
        self, subspace: nn.Module, batch: Tensor, directory: Path, opset: int, alphas: list[float]
    ) -> list[Artifact]:
        weights = AlphaWeightsModule(subspace)
        names = list(weights.constant_names)
        weights_model = export_onnx(
            weights, (torch.tensor([0.0]),), [ALPHA_NAME], names, (None,), opset,
        )
        _check_weights_outputs(weights_model, names)
        predict_model = export_onnx(
            alpha_predict_module(subspace), (batch,), [INPUT_NAME], [OUTPUT_NAME], (_batch_dynamic(),), opset,
            keep_initializers=names,
        )
        _check_predict_initializers(predict_model, names)
        save_inline(weights_model, directory / "alpha_weights.onnx")
        strip_debug_info(predict_model)
        onnx.checker.check_model(predict_model)
        predict_bytes, offsets = constant_offsets(predict_model, names)
        (directory / "alpha_predict.onnx").write_bytes(predict_bytes)
        usage = (
            "switch-once: on a level change run alpha_weights.onnx with alpha (float32 [1]); copy the "
            "raw little-endian bytes of each output into a copy of alpha_predict.onnx's bytes at "
            "details.constant_offsets[name].offset and open a session from those bytes; then run it "
            "with input per call. Do not use SessionOptions.add_initializer for this: from "
            "ORT_ENABLE_BASIC up, constant folding keeps the file's own values and the logits are "
            "silently wrong (it is correct only with ORT_DISABLE_ALL, unoptimised). A NaN alpha runs "
            "as alpha 0. Unswitched, alpha_predict.onnx is the alpha-0 level."
        )
        common = {"constants": names, "alpha_clamped_to": alphas, "usage": usage, "constant_offsets": offsets}
        return [
            Artifact("alpha_weights.onnx", "alpha_weights", alphas, {
                **common, "opset": file_opset(weights_model), "mode": "switch_once", "inputs": [ALPHA_NAME],
                "outputs": names, "predict_path": "alpha_predict.onnx",
            }),
            Artifact("alpha_predict.onnx", "alpha_predict", alphas, {
                **common, "opset": file_opset(predict_model), "mode": "switch_once", "inputs": [INPUT_NAME],
                "outputs": [OUTPUT_NAME],
                "weights_path": "alpha_weights.onnx", "initializers_replaced_per_switch": names,
            }),
        ]

    def load(self, directory: Path, artifact: dict[str, Any]) -> Any:
        """A runner for a level file, the single alpha-input graph or the switch-once pair."""
        details = artifact.get("details", {})
        path = artifact_path(directory, artifact["path"])
        kind = artifact["kind"]
        if kind == "level":
            return LevelRunner(path, float(artifact["alphas"][0]))
        mode = details.get("switch_mode", "patch")
        if kind == "alpha_weights":
            predict = artifact_path(directory, _detail(details, "predict_path", kind))
            return SwitchOnceRunner(path, predict, _detail(details, "constant_offsets", kind), mode)
        if kind == "alpha_predict":
            weights = artifact_path(directory, _detail(details, "weights_path", kind))
            return SwitchOnceRunner(weights, path, _detail(details, "constant_offsets", kind), mode)
        if kind == "alpha_input":
            return AlphaInputRunner(path)
        raise LcsError(f"the onnx target cannot load artifact kind {kind!r}",
                       "use a manifest written by lcs-export for the onnx target")


def _detail(details: dict[str, Any], key: str, kind: str) -> Any:
    if key not in details:
        raise LcsError(f"a {kind} artifact needs details.{key}, and this one has none",
                       "use a manifest written by lcs-export for the onnx target")
    return details[key]


def _check_weights_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    produced = [output.name for output in model.graph.output]
    if produced != names:
        raise RuntimeError(f"the weights graph's outputs were renamed: {produced[:3]} ... vs {names[:3]} ...")


def _check_predict_initializers(model: onnx.ModelProto, names: list[str]) -> None:
    present = {tensor.name for tensor in model.graph.initializer}
    missing = [name for name in names if name not in present]
    if missing:
        raise RuntimeError(f"the predict graph lost its named constants (first: {missing[:3]})")
