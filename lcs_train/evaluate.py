"""Evaluating a subspace across alpha: accuracy, real compression, cost, and a plot."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lcs_train.checkpoint import Checkpoint
from lcs_train.console import deferred_interrupts
from lcs_train.cost import COST_UNITS, level_cost
from lcs_train.data import load_dataset
from lcs_train.errors import LcsError
from lcs_train.files import atomic_write_bytes
from lcs_train.restore import checkpoint_method, load_subspace
from lcs_train.subspace import at_alpha, check_model_alpha
from lcs_train.train import accuracy


@dataclass
class LevelResult:
    """One row of an evaluation."""

    alpha: float
    accuracy: float
    compression: dict[str, Any]  # the method's nominal unit at alpha (sparsity, width or bits)
    measured: dict[str, Any]  # the same, measured on the materialised level
    parameters: int
    nonzeros: int
    flops: int
    nonzero_flops: int


def parse_alphas(text: str) -> list[float]:
    """'0,0.25,0.5' -> [0.0, 0.25, 0.5]; a clear error for anything else."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LcsError(f"--alphas {text!r} is not a comma-separated list of numbers", "e.g. --alphas 0,0.5,0.9") from None
    if not values:
        raise LcsError("--alphas is empty", "e.g. --alphas 0,0.5,0.9")
    return values


def evaluate_subspace(
    model: nn.Module, checkpoint: Checkpoint, alphas: list[float], data_dir: str | None = None
) -> list[LevelResult]:
    """Held-out accuracy and cost of ``model`` at each alpha (validated against its range, and
    for a fixed-alpha baseline against its one trained alpha)."""
    for alpha in alphas:
        check_model_alpha(model, alpha)
    data = checkpoint.metadata["data"]
    dataset = load_dataset(data["dataset"], data_dir or data.get("data_dir"), image_size=data.get("image_size"))
    images, labels = dataset.held_out()
    input_shape = checkpoint.metadata["input"]["shape"][1:]
    results = []
    for alpha in alphas:
        with at_alpha(model, alpha):
            top1 = accuracy(model, images, labels)
        cost = level_cost(model, alpha, input_shape)
        results.append(LevelResult(alpha, top1, cost["compression"], cost["measured"], cost["parameters"],
                                   cost["nonzeros"], cost["flops"], cost["nonzero_flops"]))
    return results


def prepare_evaluation(path: str | Path, alphas: list[float] | None) -> tuple[nn.Module, Checkpoint, list[float]]:
    """Load ``path`` and settle the alphas to evaluate, refusing bad ones, before any work:
    ``alphas`` None is the method's default grid (a fixed-alpha baseline: its own alpha; it
    refuses any other)."""
    model, checkpoint = load_subspace(path)
    fixed = checkpoint.metadata["alpha"]["fixed"]
    if fixed is not None and alphas is None:
        alphas = [fixed]
    elif alphas is None:
        method = checkpoint_method(checkpoint)
        alphas = list(method.discrete_alphas() or [0.0, 0.25, 0.5, 0.75, 0.9])
        alphas = [a for a in alphas if a <= method.max_alpha + 1e-9]
    return model, checkpoint, [check_model_alpha(model, alpha) for alpha in alphas]


def write_report(results: list[LevelResult], baselines: dict[str, list[LevelResult]], path: Path, source: str) -> None:
    """Write the evaluation as JSON (the same facts as the printed table)."""
    report = {
        "checkpoint": source,
        "units": COST_UNITS,
        "levels": [asdict(r) for r in results],
        "baselines": {name: [asdict(r) for r in rows] for name, rows in baselines.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(report, indent=2).encode())


def plot_accuracy(results: list[LevelResult], baselines: dict[str, list[LevelResult]], path: Path, title: str) -> None:
    """Accuracy against alpha, with fixed-alpha baselines as separate points."""
    # A Ctrl-C inside matplotlib's C-extension imports would surface as "ImportError:
    # initialization failed"; it is held until the imports are done, then raised.
    with deferred_interrupts():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([r.alpha for r in results], [100 * r.accuracy for r in results], "o-", label="subspace")
    for name, rows in baselines.items():
        axis.plot([r.alpha for r in rows], [100 * r.accuracy for r in rows], "s", label=name)
    axis.set_xlabel("alpha (0 = most accurate, larger = more compressed)")
    axis.set_ylabel("held-out top-1 accuracy (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, image.getvalue())
