"""Kept BatchNorm (``--norm batch``, the default for networks built with BatchNorm): batch
statistics in training, running statistics per level at inference, from a table filled by
recalibration and interpolated by one rule that PyTorch, materialised levels and the
alpha-input graphs share, so that every target matches PyTorch.

Small on purpose: a four-layer network for the rules, torchvision's ResNet18 at 32 px (64 px
for structured levels) with random weights and a few steps for the exports, each subspace
built and recalibrated once per module.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from helpers import (artifact_parity, digits_rgb, randomize_weights, recalibrate_plain_batch_norms, tiny_config,
                     train_steps)
from lcs_export.export import build_alpha_graph, build_levels
from lcs_export.parity import Tolerances, compare, reference_logits
from lcs_train import Line, Point, Quantized, Structured, Unstructured, at_alpha, load_subspace, to_subspace
from lcs_train.calibrate import batch_norm_layers, calibrate_activation_ranges, recalibrate_batch_norm
from lcs_train.checkpoint import load_checkpoint
from lcs_train.errors import LcsError
from lcs_train.layers import CompressibleBatchNorm, CompressibleNorm, interpolate_rows
from lcs_train.materialize import materialize_level
from lcs_train.subspace import mark_fixed_alpha
from lcs_train.train import Trainer, validate_config
from targets import get_target
from targets.base import SWITCH_ONCE
from train_helpers import rewrite_checkpoint

pytestmark = pytest.mark.xdist_group("batch_norm")  # the module's subspaces are built once


def small_network() -> nn.Module:
    """conv-BN-relu twice, pool, classifier: the middle conv is compressed (the default rule)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


@pytest.fixture()
def small_subspace() -> nn.Module:
    torch.manual_seed(0)
    model = to_subspace(small_network(), Unstructured(max_sparsity=0.9), Line(), norm="batch")
    randomize_weights(model, seed=1)
    return model.eval()


# --- the rule --------------------------------------------------------------------------------


def test_statistics_are_interpolated_linearly_between_neighbouring_grid_rows() -> None:
    table = torch.arange(12.0).reshape(4, 3) ** 2
    assert torch.equal(interpolate_rows(table, torch.tensor([2.0])), table[2])  # a grid point is its row, exactly
    assert torch.allclose(interpolate_rows(table, torch.tensor([1.25])), 0.75 * table[1] + 0.25 * table[2])
    method = Unstructured(max_sparsity=0.9)
    grid = method.statistics_alphas()
    assert len(grid) == 11 and grid[0] == 0.0 and grid[-1] == pytest.approx(0.9)
    assert float(method.statistics_position(torch.tensor([0.45]), 11)) == pytest.approx(5.0)
    assert float(method.statistics_position(torch.tensor([1.0]), 11)) == 10.0  # beyond the range: the last row
    # Quantized: one row per bit width; an alpha between widths takes the row of the width it runs at.
    quantized = Quantized()
    assert quantized.statistics_alphas() == quantized.discrete_alphas()
    for alpha, row in ((0.0, 0), (0.45, 2), (0.55, 3), (1.0, 5)):
        bits = int(quantized.bits(torch.tensor([alpha])))
        assert float(quantized.statistics_position(torch.tensor([alpha]), 6)) == row == 8 - bits


def test_eval_normalises_with_the_interpolated_row_and_training_with_the_batch(small_subspace: nn.Module) -> None:
    norm = small_subspace[4]
    assert isinstance(norm, CompressibleBatchNorm)
    with torch.no_grad():
        norm.level_mean.copy_(torch.randn(norm.level_mean.shape))
        norm.level_var.copy_(torch.rand(norm.level_var.shape) + 0.5)
    grid = norm.method.statistics_alphas()
    alpha = 0.25 * grid[3] + 0.75 * grid[4]
    x = torch.randn(4, 16, 5, 5)
    norm.alpha = alpha
    scale, shift = norm.interpolated("weight", torch.tensor([alpha])), norm.interpolated("bias", torch.tensor([alpha]))
    mean = 0.25 * norm.level_mean[3] + 0.75 * norm.level_mean[4]
    var = 0.25 * norm.level_var[3] + 0.75 * norm.level_var[4]
    with torch.no_grad():
        assert torch.allclose(norm(x), F.batch_norm(x, mean, var, scale, shift, False, 0.0, norm.eps), atol=1e-5)
        norm.train()
        assert torch.allclose(norm(x), F.batch_norm(x, None, None, scale, shift, True, 0.0, norm.eps), atol=1e-5)
        norm.explicit_affine = True  # the alpha-input graphs' form
        norm.eval()
        assert torch.allclose(norm(x), F.batch_norm(x, mean, var, scale, shift, False, 0.0, norm.eps), atol=1e-5)


# --- recalibration ---------------------------------------------------------------------------


def test_recalibration_fills_each_row_as_batch_norm_recalibrated_at_that_level(small_subspace: nn.Module) -> None:
    images, _ = digits_rgb(64)
    x = images[:8]
    with torch.no_grad(), at_alpha(small_subspace, 0.5):
        before = small_subspace(x)
    assert recalibrate_batch_norm(small_subspace, images, batch_size=16) == 11
    assert not small_subspace.training and all(layer.alpha == 0.0 for layer in batch_norm_layers(small_subspace))
    with torch.no_grad(), at_alpha(small_subspace, 0.5):
        assert not torch.allclose(small_subspace(x), before, atol=1e-3)  # eval now uses the new statistics
    grid = small_subspace[4].method.statistics_alphas()
    for row in (0, 4, 10):
        # A direct recalibration: the materialised level's plain BatchNorms, momentum=None,
        # on the same batches.
        level = materialize_level(small_subspace, grid[row])
        assert recalibrate_plain_batch_norms(level, images, 16) == [level[1], level[4]]
        for index in (1, 4):
            assert torch.allclose(small_subspace[index].level_mean[row], level[index].running_mean, atol=1e-5), (row, index)
            assert torch.allclose(small_subspace[index].level_var[row], level[index].running_var, atol=1e-5), (row, index)
    assert not torch.allclose(small_subspace[4].level_var[0], small_subspace[4].level_var[10])  # the levels differ


def test_a_fixed_alpha_baseline_fills_every_row_with_its_own_level(small_subspace: nn.Module) -> None:
    images, _ = digits_rgb(32)
    mark_fixed_alpha(small_subspace, 0.45)
    recalibrate_batch_norm(small_subspace, images, batch_size=16)
    table = small_subspace[4].level_mean
    assert torch.equal(table, table[:1].expand_as(table))


# --- the --norm choice -----------------------------------------------------------------------


def test_norm_group_keeps_the_old_behaviour_and_auto_keeps_torchvision_batch_norm(tmp_path: Path) -> None:
    # The library's default, and --norm group: BatchNorm becomes the method's GroupNorm.
    converted = to_subspace(small_network(), Unstructured(), Point())
    assert isinstance(converted[1], CompressibleNorm) and converted[1].kind == "group"
    assert not batch_norm_layers(converted) and not any("level_mean" in k for k in converted.state_dict())
    torchvision_model = {"model": "torchvision:resnet18", "epochs": 1}
    group = Trainer(tiny_config("unstructured", "point", norm="group", **torchvision_model), tmp_path / "g.safetensors")
    assert group.norm == "group" and not batch_norm_layers(group.model)
    auto = Trainer(tiny_config("unstructured", "point", **torchvision_model), tmp_path / "a.safetensors")
    assert auto.norm == "batch" and len(batch_norm_layers(auto.model)) == 20
    # Built-in networks take the method's norm unless asked for BatchNorm.
    assert Trainer(tiny_config("unstructured", "point"), tmp_path / "c.safetensors").norm == "group"
    for norm, method, message in (("group", "structured", "--norm group does not apply to structured"),
                                  ("instance", "quantized", "--norm instance does not apply to quantized"),
                                  ("layer", "unstructured", "unknown --norm 'layer'")):
        with pytest.raises(LcsError, match=message):
            validate_config(tiny_config(method, "point", norm=norm))


# --- training, checkpoint, evaluation --------------------------------------------------------


@pytest.fixture(scope="module")
def trained_batch_norm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, Path]:
    """cPreResNet11 with BatchNorm (``--norm batch``) after one epoch on the digits."""
    path = tmp_path_factory.mktemp("batch-norm") / "subspace.safetensors"
    trainer = Trainer(tiny_config("unstructured", "line", epochs=1, norm="batch"), path)
    trainer.fit()
    return trainer, path


def test_checkpoint_round_trip_holds_the_recalibrated_tables(trained_batch_norm: tuple[Trainer, Path],
                                                              tmp_path: Path) -> None:
    trainer, path = trained_batch_norm
    metadata = load_checkpoint(path).metadata
    assert (metadata["norm"], metadata["format_version"], metadata["training"]["norm"]) == ("batch", 2, "batch")
    loaded, _ = load_subspace(path)
    x = trainer.test_images[:16]
    trainer.model.eval()
    for alpha in (0.0, 0.3, 0.95):  # 0.3: between two rows
        with torch.no_grad(), at_alpha(loaded, alpha), at_alpha(trainer.model, alpha):
            assert torch.equal(loaded(x), trainer.model(x))
    # The tables are those of the final weights: recalibrating again changes nothing.
    again = copy.deepcopy(loaded)
    recalibrate_batch_norm(again, trainer.recalibration_images(), 128)
    for mine, theirs in zip(batch_norm_layers(loaded), batch_norm_layers(again)):
        assert torch.allclose(mine.level_mean, theirs.level_mean, atol=1e-5)
        assert torch.allclose(mine.level_var, theirs.level_var, atol=1e-5)
    assert metadata["history"][0]["accuracy"]["0"] > 0.5  # measured with the recalibrated tables
    # A file claiming the old format cannot hold a kept BatchNorm.
    edited = rewrite_checkpoint(path, tmp_path / "edited.safetensors", lambda m: m.update(format_version=1))
    with pytest.raises(LcsError, match="norm is 'batch', which format_version 1 cannot hold"):
        load_subspace(edited)


def test_group_norm_checkpoints_stay_format_1(subspace_checkpoint: Callable[[str, str], Path]) -> None:
    metadata = load_checkpoint(subspace_checkpoint("unstructured", "line")).metadata
    assert (metadata["norm"], metadata["format_version"]) == ("group", 1)


def test_resuming_with_another_norm_names_the_norm_to_use(trained_batch_norm: tuple[Trainer, Path],
                                                          tmp_path: Path) -> None:
    _, path = trained_batch_norm
    copy_path = tmp_path / "subspace.safetensors"
    copy_path.write_bytes(path.read_bytes())
    with pytest.raises(LcsError, match="resume with --norm batch"):
        Trainer(tiny_config("unstructured", "line", epochs=2), copy_path, resume=True)


# --- export parity: the small network on every target, ResNet18 on ONNX -----------------------

#: Slow exports (ResNet18's alpha-input graphs: a sort per layer to trace and run, about
#: 150 s each on 2 cores), run with LCS_TORCHVISION_EXPORTS=1 like tests/test_torchvision_models.py's.
every_export = pytest.mark.skipif(os.environ.get("LCS_TORCHVISION_EXPORTS") != "1",
                                  reason="ResNet18's alpha-input graphs take minutes: run with LCS_TORCHVISION_EXPORTS=1")
METHODS = {"unstructured": Unstructured(), "structured": Structured(), "quantized": Quantized()}


class Subspace:
    """A subspace with kept BatchNorms, recalibrated on real digits, and held-out rows.

    ``steps`` > 0 trains that many steps first (ResNet18: the loss must fall); otherwise the
    weights are seeded random draws, the activation ranges calibrated (quantized levels)."""

    def __init__(self, plain: nn.Module, method_name: str, size: int, steps: int = 0) -> None:
        torch.manual_seed(0)
        method = METHODS[method_name]
        self.size = size
        self.model = to_subspace(plain, method, Line(), norm="batch")
        images, labels = digits_rgb(64, size)
        self.losses: list[float] = []
        if steps:
            self.losses = train_steps(self.model, images[:16], labels[:16], [0.0, method.max_alpha], steps=steps, lr=0.005)
        else:
            randomize_weights(self.model, seed=2)
            calibrate_activation_ranges(self.model, images[:32])
        recalibrate_batch_norm(self.model, images[:32], batch_size=16)
        self.model.eval()
        self.images, self.labels = images[32:], labels[32:]

    @property
    def input_shape(self) -> list[int]:
        return [3, self.size, self.size]


class SmallNetwork(nn.Module):
    """``small_network`` with a traceable flatten (structured levels follow channels through it)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = small_network()[:-2]
        self.classifier = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(x).flatten(1))


@pytest.fixture(scope="module")
def subspace() -> Callable[[str, str], Subspace]:
    cache: dict[tuple[str, str], Subspace] = {}

    def get(model: str, method: str) -> Subspace:
        if (model, method) not in cache:
            cache[model, method] = (Subspace(SmallNetwork(), method, 16) if model == "small" else
                                    Subspace(torchvision.models.resnet18(num_classes=10), method, 32, steps=4))
        return cache[model, method]

    return get


def test_resnet18_with_kept_batch_norm_trains(subspace: Callable[[str, str], Subspace]) -> None:
    run = subspace("resnet18", "unstructured")
    assert min(run.losses[-2:]) < min(run.losses[:2]), run.losses
    assert all(isinstance(m, CompressibleBatchNorm) for m in run.model.modules() if isinstance(m, CompressibleNorm))


def _level_reports(directory: Path, run: Subspace, target_name: str, alphas: list[float]):
    target = get_target(target_name)
    levels = build_levels(run.model, alphas, run.input_shape)
    artifacts = target.export_levels(levels, run.images[:1], directory, target.parse_options({}))
    return [report for artifact, level in zip(artifacts, levels)
            for report in artifact_parity(target, directory, artifact, run.model, run.images, run.labels,
                                          level.compression)]


def _alpha_graph_reports(directory: Path, run: Subspace, target_name: str, between: float):
    """Parity of every alpha-input artifact at its own alphas (both ends), and of the single
    graph at ``between``, an alpha between two rows of the statistics table."""
    directory.mkdir(exist_ok=True)
    target = get_target(target_name)
    graph = build_alpha_graph(run.model, run.images[:1], switch_once=SWITCH_ONCE in target.capabilities)
    artifacts = target.export_alpha_input(graph, directory, target.parse_options({}))
    reports = [report for artifact in artifacts
               for report in artifact_parity(target, directory, artifact, run.model, run.images, run.labels, {})]
    (single,) = [a for a in artifacts if a.kind == "alpha_input"]
    runner = target.load(directory, {"path": single.path, "kind": single.kind, "alphas": single.alphas,
                                     "details": single.details})
    got = runner.run(run.images.numpy(), between)
    expected = reference_logits(run.model, run.images.numpy(), between)
    reports.append(compare(got, expected, run.labels.numpy(), artifact=single.path, kind=single.kind, alpha=between,
                           reference_alpha=between, regime="float", tolerances=Tolerances()))
    return {a.kind for a in artifacts}, reports


#: Per method: an alpha between two rows of its table (quantized: between two bit widths,
#: which runs the nearer one).
BETWEEN = {"unstructured": 0.5, "structured": 0.3, "quantized": 0.5}
SMALL_CASES = [("onnx", method) for method in METHODS] + [
    (target, method) for target in ("torchscript-lite", "coreml") for method in ("unstructured", "structured")] + [
    pytest.param("executorch", "unstructured", marks=pytest.mark.skipif(
        importlib.util.find_spec("executorch") is None, reason="executorch is not installed (the executorch extra)"))]


@pytest.mark.parametrize("target_name, method_name", SMALL_CASES)
def test_levels_and_alpha_input_graphs_match_pytorch(subspace: Callable[[str, str], Subspace], tmp_path: Path,
                                                     target_name: str, method_name: str) -> None:
    run = subspace("small", method_name)
    between = BETWEEN[method_name]
    reports = _level_reports(tmp_path, run, target_name, [0.0, between])
    kinds, graph_reports = _alpha_graph_reports(tmp_path / "alpha", run, target_name, between)
    assert target_name != "onnx" or {"alpha_input", "alpha_weights", "alpha_predict"} <= kinds
    reports += graph_reports
    assert all(r.passed for r in reports), [(r.kind, r.alpha, r.failures) for r in reports]


@pytest.mark.parametrize("method_name", ["unstructured", "structured"])
def test_resnet18_onnx_level_between_rows_matches_pytorch(subspace: Callable[[str, str], Subspace], tmp_path: Path,
                                                          method_name: str) -> None:
    run = subspace("resnet18", method_name)
    reports = _level_reports(tmp_path, run, "onnx", [BETWEEN[method_name]])
    assert all(r.passed for r in reports), [r.failures for r in reports]


def test_structured_level_is_narrower_with_the_kept_channels_statistics(subspace: Callable[[str, str], Subspace]) -> None:
    run = subspace("resnet18", "structured")
    level = materialize_level(run.model, 0.5, run.input_shape)
    norm = level.layer1[0].bn1
    assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == 32 and not norm.training
    mean, var = run.model.layer1[0].bn1.level_statistics(torch.tensor([0.5]))
    assert torch.equal(norm.running_mean, mean[:32]) and torch.equal(norm.running_var, var[:32])
    with torch.no_grad(), at_alpha(run.model, 0.5):
        assert torch.allclose(level(run.images), run.model(run.images), atol=1e-4)


@every_export
@pytest.mark.parametrize("target_name, method_name", [
    ("onnx", "unstructured"), ("torchscript-lite", "unstructured"), ("onnx", "structured"), ("coreml", "unstructured")])
def test_resnet18_alpha_input_graphs_match_pytorch(subspace: Callable[[str, str], Subspace], tmp_path: Path,
                                                   target_name: str, method_name: str) -> None:
    _, reports = _alpha_graph_reports(tmp_path, subspace("resnet18", method_name), target_name, BETWEEN[method_name])
    assert all(r.passed for r in reports), [(r.kind, r.alpha, r.failures) for r in reports]
