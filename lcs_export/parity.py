"""The parity harness every target shares: an artifact's logits against PyTorch's.

The reference is the subspace itself at the same alpha (``at_alpha``), on real held-out
images, batched. A report holds top-1 agreement, the accuracy of both, and the largest
|logit difference|; pass or fail follows the thresholds of its regime:

- ``float``: levels stored in float (sparsity, width): agreement and max |logit diff|;
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: an infinite difference (a broken output) is written as null."""
        data = asdict(self)
        if not np.isfinite(self.max_abs_logit_diff):
            data["max_abs_logit_diff"] = None
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
) -> ParityReport:
    """Score an artifact's logits against the reference's and decide pass/fail."""
    if artifact_logits.shape != reference.shape:
        return ParityReport(
            artifact, kind, alpha, reference_alpha, len(labels), 0.0, _accuracy(reference, labels), 0.0,
            float("inf"), regime, tolerances.for_regime(regime), False,
            [f"output shape {list(artifact_logits.shape)} != expected {list(reference.shape)}"], runtime,
        )
    agreement = float(np.mean(artifact_logits.argmax(1) == reference.argmax(1)))
    accuracy_reference = _accuracy(reference, labels)
    accuracy_artifact = _accuracy(artifact_logits, labels)
    difference = np.abs(artifact_logits - reference)
    max_diff = float(np.nanmax(difference)) if np.isfinite(difference).all() else float("inf")
    thresholds = tolerances.for_regime(regime)
    failures = []
    if agreement < thresholds["min_agreement"]:
        failures.append(f"top-1 agreement {agreement:.2%} < {thresholds['min_agreement']:.2%}")
    if "max_logit_diff" in thresholds and not max_diff <= thresholds["max_logit_diff"]:
        failures.append(f"max |logit diff| {max_diff:.3g} > {thresholds['max_logit_diff']:g}")
    if "max_accuracy_drop" in thresholds:
        drop = abs(accuracy_reference - accuracy_artifact)
        if drop > thresholds["max_accuracy_drop"] + 1e-12:
            failures.append(f"accuracy differs by {drop:.2%} > {thresholds['max_accuracy_drop']:.2%}")
    return ParityReport(
        artifact, kind, float(alpha), float(reference_alpha), int(len(labels)), agreement, accuracy_reference,
        accuracy_artifact, max_diff, regime, thresholds, not failures, failures, runtime,
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
