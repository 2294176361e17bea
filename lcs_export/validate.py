"""Validating a bundle: integrity first, then every artifact against PyTorch on held-out data.

Order matters: a file whose sha256 does not match is reported and nothing is run (its
results would describe some other file). Then every artifact is loaded through its target's
runtime and checked at every alpha it serves; alpha-input artifacts are swept over the
levels, a few in-between alphas and one alpha above the trained range (which the graph must
clamp). The results go into the manifest (rewritten atomically) and into ``parity.json``.

Validation holds the bundle's lock (``lcs_export.atomic.BundleLock``) and runs every artifact
from a verified private copy (``bundle.verified_copy``): the artifacts of the bundle are never
opened by a runtime, so none can be modified (coremltools rewrites a package's
``Manifest.json`` when it loads it). An artifact that fails to load or run is a failed check
with the runtime's message, not a crash. When the bundle cannot be written (a read-only
file system), the results are still returned and written to a temporary directory instead;
``ValidationResult.record_error`` says why and ``results_path`` where.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from lcs_export.atomic import BundleLock
from lcs_export.bundle import PARITY_NAME, IntegrityResult, sha256_if_size, verified_copy
from lcs_train.files import write_json_atomic
from lcs_export.manifest import ALPHA_INPUT_KINDS, now, read_manifest, write_manifest
from lcs_export.parity import ParityReport, ReferenceCache, Tolerances, compare, parity_regime, run_batched
from lcs_train.data import DATASETS, load_dataset
from lcs_train.errors import LcsError
from lcs_train.methods import method_from_metadata
from lcs_train.restore import load_subspace
from targets import get_target

#: Datasets read from installed packages; only the others take a --data directory.
EMBEDDED_DATASETS = ("mnist", "digits")
#: How far above the trained range the clamping check goes.
OUTSIDE_STEP = 0.1
#: Most in-between alphas checked for an alpha-input artifact.
MAX_IN_BETWEEN = 4


@dataclass
class HeldOut:
    """Preprocessed held-out images and labels, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    description: dict[str, Any]


@dataclass
class ValidationResult:
    """What validating a bundle found, and whether it could be recorded in the bundle."""

    integrity: list[IntegrityResult]
    reports: list[ParityReport] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    record_error: str | None = None  # why the results could not be written into the bundle
    results_path: Path | None = None  # where parity.json went (the bundle's, or a temporary one)

    @property
    def integrity_ok(self) -> bool:
        return all(item.ok for item in self.integrity)

    @property
    def passed(self) -> bool:
        return self.integrity_ok and bool(self.reports) and all(r.passed for r in self.reports)


def load_held_out(data_facts: dict[str, Any], input_shape: list[Any], data: str | None = None,
                  samples: int | None = None) -> HeldOut:
    """Held-out data for parity: the checkpoint's dataset, or ``data`` (a dataset name or a
    directory for the checkpoint's dataset), limited to the first ``samples`` images."""
    name, data_dir = data_facts["dataset"], data_facts.get("data_dir")
    if data is not None:
        if data in DATASETS:
            name = data
        elif Path(data).is_dir():
            if name in EMBEDDED_DATASETS:  # it would be ignored, yet recorded as what was checked
                raise LcsError(f"--data {data}: the {name} data ships inside lcs's dependencies and takes no "
                               "directory", "drop --data, or give a dataset name")
            data_dir = data
        else:
            raise LcsError(
                f"--data {data!r} is neither a dataset name nor a directory",
                f"give one of {', '.join(DATASETS)}, or a directory holding the {name} data",
            )
    # An ImageFolder tree is decoded at the size the checkpoint was trained at.
    image_size = data_facts.get("image_size") if name == data_facts["dataset"] else None
    dataset = load_dataset(name, data_dir, image_size=image_size)
    images, labels = dataset.held_out()
    expected = [int(d) for d in input_shape[1:]]
    if list(images.shape[1:]) != expected:
        raise LcsError(
            f"{name} images are {'x'.join(map(str, images.shape[1:]))} but the bundle expects "
            f"{'x'.join(map(str, expected))}",
            f"validate with the data the checkpoint was trained on ({data_facts['dataset']})",
        )
    if samples is not None:
        if samples < 1:
            raise LcsError(f"--samples {samples} must be at least 1", "give a positive number of images")
        images, labels = images[:samples], labels[:samples]
    return HeldOut(images.numpy().astype(np.float32), labels.numpy(), {
        "dataset": name, "data_dir": data_dir, "split": "held_out", "samples": int(len(labels)),
    })


def resolve_checkpoint(manifest: dict[str, Any], checkpoint: Path | None) -> Path:
    """The source checkpoint: given, or recorded; it must be the file the bundle came from.

    Its size is compared before it is read, so a recorded path that names something else
    (a device, a huge file) is refused without reading it.
    """
    recorded = manifest["source"]["checkpoint"]
    path = Path(checkpoint) if checkpoint is not None else Path(recorded["path"])
    if path.exists() and not path.is_file():
        raise LcsError(f"the source checkpoint {path} is not a regular file",
                       "pass --checkpoint PATH pointing at the checkpoint this bundle was exported from")
    if not path.is_file():
        raise LcsError(
            f"the source checkpoint {path} is gone; validation needs it for PyTorch's reference logits",
            "pass --checkpoint PATH pointing at the checkpoint this bundle was exported from",
        )
    if sha256_if_size(path, recorded["bytes"]) != recorded["sha256"]:
        raise LcsError(
            f"checkpoint {path} is not the one this bundle was exported from (its size or sha256 differs)",
            "pass --checkpoint with the original checkpoint, or export the bundle again",
        )
    return path.resolve()


def sweep_alphas(alpha_facts: dict[str, Any], level_alphas: list[float]) -> list[float]:
    """Alphas to check an alpha-input artifact at: levels (or a default grid), in-between
    points, and one above the range."""
    low, high = float(alpha_facts["min"]), float(alpha_facts["max"])
    default = alpha_facts.get("discrete") or list(np.linspace(low, high, 5))
    grid = sorted({round(float(a), 9) for a in [*(level_alphas or default), low, high]})
    # 0.37 of the way, not halfway: a midpoint can sit exactly on a bit-width rounding tie.
    between = [a + 0.37 * (b - a) for a, b in zip(grid, grid[1:])]
    if len(between) > MAX_IN_BETWEEN:
        picks = np.linspace(0, len(between) - 1, MAX_IN_BETWEEN).round().astype(int)
        between = [between[i] for i in sorted(set(picks))]
    return sorted({*grid, *(round(a, 6) for a in between)}) + [round(high + OUTSIDE_STEP, 6)]


def _plan(manifest: dict[str, Any]) -> list[tuple[dict[str, Any], float, float]]:
    """(artifact entry, alpha given to it, alpha PyTorch runs at) for every check."""
    alpha_facts = manifest["source"]["alpha"]
    low, high = float(alpha_facts["min"]), float(alpha_facts["max"])
    sweep = sweep_alphas(alpha_facts, [level["alpha"] for level in manifest["levels"]])
    plan = []
    for entry in manifest["artifacts"]:
        alphas = sweep if entry["kind"] in ALPHA_INPUT_KINDS else entry["alphas"]
        plan.extend((entry, float(a), min(max(float(a), low), high)) for a in alphas)
    return plan


def validate_bundle(
    directory: Path,
    *,
    data: str | None = None,
    checkpoint: Path | None = None,
    samples: int | None = None,
    tolerances: Tolerances = Tolerances(),
    model: nn.Module | None = None,
    progress: Any = None,
    lock: bool = True,
) -> ValidationResult:
    """Check integrity, run every artifact, and record the results in the bundle.

    ``model`` skips reloading the checkpoint (export passes the one it already holds);
    ``progress`` is a ``rich.progress.Progress`` to report on, or None; ``lock`` takes the
    bundle's lock (export validates its own staging directory, which nobody else knows).
    """
    directory = Path(directory)
    with BundleLock(directory, exclusive=True) if lock else contextlib.nullcontext():
        manifest = read_manifest(directory)
        get_target(manifest["target"]["name"])  # a target whose runtime is missing: refused before any work
        with verified_copy(directory, manifest) as (copy, integrity):
            if not all(item.ok for item in integrity):
                return ValidationResult(integrity, [], manifest)
            source_path = resolve_checkpoint(manifest, checkpoint)
            if model is None:
                model, _ = load_subspace(source_path)
            held_out = load_held_out(manifest["source"]["data"], manifest["input"]["shape"], data, samples)
            reports, runtime = _run_checks(copy, manifest, model, held_out, tolerances, progress)
        result = ValidationResult(integrity, reports, manifest)
        record_results(directory, manifest, result, held_out, tolerances, runtime, source_path)
    return result


def _run_checks(copy: Path, manifest: dict[str, Any], model: nn.Module, held_out: HeldOut, tolerances: Tolerances,
                progress: Any) -> tuple[list[ParityReport], str]:
    """Every planned (artifact, alpha) check, run from the verified copy."""
    target = get_target(manifest["target"]["name"])
    runtime = target.describe_runtime()
    method = method_from_metadata(manifest["source"]["method"])
    references = ReferenceCache(model, held_out.images)
    compression_at = {round(level["alpha"], 9): level["compression"] for level in manifest["levels"]}
    plan = _plan(manifest)
    task = progress.add_task("validating", total=len(plan)) if progress is not None else None
    runners: dict[str, Any] = {}
    reports = []
    for entry, alpha, reference_alpha in plan:
        if progress is not None:
            progress.update(task, description=f"validating {entry['path']} at alpha {alpha:g}")
        compression = compression_at.get(round(reference_alpha, 9)) or method.level(reference_alpha)
        regime = parity_regime(compression, entry["details"])
        reference = references(reference_alpha)
        try:
            if entry["path"] not in runners:
                runners[entry["path"]] = target.load(copy, entry)
            logits = run_batched(runners[entry["path"]].run, held_out.images, alpha)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as error:  # noqa: BLE001 (an artifact that cannot run fails its check)
            logits = None
            failure = f"could not run it: {_one_line(error)}"
        if logits is None:
            reports.append(failed_report(entry, alpha, reference_alpha, reference, held_out.labels, regime,
                                         tolerances, runtime, failure))
        else:
            reports.append(compare(
                logits, reference, held_out.labels, artifact=entry["path"], kind=entry["kind"], alpha=alpha,
                reference_alpha=reference_alpha, regime=regime, tolerances=tolerances, runtime=runtime,
                float_error=references.float_error(reference_alpha),
            ))
        if progress is not None:
            progress.advance(task)
    return reports, runtime


def _one_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"{type(error).__name__}: {first[:300]}"


def failed_report(entry: dict[str, Any], alpha: float, reference_alpha: float, reference: np.ndarray,
                  labels: np.ndarray, regime: str, tolerances: Tolerances, runtime: str, failure: str) -> ParityReport:
    """The report of an artifact that could not be loaded or run at ``alpha``."""
    accuracy = float(np.mean(reference.argmax(1) == labels))
    return ParityReport(entry["path"], entry["kind"], float(alpha), float(reference_alpha), int(len(labels)), 0.0,
                        accuracy, 0.0, float("inf"), regime, tolerances.for_regime(regime), False, [failure], runtime)


def record_results(directory: Path, manifest: dict[str, Any], result: ValidationResult, held_out: HeldOut,
                   tolerances: Tolerances, runtime: str, source_path: Path) -> None:
    """Write the reports into the manifest (atomically) and into ``parity.json``."""
    by_artifact: dict[str, list[dict[str, Any]]] = {}
    for report in result.reports:
        by_artifact.setdefault(report.artifact, []).append(report.to_dict())
    serving_kinds = {entry["path"]: entry["kind"] for entry in manifest["artifacts"]}
    for entry in manifest["artifacts"]:
        entry["parity"] = by_artifact.get(entry["path"], [])
    for level in manifest["levels"]:
        level["parity"] = [
            report for path, reports in by_artifact.items() if serving_kinds[path] not in ALPHA_INPUT_KINDS
            for report in reports if abs(report["alpha"] - level["alpha"]) < 1e-9
        ]
    failed = sum(not r.passed for r in result.reports)
    manifest["source"]["checkpoint"]["path"] = str(source_path)
    manifest["target"]["runtime"] = runtime
    manifest["validation"] = {
        "status": "passed" if result.passed else "failed", "checked_at": now(), "runtime": runtime,
        "data": held_out.description, "tolerances": tolerances.to_dict(),
        "checks": len(result.reports), "failed": failed,
    }
    parity = {
        "target": manifest["target"]["name"], **manifest["validation"],
        "integrity": [{"path": i.path, "ok": i.ok} for i in result.integrity],
        "reports": [r.to_dict() for r in result.reports],
    }
    result.manifest = manifest
    try:
        write_manifest(directory, manifest)
        result.results_path = write_json_atomic(directory / PARITY_NAME, parity)
    except OSError as error:
        # A read-only bundle: the results must not be lost with the write. They are
        # returned (the CLI prints them) and kept in a temporary directory.
        result.record_error = f"{error.strerror or type(error).__name__} ({directory})"
        fallback = Path(tempfile.mkdtemp(prefix="lcs-validate-results-"))
        write_json_atomic(fallback / "manifest.json", manifest)
        result.results_path = write_json_atomic(fallback / PARITY_NAME, parity)
