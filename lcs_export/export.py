"""Export orchestration: checkpoint -> levels -> target artifacts -> manifest -> validation.

The output is checked and locked before any work starts (a file in the way, a read-only
file system, a bundle another process holds: one clear error). Every step works in a
staging directory next to the output (``bundle.staged_bundle``); validation runs there,
through the same code as ``lcs-export validate``, and records its results in the staged
manifest. Only a bundle that passed (or was not asked to be validated) is swapped into place,
atomically: a parity failure, an error or a Ctrl-C at any step leaves the output exactly as
it was, and a SIGKILL leaves only a staging directory that the next export removes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lcs_train.files import pause_point
from lcs_export.bundle import PARITY_NAME, staged_bundle
from lcs_export.levels import parse_levels
from lcs_export.manifest import (
    BUNDLE_FORMAT, MANIFEST_VERSION, alpha_input_section, artifact_entry, created_by, input_section,
    level_entries, now, output_section, samples_section, source_section, write_manifest,
)
from lcs_export.parity import Tolerances, reference_logits
from lcs_export.validate import ValidationResult, load_held_out, validate_bundle
from lcs_train.alpha_graph import AlphaInputModule, AlphaWeightsModule, alpha_predict_module
from lcs_train.errors import LcsError
from lcs_train.cost import count_cost
from lcs_train.materialize import materialize
from lcs_train.restore import checkpoint_method, load_subspace
from lcs_train.subspace import check_model_alpha, fixed_alpha_of, model_method
from targets import get_target
from targets.base import ALPHA_INPUT, LEVELS, SWITCH_ONCE, Artifact, Target
from targets.inputs import AlphaGraph, Level, SwitchOnce

#: Held-out images embedded in the manifest for apps to self-test.
DEFAULT_SAMPLE_INPUTS = 4


@dataclass
class ExportRequest:
    """Everything one export needs, as the CLI collected it."""

    target: str
    checkpoint: Path
    output: Path
    levels: str | None = None  # "--levels" text, parsed against the checkpoint
    dynamic_alpha: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    force: bool = False
    validate: bool = True
    data: str | None = None
    samples: int | None = None
    sample_inputs: int = DEFAULT_SAMPLE_INPUTS
    tolerances: Tolerances = field(default_factory=Tolerances)


@dataclass
class ExportResult:
    """The finished bundle and, when validation ran, its results."""

    directory: Path
    manifest: dict[str, Any]
    validation: ValidationResult | None = None
    installed: bool = True  # False: parity failed and the output was left as it was


class _ParityFailed(Exception):
    """Raised inside the staging block so that a bundle that failed parity is discarded."""

    def __init__(self, validation: ValidationResult) -> None:
        super().__init__("parity failed")
        self.validation = validation


def build_levels(model: nn.Module, alphas: list[float], input_shape: list[int], progress: Any = None) -> list[Level]:
    """Materialise each level (in eval mode) and count its cost (``lcs_train.cost``)."""
    task = progress.add_task("materialising levels", total=len(alphas)) if progress is not None else None
    levels = []
    for alpha in alphas:
        materialized = materialize(model, alpha, input_shape)
        stats = count_cost(materialized, input_shape)
        measured = stats.get("measured", {})
        # The method's own unit, as measured on the materialised weights where available.
        compression = {unit: measured.get(unit, value) for unit, value in materialized.compression.items()}
        levels.append(Level(alpha=alpha, module=materialized.module, compression=compression, stats=stats,
                            prunable=list(materialized.prunable)))
        if progress is not None:
            progress.advance(task)
    return levels


def build_alpha_graph(model: nn.Module, example: torch.Tensor, switch_once: bool = True) -> AlphaGraph:
    """The alpha-input forms of ``model`` (in eval mode), built once for a target; the
    switch-once pair only when asked (a target declaring ``switch_once``)."""
    method = model_method(model)
    pair = None
    if switch_once:
        weights = AlphaWeightsModule(model).eval()
        pair = SwitchOnce(weights, alpha_predict_module(model).eval(), tuple(weights.constant_names))
    return AlphaGraph(AlphaInputModule(model).eval(), float(method.max_alpha), method.name, example[:1], pair)


def export_bundle(request: ExportRequest, progress: Any = None) -> ExportResult:
    """Run one export end to end; raises ``LcsError`` for anything the user can fix.

    A bundle whose parity check fails is not installed: the result then has
    ``installed=False`` and carries the failed validation, and the output is unchanged.
    """
    if request.levels is None and not request.dynamic_alpha:
        raise LcsError("nothing to export", "pass --levels 0.0,0.5,0.9 and/or --dynamic-alpha")
    target = get_target(request.target)
    options = target.parse_options(dict(request.options))  # a bad option fails before any work
    for asked, capability, flag in ((request.levels is not None, LEVELS, "--levels"),
                                    (request.dynamic_alpha, ALPHA_INPUT, "--dynamic-alpha")):
        require(target, capability, flag, asked)
    check_checkpoint_path(Path(request.checkpoint))
    output = Path(request.output)
    try:
        with staged_bundle(output, request.force) as staging:
            manifest, model = _write_bundle(request, target, options, staging, progress)
            validation = None
            if request.validate:
                validation = validate_bundle(
                    staging, data=request.data, samples=request.samples, tolerances=request.tolerances,
                    model=model, progress=progress, lock=False,
                )
                manifest = validation.manifest
                if not validation.passed:
                    raise _ParityFailed(validation)
            pause_point("validated")
    except _ParityFailed as failed:
        failed.validation.results_path = None  # it was inside the discarded staging directory
        return ExportResult(output, failed.validation.manifest, failed.validation, installed=False)
    if validation is not None:
        validation.results_path = output / PARITY_NAME
    return ExportResult(output, manifest, validation)


def check_checkpoint_path(path: Path) -> None:
    """Refuse a checkpoint path that cannot be a checkpoint before anything is read or written
    (a FIFO would block the reader; a directory or a device is a mistake)."""
    if not path.exists():
        raise LcsError(f"checkpoint {path} does not exist", "give the .safetensors file lcs-train wrote (its --out)")
    if path.is_dir():
        raise LcsError(f"checkpoint {path} is a directory, expected a .safetensors file",
                       "give the .safetensors file lcs-train wrote (its --out)")
    if not path.is_file():
        raise LcsError(f"checkpoint {path} is not a regular file", "give the .safetensors file lcs-train wrote")


def require(target: Target, capability: str, flag: str, asked: bool = True) -> None:
    """Refuse a request for a capability the target does not declare (the user's flag to drop)."""
    if asked and capability not in target.capabilities:
        raise LcsError(f"target {target.name} does not support {flag}", f"drop {flag} or use another target")


def _write_bundle(request: ExportRequest, target: Target, options: Any, staging: Path,
                  progress: Any) -> tuple[dict[str, Any], nn.Module]:
    """Levels and artifacts into ``staging``, then its manifest (validation not yet run)."""
    model, checkpoint = load_subspace(request.checkpoint)
    method = checkpoint_method(checkpoint)
    metadata = checkpoint.metadata
    alphas = parse_levels(request.levels, method) if request.levels is not None else []
    # A --fixed-alpha baseline was trained at one alpha only: refuse other levels and the alpha
    # graphs (they would serve untrained alphas) before any work.
    fixed = fixed_alpha_of(model)
    alphas = [check_model_alpha(model, alpha) for alpha in alphas]
    if fixed is not None and request.dynamic_alpha:
        raise LcsError(f"--dynamic-alpha serves every alpha, but {request.checkpoint} is a fixed-alpha baseline "
                       f"trained only at alpha {fixed:g}",
                       f"export it with --levels {fixed:g} instead, or train a subspace without --fixed-alpha")
    input_shape = [int(d) for d in metadata["input"]["shape"]]
    held_out = load_held_out(metadata["data"], input_shape, request.data, request.samples)
    example = torch.from_numpy(held_out.images[:1].copy())
    levels = build_levels(model, alphas, input_shape, progress)
    step = progress.add_task(f"exporting to {target.name}", total=None) if progress is not None else None
    artifacts = list(target.export_levels(levels, example, staging, options)) if levels else []
    if request.dynamic_alpha:
        graph = build_alpha_graph(model, example, SWITCH_ONCE in target.capabilities)
        artifacts += target.export_alpha_input(graph, staging, options)
    if progress is not None:
        progress.update(step, total=1, completed=1)
    pause_point("artifacts")
    manifest = build_manifest(request, target, metadata, levels, artifacts, staging, model, held_out)
    write_manifest(staging, manifest)
    pause_point("manifest")
    return manifest, model


def build_manifest(request: ExportRequest, target: Target, metadata: dict[str, Any], levels: list[Level],
                   artifacts: list[Artifact], staging: Path, model: nn.Module, held_out: Any) -> dict[str, Any]:
    """The manifest of a freshly staged bundle (validation not yet run)."""
    if not artifacts:
        raise RuntimeError(f"target {target.name} wrote no artifacts")
    entries = [artifact_entry(staging, artifact) for artifact in artifacts]
    options = dict(request.options)
    for key in ("opset", "minimum_target", "minimum_deployment_target", "compute_precision", "precision"):
        # What the artifacts really hold (each one's details, read from its file where the
        # format says: the ONNX opset) wins over the request. Artifacts that differ (a
        # quantized bundle holds opset 18 and opset 21 files) are listed, never merged into one.
        used = sorted({json.dumps(e["details"][key]) for e in entries if key in e["details"]})
        if used:
            values = [json.loads(text) for text in used]
            options[key] = values[0] if len(values) == 1 else values
    count = min(request.sample_inputs, len(held_out.labels))
    images = held_out.images[:count]
    sample_alphas = [level.alpha for level in levels] or sorted({0.0, float(metadata["alpha"]["max"])})
    logits = {alpha: reference_logits(model, images, alpha) for alpha in sample_alphas} if count else {}
    runtime = target.describe_runtime()
    return {
        "format": BUNDLE_FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "created_at": now(),
        "created_by": created_by(runtime),
        "target": {"name": target.name, "runtime": runtime, "options": options},
        "source": source_section(request.checkpoint, metadata),
        "input": input_section(metadata),
        "output": output_section(metadata),
        "alpha_input": alpha_input_section(metadata),
        "levels": level_entries(levels, entries),
        "artifacts": entries,
        "samples": samples_section(images, held_out.labels[:count], logits),
        "validation": {"status": "not_run"},
    }
