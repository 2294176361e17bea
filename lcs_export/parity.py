"""The parity harness every target shares: an artifact's logits against PyTorch's.

The reference is the subspace itself at the same alpha (``at_alpha``), on real held-out
images, batched. A report holds top-1 agreement, the accuracy of both, and the largest
|logit difference|; pass or fail follows the thresholds of its regime:

- ``float``: levels stored in float (sparsity, width): agreement and max |logit diff|. Where
  the difference is over the threshold, the threshold is raised to ``float_error_factor``
  times PyTorch's own float32 error on the images that differ most (the level's logits in
  float32 against the same level computed in float64): a badly conditioned level (a 95 %
  sparse network with GroupNorm over 1x1 maps amplifies the last bit of a convolution ten
  thousand times) cannot be reproduced closer than that by any runtime that sums in another
  order, and the report then says so (``reference_float32_error``); a top-1 swap between two
  classes whose PyTorch logits are within twice that threshold is then a tie, not a
  disagreement (``agreement`` still counts it). A well-conditioned level, whose float32 error
  is far below the threshold, keeps the fixed one;
- ``quantized``: levels stored in few bits, or computed at reduced precision, where a
  rounding flip near a quantization boundary is expected: agreement and accuracy drop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lcs_train.errors import LcsError
from lcs_train.materialize import materialize_level
from lcs_train.subspace import at_alpha

#: Batch size for both PyTorch and the artifact runtimes.
BATCH_SIZE = 256
#: Target ``details["precision"]`` values that mean the artifact does not compute in float32.
REDUCED_PRECISIONS = ("float16", "fp16", "int8", "int4", "int2", "palettized", "quantized")


@dataclass(frozen=True)
class Tolerances:
    """Pass/fail thresholds (fractions, not percent)."""

    float_agreement: float = 0.999
    float_max_logit_diff: float = 1e-3
    quantized_agreement: float = 0.99
    quantized_accuracy_drop: float = 0.005
    #: A float artifact may differ from PyTorch by this many times PyTorch's own float32
    #: error (against float64) on the same images, where that is above ``float_max_logit_diff``
    #: (0: never).
    float_error_factor: float = 2.0

    def for_regime(self, regime: str) -> dict[str, float]:
        """The thresholds that decide a report of ``regime``."""
        if regime == "quantized":
            return {"min_agreement": self.quantized_agreement, "max_accuracy_drop": self.quantized_accuracy_drop}
        return {"min_agreement": self.float_agreement, "max_logit_diff": self.float_max_logit_diff}

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class ParityReport:
    """One artifact checked at one alpha."""

    artifact: str
    kind: str
    alpha: float
    reference_alpha: float
    samples: int
    agreement: float
    accuracy_reference: float
    accuracy_artifact: float
    max_abs_logit_diff: float
    regime: str
    thresholds: dict[str, float]
    passed: bool
    failures: list[str] = field(default_factory=list)
    runtime: str = ""
    #: PyTorch's own float32 error on the images that differed most, where the float check
    #: needed it (see the module docstring); None where it was not measured.
    reference_float32_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: an infinite difference (a broken output) is written as null; an error
        that was not measured is left out."""
        data = asdict(self)
        if not np.isfinite(self.max_abs_logit_diff):
            data["max_abs_logit_diff"] = None
        if data["reference_float32_error"] is None:
            del data["reference_float32_error"]
        return data


def parity_regime(compression: dict[str, Any], details: dict[str, Any]) -> str:
    """``quantized`` for bit-width levels or reduced-precision artifacts, else ``float``."""
    if "bits" in compression:
        return "quantized"
    precision = str(details.get("precision", details.get("compute_precision", ""))).lower()
    if any(word in precision for word in REDUCED_PRECISIONS) or details.get("quantized_storage"):
        return "quantized"
    return "float"


def reference_logits(model: nn.Module, images: np.ndarray, alpha: float) -> np.ndarray:
    """PyTorch's logits for ``images`` with the subspace at ``alpha``, batched."""
    outputs = []
    with torch.inference_mode(), at_alpha(model, alpha):
        for start in range(0, len(images), BATCH_SIZE):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + BATCH_SIZE]))
            outputs.append(model(batch).float().numpy())
    return np.concatenate(outputs)


#: Images (those an artifact differs most on) whose float32 error is measured in float64.
FLOAT_ERROR_ROWS = 64


def float32_error(model: nn.Module, images: np.ndarray, alpha: float, reference: np.ndarray | None = None) -> float:
    """How far PyTorch's float32 logits of the level at ``alpha`` are from exact arithmetic:
    the largest |difference| on ``images`` between the subspace in float32 (``reference``,
    when already computed) and its level, materialised (the same float32 weights, masks and
    codes), computed in float64."""
    if reference is None:
        reference = reference_logits(model, images, alpha)
    level = materialize_level(model, alpha, list(images.shape[1:])).double()
    with torch.inference_mode():
        exact = level(torch.from_numpy(np.ascontiguousarray(images)).double()).numpy()
    return float(np.abs(reference.astype(np.float64) - exact).max())


def run_batched(run: Callable[[np.ndarray, float], np.ndarray], images: np.ndarray, alpha: float) -> np.ndarray:
    """An artifact runner's logits for ``images`` at ``alpha``, batched."""
    outputs = [np.asarray(run(np.ascontiguousarray(images[s:s + BATCH_SIZE]), alpha), dtype=np.float64)
               for s in range(0, len(images), BATCH_SIZE)]
    return np.concatenate(outputs)


def compare(
    artifact_logits: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    *,
    artifact: str,
    kind: str,
    alpha: float,
    reference_alpha: float,
    regime: str,
    tolerances: Tolerances,
    runtime: str = "",
    float_error: Callable[[np.ndarray], float | None] | None = None,
) -> ParityReport:
    """Score an artifact's logits against the reference's and decide pass/fail.

    ``float_error(rows)`` gives PyTorch's own float32 error on those rows of the images
    (``float32_error``); without it a float report keeps the fixed logit threshold.
    """
    if artifact_logits.shape != reference.shape:
        return ParityReport(
            artifact, kind, alpha, reference_alpha, len(labels), 0.0, _accuracy(reference, labels), 0.0,
            float("inf"), regime, tolerances.for_regime(regime), False,
            [f"output shape {list(artifact_logits.shape)} != expected {list(reference.shape)}"], runtime,
        )
    agreed = artifact_logits.argmax(1) == reference.argmax(1)
    agreement = float(np.mean(agreed))
    accuracy_reference = _accuracy(reference, labels)
    accuracy_artifact = _accuracy(artifact_logits, labels)
    difference = np.abs(artifact_logits - reference)
    max_diff = float(np.nanmax(difference)) if np.isfinite(difference).all() else float("inf")
    thresholds = tolerances.for_regime(regime)
    measured_error = None
    if (float_error is not None and tolerances.float_error_factor > 0 and "max_logit_diff" in thresholds
            and np.isfinite(max_diff) and max_diff > thresholds["max_logit_diff"]):
        worst = np.argsort(-difference.max(axis=1), kind="stable")[:FLOAT_ERROR_ROWS]
        measured_error = float_error(np.sort(worst))
    decided = agreement
    if measured_error is not None:
        measured_error = float(measured_error)
        thresholds["max_logit_diff"] = max(thresholds["max_logit_diff"], tolerances.float_error_factor * measured_error)
        # Logits each within the threshold can only swap two classes whose PyTorch logits are
        # within twice it; where the threshold is float32's own resolution such a swap is a tie.
        rows = np.flatnonzero(~agreed)
        margins = reference[rows, reference.argmax(1)[rows]] - reference[rows, artifact_logits.argmax(1)[rows]]
        decided = 1.0 - float(np.sum(margins > 2 * thresholds["max_logit_diff"])) / len(agreed)
    failures = []
    if decided < thresholds["min_agreement"]:
        failures.append(f"top-1 agreement {decided:.2%} < {thresholds['min_agreement']:.2%}" + (
            " (swaps within float32's resolution counted as ties)" if decided != agreement else ""))
    if "max_logit_diff" in thresholds and not max_diff <= thresholds["max_logit_diff"]:
        failures.append(f"max |logit diff| {max_diff:.3g} > {thresholds['max_logit_diff']:.3g}" + (
            f" ({tolerances.float_error_factor:g}x PyTorch's own float32 error {measured_error:.3g} on these images)"
            if measured_error is not None and thresholds["max_logit_diff"] > tolerances.float_max_logit_diff else ""))
    if "max_accuracy_drop" in thresholds:
        drop = abs(accuracy_reference - accuracy_artifact)
        if drop > thresholds["max_accuracy_drop"] + 1e-12:
            failures.append(f"accuracy differs by {drop:.2%} > {thresholds['max_accuracy_drop']:.2%}")
    return ParityReport(
        artifact, kind, float(alpha), float(reference_alpha), int(len(labels)), agreement, accuracy_reference,
        accuracy_artifact, max_diff, regime, thresholds, not failures, failures, runtime, measured_error,
    )


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == labels))


class ReferenceCache:
    """PyTorch reference logits per alpha, computed once and shared by every artifact."""

    def __init__(self, model: nn.Module, images: np.ndarray) -> None:
        self.model = model
        self.images = images
        self._logits: dict[float, np.ndarray] = {}

    def __call__(self, alpha: float) -> np.ndarray:
        key = round(float(alpha), 9)
        if key not in self._logits:
            self._logits[key] = reference_logits(self.model, self.images, alpha).astype(np.float64)
        return self._logits[key]

    def float_error(self, alpha: float) -> Callable[[np.ndarray], float | None]:
        """``compare``'s ``float_error`` for the reference at ``alpha``: PyTorch's own float32
        error on the given rows of the images, or None where the level cannot be materialised
        (the fixed threshold then stands)."""
        def measure(rows: np.ndarray) -> float | None:
            try:
                return float32_error(self.model, self.images[rows], alpha, self(alpha)[rows])
            except LcsError:
                return None

        return measure
