"""``lcs-train compare``: a subspace against its baselines, on the same held-out data.

Every checkpoint is evaluated with ``lcs_train.evaluate.evaluate_subspace`` (the function
behind ``lcs-train eval``, so the figures are the same), and each level is placed by its
*measured* compression (``lcs_train.cost``) in the method's own unit: the fraction of zero
weights (unstructured), the kept width (structured) or the bit width (quantized). A
``--fixed-alpha`` baseline contributes its one level; a baseline that is itself a family (a
universally slimmable network from ``lcs-train --baseline us``, or another subspace) is evaluated at the same alphas as the
subspace.

Checkpoints are comparable only when they were trained for the same task: the same dataset
and split, classes, input, architecture and compression method. Anything else is refused
before any evaluation, naming the file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lcs_train.checkpoint import Checkpoint
from lcs_train.console import deferred_interrupts
from lcs_train.cost import COST_UNITS
from lcs_train.errors import LcsError
from lcs_train.evaluate import LevelResult, evaluate_subspace, prepare_evaluation
from lcs_train.files import atomic_write_bytes, check_writable_output, json_bytes
from lcs_train.subspace import check_model_alpha

#: The measured unit each method's levels are placed by on the x axis, and its meaning.
X_UNITS: dict[str, tuple[str, str]] = {
    "unstructured": ("sparsity", "measured sparsity of the compressed layers (fraction of zero weights)"),
    "structured": ("width", "measured width of the compressed layers (kept / trained output channels)"),
    "quantized": ("bits", "measured bit width of the compressed layers' weights"),
}

#: What must agree between checkpoints that are compared (metadata path, description).
_SAME_TASK: tuple[tuple[tuple[str, ...], str], ...] = (
    (("data", "dataset"), "dataset"),
    (("data", "split_seed"), "data split"),
    (("data", "train_size"), "training split size"),
    (("data", "held_out_size"), "held-out split size"),
    (("classes",), "classes"),
    (("input",), "input (shape and preprocessing)"),
    (("model",), "architecture"),
    (("method", "name"), "compression method"),
)


@dataclass
class ComparedCheckpoint:
    """One evaluated checkpoint of a comparison."""

    label: str
    path: str
    role: str  # "subspace", "fixed-alpha baseline", "universally slimmable baseline" or "subspace baseline"
    method: str
    fixed_alpha: float | None
    levels: list[LevelResult]


def _lookup(metadata: dict[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = metadata
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def check_same_task(subject: tuple[Path, Checkpoint], others: Sequence[tuple[Path, Checkpoint]]) -> None:
    """Refuse a baseline trained for another task than the subspace (naming the file and
    what differs), since its accuracy would not be comparable."""
    subject_path, subject_checkpoint = subject
    for path, checkpoint in others:
        for keys, meaning in _SAME_TASK:
            mine, theirs = _lookup(subject_checkpoint.metadata, keys), _lookup(checkpoint.metadata, keys)
            if mine != theirs:
                shown = "" if meaning in ("classes", "input (shape and preprocessing)", "architecture") else f" ({theirs!r} against {mine!r})"
                raise LcsError(
                    f"{path} cannot be compared with {subject_path}: its {meaning} differs{shown}",
                    "compare checkpoints trained on the same data, classes, model and compression method",
                )


def _labels(paths: Sequence[Path]) -> list[str]:
    """File stems, or the whole paths where two stems coincide."""
    stems = [path.stem for path in paths]
    return [stem if stems.count(stem) == 1 else str(path) for stem, path in zip(stems, paths)]


def _role(checkpoint: Checkpoint, first: bool) -> str:
    if first:
        return "subspace"
    if checkpoint.metadata["alpha"]["fixed"] is not None:
        return "fixed-alpha baseline"
    family = checkpoint.metadata.get("training", {}).get("baseline")
    return "universally slimmable baseline" if family == "us" else "subspace baseline"


def _alphas_of(path: Path, model: nn.Module, alphas: list[float]) -> list[float]:
    """``alphas`` checked against ``model``'s trained range, a refusal naming the file."""
    try:
        return [check_model_alpha(model, alpha) for alpha in alphas]
    except LcsError as error:
        raise LcsError(f"{path}: {error.message}", error.hint) from None


def compare_checkpoints(
    paths: Sequence[Path], alphas: list[float] | None, out_dir: Path, data_dir: str | None = None
) -> list[ComparedCheckpoint]:
    """Load the subspace (``paths[0]``) and its baselines, check they are comparable and that
    ``out_dir`` can be written, then evaluate each on the same held-out split.

    ``alphas`` (None: the method's default grid) applies to the subspace and to baselines that
    are families; a fixed-alpha baseline is evaluated at its own alpha only.
    """
    if len(paths) < 2:
        given = "nothing" if not paths else f"only {paths[0]}"
        raise LcsError(f"compare needs a subspace and at least one baseline, got {given}",
                       "e.g. lcs-train compare SUBSPACE.safetensors FIXED-0.5.safetensors FIXED-0.9.safetensors")
    prepared = [prepare_evaluation(paths[0], alphas)] + [prepare_evaluation(path, None) for path in paths[1:]]
    if prepared[0][1].metadata["alpha"]["fixed"] is not None:
        raise LcsError(f"{paths[0]} is a fixed-alpha baseline, not a subspace",
                       "give the subspace first, then the baselines")
    check_same_task((paths[0], prepared[0][1]), [(path, p[1]) for path, p in zip(paths[1:], prepared[1:])])
    subject_alphas = prepared[0][2]
    for index, (model, checkpoint, _) in enumerate(prepared[1:], start=1):
        if checkpoint.metadata["alpha"]["fixed"] is None:
            # A family baseline is evaluated where the subspace is.
            prepared[index] = (model, checkpoint, _alphas_of(paths[index], model, subject_alphas))
    dataset = prepared[0][1].metadata["data"]["dataset"]
    if data_dir is not None and dataset != "cifar10":
        raise LcsError(f"--data-dir applies only to cifar10 checkpoints ({paths[0]} was trained on {dataset}, "
                       "which ships with lcs)", "drop --data-dir")
    for name in ("compare.json", "compare.png"):
        check_writable_output(out_dir / name, "--out")
    labels = _labels(paths)
    return [
        ComparedCheckpoint(label, str(path), _role(checkpoint, index == 0), checkpoint.metadata["method"]["name"],
                           checkpoint.metadata["alpha"]["fixed"], evaluate_subspace(model, checkpoint, level_alphas, data_dir))
        for index, (label, path, (model, checkpoint, level_alphas)) in enumerate(zip(labels, paths, prepared))
    ]


def x_unit(method: str) -> tuple[str, str]:
    """The measured unit (and its meaning) a method's levels are placed by."""
    return X_UNITS.get(method, ("sparsity", "measured sparsity of the compressed layers"))


def measured_x(level: LevelResult, unit: str) -> float:
    """Where ``level`` sits on the x axis: its measured compression in ``unit``."""
    return float(level.measured[unit])


def comparison_report(compared: list[ComparedCheckpoint]) -> dict[str, Any]:
    """The comparison as JSON-ready facts (the same as the printed table)."""
    unit, meaning = x_unit(compared[0].method)
    return {
        "x_unit": unit,
        "x_meaning": meaning,
        "units": COST_UNITS,
        "checkpoints": [
            {**{k: v for k, v in asdict(entry).items() if k != "levels"},
             "levels": [{**asdict(level), "x": measured_x(level, unit)} for level in entry.levels]}
            for entry in compared
        ],
    }


def render_plot(compared: list[ComparedCheckpoint], title: str) -> bytes:
    """Accuracy against measured compression as PNG bytes: the subspace as a line, each
    fixed-alpha baseline as a marker, each family baseline as a dashed line."""
    # Held as in lcs_train.evaluate.plot_accuracy: a Ctrl-C inside matplotlib's C-extension
    # imports would surface as an ImportError.
    with deferred_interrupts():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    unit, meaning = x_unit(compared[0].method)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    fixed_markers = iter("sD^v<>pPhX*")
    for entry in compared:
        xs = [measured_x(level, unit) for level in entry.levels]
        ys = [100 * level.accuracy for level in entry.levels]
        if entry.role == "subspace":
            axis.plot(xs, ys, "o-", linewidth=2, label=f"{entry.label} (subspace)")
        elif entry.fixed_alpha is None:
            axis.plot(xs, ys, "o--", label=f"{entry.label} ({entry.role})")
        else:
            axis.plot(xs, ys, next(fixed_markers, "s"), markersize=8, label=f"{entry.label} (fixed alpha {entry.fixed_alpha:g})")
    if unit in ("width", "bits"):
        axis.invert_xaxis()  # more compressed to the right, as for sparsity
    axis.set_xlabel(meaning)
    axis.set_ylabel("held-out top-1 accuracy (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    return image.getvalue()


def write_comparison(report: dict[str, Any], plot: bytes, out_dir: Path) -> tuple[Path, Path]:
    """Write compare.json and compare.png into ``out_dir``, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return (atomic_write_bytes(out_dir / "compare.json", json_bytes(report)),
            atomic_write_bytes(out_dir / "compare.png", plot))
