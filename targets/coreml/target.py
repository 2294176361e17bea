"""Core ML target: ML program packages (.mlpackage) for iOS / macOS.

- ``level_alpha_<a>.mlpackage`` (kind ``level``): one materialised level, compression real in
  the package (sparse weights, 8- or 4-bit integer weights, or a narrower network; see
  ``targets.coreml.weights``).
- ``levels.mlpackage`` (kind ``multifunction``, with ``multifunction``, in addition to the
  single-level packages it is composed from): every level as one function (``level_0p5`` ...)
  of one package, identical tensors stored once; iOS18. ``details["functions"]`` maps each
  alpha (as a string) to its function name.
- ``alpha_input.mlpackage`` (kind ``alpha_input``): inputs ``input`` and ``alpha`` (float32 [1],
  clamped to the trained range in the program); weights recomputed on every call.

Every program takes ``input`` float32 NCHW with a flexible batch (1..``max_batch``) and
returns ``logits``. ``load`` runs a package with Core ML on macOS and with the NumPy MIL
interpreter elsewhere; the runner's ``path_used`` says which.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from targets.base import ALPHA_INPUT, LEVELS, MULTIFUNCTION, Artifact, Target, artifact_path, register_target
from targets.coreml.convert import OUTPUT_NAME, convert_module, quiet_coremltools
from targets.coreml.options import CoreMLOptions, parse_options
from targets.coreml.runner import COREML_PREDICT, MIL_INTERPRETER, CoreMLRunner, coreml_prediction_available
from targets.coreml.weights import WeightPlan, plan_weights, store_weights
from targets.inputs import AlphaGraph, Level, batch_example

if importlib.util.find_spec("coremltools") is None:  # imported lazily; without it, no coreml target
    raise ModuleNotFoundError("the coreml target needs coremltools: pip install coremltools", name="coremltools")

MULTIFUNCTION_FILE = "levels.mlpackage"
ALPHA_INPUT_FILE = "alpha_input.mlpackage"


def level_file(alpha: float) -> str:
    """File name of a single-level package."""
    return f"level_alpha_{alpha:.4f}.mlpackage"


def function_name(alpha: float) -> str:
    """Function name of a level inside a multifunction package: 0.5 -> ``level_0p5``."""
    text = f"{alpha:.4f}".rstrip("0").rstrip(".")
    return "level_" + text.replace(".", "p")


#: Files coremltools leaves in a package that no Core ML runtime reads: the ExecuTorch debug
#: map of the torch.export conversion (8 % of a float level, 28 % of a narrow one). It is
#: not listed in the package's Manifest.json, so removing it changes nothing but the size.
STRAY_PACKAGE_FILES = ("executorch_debug_handle_mapping.json",)


def package_bytes(path: Path) -> int:
    """Total size of the files of a package (a directory)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def remove_stray_files(package: Path) -> None:
    """Delete ``STRAY_PACKAGE_FILES`` from a saved package (at any depth)."""
    for name in STRAY_PACKAGE_FILES:
        for stray in Path(package).rglob(name):
            if stray.is_file():
                stray.unlink()


@register_target
class CoreMLTarget(Target):
    """ML programs checked by Core ML on macOS, by the MIL reference interpreter elsewhere."""

    name = "coreml"
    runtime = "coremltools"
    Options = CoreMLOptions
    capabilities = frozenset({LEVELS, ALPHA_INPUT, MULTIFUNCTION})

    def describe_runtime(self) -> str:
        import coremltools

        path = COREML_PREDICT if coreml_prediction_available() else MIL_INTERPRETER
        return f"coremltools {coremltools.__version__} ({path})"

    def parse_options(self, values: Mapping[str, Any]) -> CoreMLOptions:
        """Every option parsed once before any work (``targets.coreml.options.parse_options``)."""
        return parse_options(dict(values))

    def export_levels(
        self, levels: list[Level], example: Tensor, directory: Path, options: CoreMLOptions
    ) -> list[Artifact]:
        """One package per level; with ``multifunction`` also one package holding them all."""
        directory = Path(directory)
        singles = [self._export_level(level, example, directory / level_file(level.alpha), options)
                   for level in levels]
        if options.multifunction and singles:
            singles.append(_multifunction(singles, directory, options))
        return singles

    def _export_level(self, level: Level, example: Tensor, path: Path, options: CoreMLOptions) -> Artifact:
        plans = plan_weights(level, options)  # before converting: a bad option fails fast
        mlmodel = convert_module(level.module, [batch_example(example)], ["input"], options)
        mlmodel, located = store_weights(mlmodel, plans, options)
        _save(mlmodel, path)
        details = {
            **_common_details(options), "alpha": level.alpha, "inputs": ["input"],
            "weight_storage": _storage_summary(plans, options),
            "compressed_layers": _layer_details(plans, located), "bytes": package_bytes(path),
        }
        return Artifact(path.name, "level", [level.alpha], details)

    def export_alpha_input(self, graph: AlphaGraph, directory: Path, options: CoreMLOptions) -> list[Artifact]:
        """One program taking ``input`` and ``alpha`` (float32 [1])."""
        alpha = torch.zeros(1, dtype=torch.float32)
        mlmodel = convert_module(graph.module, [batch_example(graph.example), alpha], ["input", "alpha"], options)
        path = Path(directory) / ALPHA_INPUT_FILE
        _save(mlmodel, path)
        details = {
            **_common_details(options), "mode": "single_graph", "inputs": ["input", "alpha"],
            "alpha_clamped_to": graph.alphas, "weight_storage": "computed from alpha",
        }
        usage = ("feed input (float32 NCHW) and alpha (float32 [1]) with every call; "
                 "the compressed weights are recomputed on every call (slow per call)")
        return [Artifact(path.name, "alpha_input", graph.alphas, details, usage=usage)]

    def load(self, directory: Path, artifact: dict[str, Any]) -> CoreMLRunner:
        """A runner for a manifest entry (Core ML on macOS, MIL interpreter elsewhere)."""
        details = artifact.get("details", {})
        functions = {float(alpha): name for alpha, name in details.get("functions", {}).items()}
        return CoreMLRunner(
            artifact_path(directory, artifact["path"]),
            alphas=[float(a) for a in artifact["alphas"]],
            functions=functions,
            alpha_input=artifact["kind"] == "alpha_input",
            max_batch=int(details.get("max_batch", 256)),
            compute_units=str(details.get("compute_units", "CPU_ONLY")),
        )


def _multifunction(singles: list[Artifact], directory: Path, options: CoreMLOptions) -> Artifact:
    """Every single-level package as one function of one package (identical tensors shared)."""
    functions = {single.alphas[0]: function_name(single.alphas[0]) for single in singles}
    path = directory / MULTIFUNCTION_FILE
    with quiet_coremltools() as ct:
        descriptor = ct.utils.MultiFunctionDescriptor()
        for single in singles:
            descriptor.add_function(str(directory / single.path), src_function_name="main",
                                    target_function_name=functions[single.alphas[0]])
        descriptor.default_function_name = functions[singles[0].alphas[0]]
        if path.exists():
            shutil.rmtree(path)
        ct.utils.save_multifunction(descriptor, str(path))
    remove_stray_files(path)
    details = {
        **_common_details(options), "inputs": ["input"],
        "functions": {str(alpha): name for alpha, name in functions.items()},
        "default_function": descriptor.default_function_name,
        "function_files": {functions[s.alphas[0]]: s.path for s in singles},
        "bytes": package_bytes(path),
        "single_level_bytes": sum(int(s.details["bytes"]) for s in singles),
    }
    return Artifact(path.name, "multifunction", list(functions), details)


def _save(mlmodel: Any, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    with quiet_coremltools():
        mlmodel.save(str(path))
    remove_stray_files(path)


def _common_details(options: CoreMLOptions) -> dict[str, Any]:
    return {
        "minimum_target": options.minimum_target, "compute_precision": options.compute_precision,
        "compute_units": options.compute_units, "outputs": [OUTPUT_NAME], "flexible_batch": True,
        "max_batch": options.max_batch,
    }


def _storage_summary(plans: list[WeightPlan], options: CoreMLOptions) -> str:
    kinds = sorted({plan.storage for plan in plans})
    return "+".join(kinds) if kinds else options.compute_precision


def _layer_details(plans: list[WeightPlan], located: dict[str, str]) -> dict[str, dict[str, Any]]:
    layers = {}
    for plan in plans:
        entry: dict[str, Any] = {"op": located[plan.layer], "storage": plan.storage}
        if plan.storage == "sparse":
            entry["sparsity"] = plan.sparsity
        else:
            entry.update(bits=plan.bits, scale=plan.scale, zero_point=plan.zero_point)
        layers[plan.layer] = entry
    return layers
