"""Export orchestration: checkpoint -> levels -> target artifacts -> manifest -> validation.

Every step before the rename works in a staging directory (``bundle.staged_bundle``), so a
failure anywhere leaves the output path as it was. Validation runs on the finished bundle,
through the same code as ``lcs-export validate``, and records its results in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lcs_export.bundle import staged_bundle
from lcs_export.levels import parse_levels
from lcs_export.manifest import (
    BUNDLE_FORMAT, MANIFEST_VERSION, alpha_input_section, artifact_entry, created_by, input_section,
    level_entries, now, output_section, samples_section, source_section, write_manifest,
)
from lcs_export.parity import Tolerances, reference_logits
from lcs_export.validate import ValidationResult, load_held_out, validate_bundle
from lcs_train.errors import LcsError
from lcs_train.restore import checkpoint_method, load_subspace

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


def build_levels(model: nn.Module, alphas: list[float], input_shape: list[int], progress: Any = None) -> list[Any]:
    """Materialise each level and measure it (``targets.base.Level`` objects)."""
    from lcs_export.materialize import level_stats, materialize_level
    from targets.base import Level

    method = model.lcs_method
    task = progress.add_task("materialising levels", total=len(alphas)) if progress is not None else None
    levels = []
    for alpha in alphas:
        module = materialize_level(model, alpha).eval()
        stats = level_stats(module, alpha, input_shape)
        nominal = method.level(alpha)
        measured = stats.get("measured", {})
        # The method's own unit, as measured on the materialised weights where available.
        compression = {unit: measured.get(unit, value) for unit, value in nominal.items()}
        stats = {key: value for key, value in stats.items() if key != "alpha"}
        levels.append(Level(alpha=alpha, module=module, compression=compression, stats=stats))
        if progress is not None:
            progress.advance(task)
    return levels


def export_bundle(request: ExportRequest, progress: Any = None) -> ExportResult:
    """Run one export end to end; raises ``LcsError`` for anything the user can fix."""
    from targets import get_target

    if request.levels is None and not request.dynamic_alpha:
        raise LcsError("nothing to export", "pass --levels 0.0,0.5,0.9 and/or --dynamic-alpha")
    target = get_target(request.target)
    model, checkpoint = load_subspace(request.checkpoint)
    method = checkpoint_method(checkpoint)
    metadata = checkpoint.metadata
    alphas = parse_levels(request.levels, method) if request.levels is not None else []
    input_shape = [int(d) for d in metadata["input"]["shape"]]
    held_out = load_held_out(metadata["data"], input_shape, request.data, request.samples)
    example = torch.from_numpy(held_out.images[:1].copy())

    with staged_bundle(request.output, request.force) as staging:
        levels = build_levels(model, alphas, input_shape, progress)
        step = progress.add_task(f"exporting to {target.name}", total=None) if progress is not None else None
        artifacts = _supported(target, "--levels", target.export_levels, levels, example, staging, request.options) \
            if levels else []
        if request.dynamic_alpha:
            artifacts += _supported(target, "--dynamic-alpha", target.export_alpha_input, model, example, staging,
                                    request.options)
        if progress is not None:
            progress.update(step, total=1, completed=1)
        manifest = build_manifest(request, target, metadata, levels, artifacts, staging, model, held_out)
        write_manifest(staging, manifest)

    validation = None
    if request.validate:
        validation = validate_bundle(
            request.output, data=request.data, samples=request.samples, tolerances=request.tolerances,
            model=model, progress=progress,
        )
        manifest = validation.manifest
    return ExportResult(Path(request.output), manifest, validation)


def _supported(target: Any, flag: str, verb: Any, subject: Any, example: torch.Tensor, staging: Path,
               options: dict[str, Any]) -> list[Any]:
    """Call a target's export verb; a verb the target does not implement is the user's option
    to drop. Only the base class's placeholder counts as "not implemented": the same exception
    raised from inside a converter is a real failure and keeps its message."""
    from targets.base import Target

    if getattr(type(target), verb.__name__) is getattr(Target, verb.__name__):
        raise LcsError(f"target {target.name} does not support {flag}", f"drop {flag} or use another target")
    return list(verb(subject, example, staging, dict(options)))


def build_manifest(request: ExportRequest, target: Any, metadata: dict[str, Any], levels: list[Any],
                   artifacts: list[Any], staging: Path, model: nn.Module, held_out: Any) -> dict[str, Any]:
    """The manifest of a freshly staged bundle (validation not yet run)."""
    if not artifacts:
        raise RuntimeError(f"target {target.name} wrote no artifacts")
    entries = [artifact_entry(staging, artifact) for artifact in artifacts]
    options = dict(request.options)
    for entry in entries:
        # What the target actually used (opset, minimum target, precision) wins over the request.
        for key in ("opset", "minimum_target", "minimum_deployment_target", "compute_precision", "precision"):
            if key in entry["details"]:
                options[key] = entry["details"][key]
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
