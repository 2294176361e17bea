"""The parity harness: scoring, regimes, thresholds, and PyTorch references on real data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rich.console import Console

from lcs_export.console import parity_table
from lcs_export.parity import ReferenceCache, Tolerances, compare, float32_error, parity_regime, reference_logits
from lcs_export.validate import load_held_out, sweep_alphas
from lcs_train import Point, Unstructured, to_subspace
from lcs_train.data import load_dataset
from lcs_train.materialize import materialize_level
from lcs_train.restore import load_subspace
from lcs_train.subspace import at_alpha


def _score(artifact: np.ndarray, reference: np.ndarray, labels: np.ndarray, regime: str = "float",
           tolerances: Tolerances = Tolerances()):
    return compare(artifact, reference, labels, artifact="a.onnx", kind="level", alpha=0.5, reference_alpha=0.5,
                   regime=regime, tolerances=tolerances)


@pytest.fixture(scope="module")
def logits() -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(0)
    reference = generator.normal(size=(1000, 10))
    return reference, reference.argmax(1)


def test_identical_logits_pass_with_full_agreement(logits: tuple[np.ndarray, np.ndarray]) -> None:
    reference, labels = logits
    report = _score(reference + 1e-5, reference, labels)
    assert report.passed and report.agreement == 1.0 and report.max_abs_logit_diff == pytest.approx(1e-5)
    assert report.accuracy_reference == report.accuracy_artifact == 1.0


def test_float_levels_fail_on_a_small_logit_drift_even_when_top1_agrees(logits: tuple[np.ndarray, np.ndarray]) -> None:
    reference, labels = logits
    report = _score(reference + 2e-3, reference, labels)
    assert not report.passed and report.agreement == 1.0
    assert report.failures == ["max |logit diff| 0.002 > 0.001"]


def test_a_float_threshold_is_raised_only_to_what_float32_itself_can_meet(
        logits: tuple[np.ndarray, np.ndarray]) -> None:
    reference, labels = logits
    drifted = reference.copy()
    drifted[7] += 0.03  # one image differs most
    asked: list[np.ndarray] = []

    def error(rows: np.ndarray) -> float:
        asked.append(rows)
        return 0.02

    report = compare(drifted, reference, labels, artifact="a.onnx", kind="level", alpha=0.5, reference_alpha=0.5,
                     regime="float", tolerances=Tolerances(), float_error=error)
    assert report.passed and report.reference_float32_error == 0.02
    assert report.thresholds["max_logit_diff"] == pytest.approx(0.04)
    assert 7 in asked[0] and len(asked[0]) == 64 and list(asked[0]) == sorted(asked[0])
    assert report.to_dict()["reference_float32_error"] == 0.02
    console = Console(width=200, record=True)
    console.print(parity_table([report]))
    assert "pass (torch fp32 error 2.0e-02)" in console.export_text()
    # Twice that error is the limit; the message says where the threshold came from.
    drifted[7] += 0.03
    report = compare(drifted, reference, labels, artifact="a.onnx", kind="level", alpha=0.5, reference_alpha=0.5,
                     regime="float", tolerances=Tolerances(), float_error=error)
    assert report.failures == ["max |logit diff| 0.06 > 0.04 (2x PyTorch's own float32 error 0.02 on these images)"]
    # A well-conditioned level keeps the fixed threshold, and a difference under it is never
    # measured against float64; factor 0 turns the raise off.
    tiny = compare(reference + 2e-3, reference, labels, artifact="a.onnx", kind="level", alpha=0.5,
                   reference_alpha=0.5, regime="float", tolerances=Tolerances(), float_error=lambda rows: 1e-6)
    assert tiny.failures == ["max |logit diff| 0.002 > 0.001"] and tiny.reference_float32_error == 1e-6

    def never(rows: np.ndarray) -> float:
        raise AssertionError("measured although the difference was under the threshold")

    assert compare(reference + 1e-5, reference, labels, artifact="a.onnx", kind="level", alpha=0.5,
                   reference_alpha=0.5, regime="float", tolerances=Tolerances(), float_error=never).passed
    off = compare(drifted, reference, labels, artifact="a.onnx", kind="level", alpha=0.5, reference_alpha=0.5,
                  regime="float", tolerances=Tolerances(float_error_factor=0), float_error=never)
    assert not off.passed and off.reference_float32_error is None and "reference_float32_error" not in off.to_dict()


def _ill_conditioned_subspace() -> nn.Module:
    """A GroupNorm over 1x1 maps whose inputs all sit near 1e4 and differ by about one:
    normalising them cancels most of float32's digits (what a 95 % sparse MobileNetV2's
    GroupNorms over 1x1 maps do to the last bit of a convolution)."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1),
                            nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():
        network[2].bias.fill_(1e4)
    return to_subspace(network, Unstructured(), Point()).eval()


def test_a_level_float32_cannot_resolve_passes_within_twice_its_float32_error_and_no_further(
    subspace_checkpoint: Callable[[str, str], Path],
) -> None:
    model = _ill_conditioned_subspace()
    held_out, labels = load_dataset("digits").held_out()
    images, labels = held_out[:200].numpy(), labels[:200].numpy()
    error = float32_error(model, images, 0.5)
    assert error > 5e-3  # PyTorch's own float32 logits are this far from exact arithmetic
    with torch.inference_mode():
        exact = materialize_level(model, 0.5, [1, 8, 8]).double()(torch.from_numpy(images).double()).numpy()
    references = ReferenceCache(model, images)

    def score(logits: np.ndarray, measure: bool = True):
        return compare(logits, references(0.5), labels, artifact="exact", kind="level", alpha=0.5,
                       reference_alpha=0.5, regime="float", tolerances=Tolerances(),
                       float_error=references.float_error(0.5) if measure else None)

    assert not score(exact, measure=False).passed  # the fixed 1e-3 alone refuses exact arithmetic
    report = score(exact)
    assert report.passed and report.reference_float32_error == pytest.approx(error)
    assert report.thresholds["max_logit_diff"] == pytest.approx(2 * error)
    # Exact arithmetic even picks another class where PyTorch's top two are that close: a tie.
    assert report.agreement < 1.0
    moved = exact.copy()
    moved[:, 0] += 3 * error
    assert not score(moved).passed
    # A swap of two classes far apart is a disagreement, threshold raised or not.
    swapped = exact.copy()
    order = np.argsort(swapped, axis=1)
    far = np.flatnonzero(np.take_along_axis(swapped, order[:, -1:], 1)[:, 0]
                         - np.take_along_axis(swapped, order[:, :1], 1)[:, 0] > 10 * error)[:2]
    swapped[far, order[far, -1]], swapped[far, order[far, 0]] = swapped[far, order[far, 0]], swapped[far, order[far, -1]]
    assert [f for f in score(swapped).failures if f.startswith("top-1 agreement")]
    # A well-conditioned subspace's float32 error is far below the fixed threshold.
    tiny, _ = load_subspace(subspace_checkpoint("unstructured", "line"))
    assert float32_error(tiny, images, 0.5) < 1e-4


def test_quantized_levels_tolerate_a_few_flips_but_not_an_accuracy_drop(logits: tuple[np.ndarray, np.ndarray]) -> None:
    reference, labels = logits
    flipped = reference.copy()
    flipped[:4] = np.roll(flipped[:4], 1, axis=1)  # 4 of 1000 change their top-1: 99.6% agreement
    assert _score(flipped, reference, labels, "quantized").passed
    assert not _score(flipped, reference, labels, "float").passed
    many = reference.copy()
    many[:20] = np.roll(many[:20], 1, axis=1)
    report = _score(many, reference, labels, "quantized")
    assert not report.passed and len(report.failures) == 2  # agreement 98% and accuracy -2 points
    loose = Tolerances(quantized_agreement=0.9, quantized_accuracy_drop=0.05)
    assert _score(many, reference, labels, "quantized", loose).passed


def test_a_wrong_shape_or_non_finite_output_fails_cleanly(logits: tuple[np.ndarray, np.ndarray]) -> None:
    reference, labels = logits
    assert not _score(reference[:, :5], reference, labels).passed
    broken = reference.copy()
    broken[0, 0] = np.nan
    report = _score(broken, reference, labels)
    assert not report.passed and report.to_dict()["max_abs_logit_diff"] is None


def test_regime_follows_bits_or_reduced_precision() -> None:
    assert parity_regime({"bits": 4}, {}) == "quantized"
    assert parity_regime({"sparsity": 0.5}, {}) == "float"
    assert parity_regime({"sparsity": 0.5}, {"compute_precision": "float16"}) == "quantized"
    assert parity_regime({"width": 0.5}, {"precision": "float32"}) == "float"


def test_alpha_sweep_covers_levels_in_between_points_and_one_clamped_alpha() -> None:
    alphas = sweep_alphas({"min": 0.0, "max": 0.95, "discrete": None}, [0.0, 0.5, 0.9])
    assert {0.0, 0.5, 0.9, 0.95} <= set(alphas)
    assert alphas[-1] > 0.95
    assert any(0.0 < a < 0.5 for a in alphas) and any(0.5 < a < 0.9 for a in alphas)
    quantized = sweep_alphas({"min": 0.0, "max": 1.0, "discrete": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]}, [])
    in_between = [a for a in quantized if a <= 1.0 and round(a * 5, 6) % 1]
    assert all(abs(a * 5 % 1 - 0.5) > 0.1 for a in in_between)  # never on a rounding tie


def test_reference_is_the_subspace_at_alpha_and_batching_does_not_change_it(
    subspace_checkpoint: Callable[[str, str], Path]
) -> None:
    model, checkpoint = load_subspace(subspace_checkpoint("unstructured", "line"))
    held_out = load_held_out(checkpoint.metadata["data"], checkpoint.metadata["input"]["shape"], samples=300)
    assert held_out.images.shape == (300, 1, 8, 8) and held_out.description["dataset"] == "digits"
    batched = reference_logits(model, held_out.images, 0.5)
    with torch.inference_mode(), at_alpha(model, 0.5):
        one_by_one = np.concatenate([model(torch.from_numpy(x[None])).numpy() for x in held_out.images[:20]])
    np.testing.assert_allclose(batched[:20], one_by_one, atol=1e-5)
    cache = ReferenceCache(model, held_out.images)
    assert cache(0.5) is cache(0.5000000001)
    assert not np.allclose(cache(0.0), cache(0.9))
    accuracy = float(np.mean(cache(0.0).argmax(1) == held_out.labels))
    assert accuracy > 0.5  # real digits through a trained subspace, not random tensors
