"""Running ONNX artifacts with ONNX Runtime (CPU): a level, the single alpha-input graph, and
the switch-once pair.

Runners open a model from bytes read through Python, never from a path: a model from a
bundle cannot name external data files, so it cannot make ONNX Runtime read outside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from lcs_train.alpha_graph import ALPHA_NAME, INPUT_NAME, OUTPUT_NAME
from lcs_train.errors import LcsError
from targets.onnx.offsets import check_constant_offsets, patch_constants

#: Runner threads, as the benchmarks and the apps use them.
INTRA_OP_THREADS = 2
ALPHA_TOLERANCE = 1e-6


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


#: How a switch-once runner hands the new constants to ONNX Runtime (see ``SwitchOnceRunner``).
SWITCH_MODES = ("external", "patch", "add_initializer")


class SwitchOnceRunner:
    """The switch-once pair: weights graph once per alpha change, then the predict graph.

    ``mode="external"`` (default) hands the weights graph's outputs to ONNX Runtime as the
    predict graph's initializers (``SessionOptions.add_external_initializers``, on a copy of
    the predict graph whose alpha-dependent constants are external-data placeholders, made
    once): the runtime puts them in place before it optimises, so every optimisation applies,
    and nothing copies the whole file per switch. ``mode="patch"`` writes the outputs into a
    copy of the predict file's bytes at the recorded offsets and opens that: the portable
    recipe for a host that can only open a model from bytes (onnxruntime-web), kept for the
    benchmark. ``mode="add_initializer"`` binds them with ``SessionOptions.add_initializer``
    instead, which is only correct with ``ORT_DISABLE_ALL`` (constant folding at BASIC and
    above bakes the file's own values in), so it runs unoptimised. The offsets are checked
    against the predict file first: each must hold exactly that initializer's bytes.
    """

    def __init__(self, weights_path: Path, predict_path: Path, offsets: list[dict[str, Any]],
                 mode: str = "external") -> None:
        if mode not in SWITCH_MODES:
            raise LcsError(f"unknown switch mode {mode!r}", f"use one of {', '.join(SWITCH_MODES)}")
        self.weights = _session(Path(weights_path).read_bytes())
        self.predict_bytes = Path(predict_path).read_bytes()
        self.names = [output.name for output in self.weights.get_outputs()]
        proto = check_offsets_in_file(self.predict_bytes, offsets)
        self.offsets = {entry["name"]: entry for entry in offsets}
        missing = [name for name in self.names if name not in self.offsets]
        if missing:
            raise LcsError(f"the weights graph computes {missing[0]!r}, which constant_offsets does not place",
                           "use the weights and predict graphs of the same export")
        self.mode = mode
        self._external_model, shapes = external_constants_model(proto, self.names) if mode == "external" else (b"", {})
        self._external = [(index, name, shapes[name]) for index, name in enumerate(self.names) if name in shapes]
        self.alpha: float | None = None
        self.predict: ort.InferenceSession | None = None
        self._values: list[Any] = []

    def switch(self, alpha: float) -> None:
        """Compute the constants at ``alpha`` and open the predict graph with them."""
        arrays = self.weights.run(None, {ALPHA_NAME: np.array([alpha], dtype=np.float32)})
        if self.mode == "external":
            options = ort.SessionOptions()
            # ORT copies the values in at session creation; the OrtValues need not outlive it.
            options.add_external_initializers(
                [name for _, name, _ in self._external],
                [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arrays[index]).reshape(shape))
                 for index, _, shape in self._external])
            self.predict = _session(self._external_model, options)
        elif self.mode == "add_initializer":
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


def external_constants_model(proto: onnx.ModelProto, names: list[str]) -> tuple[bytes, dict[str, list[int]]]:
    """The predict graph ``proto`` (changed in place) with those of the initializers ``names``
    that a node reads turned into external-data placeholders (no data), for
    ``add_external_initializers`` to fill at every session creation, and the names turned
    with their shapes (a replacement must match the shape exactly; the weights graph may give
    a scalar as [1]). An initializer no node reads is left as it is: ONNX Runtime drops it at
    load, before the replacement, which would then fail."""
    read = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
    wanted = {name for name in names if name in read}
    turned = {}
    for tensor in proto.graph.initializer:
        if tensor.name in wanted:
            turned[tensor.name] = list(tensor.dims)
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            # Never read: every placeholder is replaced before the model's data is loaded.
            for key, value in (("location", "lcs-switch-constant"), ("offset", "0"), ("length", "0")):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    return proto.SerializeToString(), turned


def check_offsets_in_file(model: bytes, offsets: Any) -> onnx.ModelProto:
    """Check the constant table against the predict file: well formed, inside the file, not
    overlapping, and each range holding exactly the raw bytes of the initializer it names.
    Returns the parsed predict graph."""
    check_constant_offsets(offsets, len(model), "alpha_predict.onnx")
    try:
        proto = onnx.load_from_string(model)
        initializers = {t.name: t for t in proto.graph.initializer}
    except Exception as error:  # noqa: BLE001 (any parse failure: not an ONNX model)
        raise LcsError(f"the predict graph is not a readable ONNX model ({type(error).__name__})",
                       "re-export the bundle") from None
    for entry in offsets:
        tensor = initializers.get(entry["name"])
        if tensor is None or tensor.raw_data != model[entry["offset"]:entry["offset"] + entry["bytes"]]:
            raise LcsError(f"constant_offsets places {entry['name']!r} at byte {entry['offset']}, where the predict "
                           "graph does not hold that initializer", "re-export the bundle")
    return proto


