"""The ``executorch`` target: ``.pte`` programs for the ExecuTorch runtime (XNNPACK delegate).

- ``level_alpha_<a>.pte`` (kind ``level``): one materialised level, method ``forward``; a
  quantized level's weights are stored dequantized to float32, which XNNPACK runs;
  ``--weight-codes`` keeps its integer codes instead (dequantized in the graph: a smaller
  file, but XNNPACK takes no convolution whose weights are computed, so they run on the
  portable kernels, and ``details.portable_ops`` says so);
- ``levels.pte`` (kind ``multifunction``, with ``--multimethod``, instead of the per-level
  files): every level as a method of one program (``level_0p5`` ...);
  ``details["methods"]`` maps each alpha (as a string) to its method name;
- ``alpha_input.pte`` (kind ``alpha_input``): method ``forward(input, alpha)``, alpha float32
  [1] clamped to the trained range in the graph; weights recomputed on every call, each
  layer's top-k threshold from a full-length ``topk`` (``targets.executorch.lower``); run by
  the portable kernels alone (XNNPACK takes no convolution whose weights are computed).

Every method takes ``input`` float32 NCHW with a batch of 1..``max_batch`` and returns
``logits``. The programs are checked through ``executorch.runtime`` (``runner``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lcs_train.alpha_graph import ALPHA_NAME, INPUT_NAME, OUTPUT_NAME
from lcs_train.errors import LcsError
from lcs_train.level_layers import QuantizedWeight
from targets.base import ALPHA_INPUT, LEVELS, MULTIFUNCTION, Artifact, Target, artifact_path, option, register_target
from targets.executorch.lower import LoweredProgram, export_program, fold_constants, lower
from targets.executorch.runner import ExecuTorchRunner
from targets.inputs import AlphaGraph, Level, batch_example

if importlib.util.find_spec("executorch") is None:  # imported lazily (seconds); without it, no target
    raise ModuleNotFoundError("the executorch target needs executorch: pip install '.[executorch]'",
                              name="executorch")

MULTIMETHOD_FILE = "levels.pte"
ALPHA_INPUT_FILE = "alpha_input.pte"
#: The backend every program is delegated to (where XNNPACK supports the op).
BACKEND = "XnnpackBackend"
#: Default largest batch: the runtime plans memory for it when a method loads.
MAX_BATCH = 32


def level_file(alpha: float) -> str:
    """File name of a single-level program."""
    return f"level_alpha_{alpha:.4f}.pte"


def method_name(alpha: float) -> str:
    """Method name of a level inside the multi-method program: 0.5 -> ``level_0p5``."""
    text = f"{alpha:.4f}".rstrip("0").rstrip(".")
    return "level_" + text.replace(".", "p")


@dataclass(frozen=True)
class ExecuTorchOptions:
    """What an ExecuTorch export was asked for; the CLI's flags."""

    multimethod: bool = option(False, "write every level as a method (level_0p5, ...) of one levels.pte "
                                      "instead of one .pte per level")
    weight_codes: bool = option(False, "keep quantized levels' integer weight codes, dequantized in the graph: "
                                       "files about 0.3x, but such a level runs on the portable kernels, 14 to "
                                       "24x slower; by default the weights are stored dequantized to float32 "
                                       "and XNNPACK runs them")
    max_batch: int = option(MAX_BATCH, "largest batch a method accepts (the runtime plans memory for it)",
                            flag=False)


@register_target
class ExecuTorchTarget(Target):
    """.pte programs run by the ExecuTorch runtime, delegated to XNNPACK where it can."""

    name = "executorch"
    runtime = f"executorch {importlib.metadata.version('executorch')}"
    Options = ExecuTorchOptions
    capabilities = frozenset({LEVELS, ALPHA_INPUT, MULTIFUNCTION})

    def parse_options(self, values: Any) -> ExecuTorchOptions:
        """The declared options; ``max_batch`` between 1 and 4096."""
        options = super().parse_options(values)
        if not 1 <= options.max_batch <= 4096:
            raise LcsError(f"--option max_batch={options.max_batch} is out of range",
                           "give --option max_batch between 1 and 4096 (default 32)")
        return options

    def export_levels(self, levels: list[Level], example: Tensor, directory: Path,
                      options: ExecuTorchOptions) -> list[Artifact]:
        """One .pte per level, or (``multimethod``) one .pte with a method per level."""
        batch = batch_example(example)
        programs = {level.alpha: export_program(level.module, (batch,), options.max_batch) for level in levels}
        if not options.weight_codes:
            programs = {alpha: fold_constants(program) for alpha, program in programs.items()}
        # Integer codes leave XNNPACK no convolution (their weights are computed in the graph),
        # only the elementwise ops between them, in two dozen small partitions: on the portable
        # kernels alone a call took 1.02 to 1.03x the time, the file was a tenth smaller and
        # lowering took 0.4x as long (bench/executorch_weights.py), so such levels are not delegated.
        delegate = not (options.weight_codes and any(isinstance(module, QuantizedWeight)
                                                     for level in levels for module in level.module.modules()))
        backend = BACKEND if delegate else None
        if options.multimethod:
            methods = {alpha: method_name(alpha) for alpha in programs}
            lowered = _checked(lower({methods[a]: p for a, p in programs.items()}, delegate=delegate), "levels",
                               _LEVEL_FIX)
            path = _write(Path(directory) / MULTIMETHOD_FILE, lowered)
            details = {**_details(lowered, options, [INPUT_NAME], backend=backend),
                       "methods": {str(alpha): name for alpha, name in methods.items()}}
            usage = ("load it with the ExecuTorch runtime and call the method named for the level you want "
                     "(details.methods: alpha -> method) with input float32 NCHW; switching level is "
                     "calling another method of the same program")
            return [Artifact(path.name, "multifunction", list(methods), details, usage=usage)]
        artifacts = []
        for alpha, program in programs.items():
            lowered = _checked(lower({"forward": program}, delegate=delegate), f"level {alpha:g}", _LEVEL_FIX)
            path = _write(Path(directory) / level_file(alpha), lowered)
            details = {**_details(lowered, options, [INPUT_NAME], backend=backend), "alpha": alpha,
                       "method": "forward"}
            usage = "load it with the ExecuTorch runtime and call method forward(input) with input float32 NCHW"
            artifacts.append(Artifact(path.name, "level", [alpha], details, usage=usage))
        return artifacts

    def export_alpha_input(self, graph: AlphaGraph, directory: Path, options: ExecuTorchOptions) -> list[Artifact]:
        """One program whose method ``forward`` takes ``input`` and ``alpha`` (float32 [1])."""
        example = (batch_example(graph.example), torch.zeros(1, dtype=torch.float32))
        # Portable kernels only: its convolutions read weights computed from alpha, which
        # XNNPACK does not take, so delegating the rest gained nothing per call (66 ms against
        # 62 ms at batch 1 here) and made the export 2.4x slower (23 s against 10 s of CPU).
        program = export_program(graph.module, example, options.max_batch)
        lowered = _checked(lower({"forward": program}, delegate=False), "alpha_input",
                           "drop --dynamic-alpha and export --levels")
        path = _write(Path(directory) / ALPHA_INPUT_FILE, lowered)
        details = {**_details(lowered, options, [INPUT_NAME, ALPHA_NAME], backend=None), "method": "forward",
                   "mode": "single_graph", "alpha_clamped_to": graph.alphas}
        usage = ("call method forward(input, alpha) with alpha a float32 tensor of shape [1]; the compressed "
                 "weights are recomputed on every call (slow per call)")
        return [Artifact(path.name, "alpha_input", graph.alphas, details, usage=usage)]

    def load(self, directory: Path, artifact: dict[str, Any]) -> ExecuTorchRunner:
        """A runner for a level, multi-method or alpha-input program."""
        kind = artifact["kind"]
        if kind not in ("level", "multifunction", "alpha_input"):
            raise LcsError(f"the executorch target cannot load artifact kind {kind!r}",
                           "use a manifest written by lcs-export for the executorch target")
        details = artifact.get("details", {})
        methods = {float(alpha): str(name) for alpha, name in details.get("methods", {}).items()}
        return ExecuTorchRunner(artifact_path(directory, artifact["path"]),
                                alphas=[float(a) for a in artifact["alphas"]], methods=methods,
                                alpha_input=kind == "alpha_input", max_batch=int(details.get("max_batch", MAX_BATCH)))


def _checked(lowered: LoweredProgram, what: str, fix: str) -> LoweredProgram:
    """Refuse a program that needs a kernel this ExecuTorch runtime does not link, naming the
    method and the kernel, before anything is written."""
    from executorch.runtime import Runtime

    available = Runtime.get().operator_registry.operator_names
    for method, ops in lowered.portable_ops.items():
        missing = [op for op in ops if op not in available]
        if missing:
            raise LcsError(f"the {what} program's method {method!r} needs {', '.join(missing)}, which ExecuTorch's "
                           "portable kernels lack, so no ExecuTorch runtime built from them can run it",
                           fix)
    return lowered


_LEVEL_FIX = "export this subspace's levels for another target (onnx, torchscript-lite, coreml)"


def _write(path: Path, lowered: LoweredProgram) -> Path:
    path.write_bytes(lowered.data)
    return path


def _details(lowered: LoweredProgram, options: ExecuTorchOptions, inputs: list[str],
             backend: str | None = BACKEND) -> dict[str, Any]:
    """Facts every program shares; ``portable_ops``: per method, the kernels left outside the
    delegate (``backend``; None: the portable kernels run everything)."""
    return {
        "inputs": inputs, "outputs": [OUTPUT_NAME], "dynamic_batch": True, "max_batch": options.max_batch,
        "precision": "float32", "backend": backend or "portable kernels only",
        "fully_delegated": backend is not None and lowered.fully_delegated,
        "delegated_calls": lowered.delegated_calls, "portable_ops": lowered.portable_ops,
    }
