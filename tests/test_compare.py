"""Fixed-alpha baselines and ``lcs-train compare`` on the 8x8 digits.

The baseline is really trained (one full-batch step, so that the mask it trained with is
known exactly); the subspace is ``subspace_checkpoint``'s seeded, calibrated network.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import artifact_parity, recalibrate_plain_batch_norms, tiny_config
from train_helpers import assert_one_line_error, rewrite_checkpoint, run_cli

from lcs_export.export import build_levels
from lcs_train.calibrate import batch_norm_layers
from lcs_train.compression import magnitude_keep
from lcs_train.layers import CompressibleWeighted
from lcs_train.subspace import compressible_layers
from lcs_train.materialize import materialize_level
from lcs_train.restore import load_subspace
from lcs_train.train import RECALIBRATION_BATCH, Trainer
from targets import get_target

#: One xdist worker runs this module, so its module-scoped fixtures are built once.
pytestmark = pytest.mark.xdist_group("compare")

FIXED_ALPHA = 0.5


@pytest.fixture(scope="module")
def one_step_baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A --fixed-alpha 0.5 baseline after exactly one SGD step (the batch is the whole
    training split), without momentum or weight decay, at full compression from the start.
    Returns its path, the compressed weights before the step and the masks they gave."""
    path = tmp_path_factory.mktemp("baseline") / "fixed-0.5.safetensors"
    config = tiny_config("unstructured", "point", epochs=1, batch_size=4096, momentum=0.0, weight_decay=0.0,
                         compression_warmup=0.0, fixed_alpha=FIXED_ALPHA, lr=0.5)
    trainer = Trainer(config, path)
    assert trainer.steps_per_epoch == 1
    before, kept = {}, {}
    for name, layer in trainer.model.named_modules():
        if isinstance(layer, CompressibleWeighted) and layer.method.compresses:
            before[name] = layer.weight.detach().clone()
            kept[name] = magnitude_keep(layer.weight, torch.tensor([FIXED_ALPHA]))
    trainer.fit()
    return path, before, kept


def test_a_fixed_alpha_baseline_trains_only_the_weights_its_mask_keeps(one_step_baseline) -> None:
    path, before, kept = one_step_baseline
    from lcs_train.restore import load_subspace

    model, checkpoint = load_subspace(path)
    assert checkpoint.metadata["alpha"]["fixed"] == FIXED_ALPHA and checkpoint.metadata["shape"] == "point"
    layers = dict(model.named_modules())
    changed_kept = 0
    for name, weight in before.items():
        after = layers[name].weight.detach()
        # Pruned at this alpha: no task gradient, and nothing else moves them here.
        assert torch.equal(after[~kept[name]], weight[~kept[name]]), name
        changed_kept += int((after[kept[name]] != weight[kept[name]]).sum())
    # Not every kept weight moves in this first step: a residual block's last conv starts at
    # zero, so the convs before it get no gradient yet; the rest of the network does.
    assert changed_kept > 0.2 * sum(int(mask.sum()) for mask in kept.values())


def test_a_fixed_alpha_baseline_anneals_its_compression_in(tmp_path: Path) -> None:
    # At full compression from step 0 the zero-initialised last conv of each residual block
    # keeps nothing (every |w| ties at the threshold) and never gets a gradient; with the
    # warm-up ramp it trains, so its measured sparsity is the level's, not more.
    path = tmp_path / "fixed.safetensors"
    Trainer(tiny_config("unstructured", "point", epochs=1, fixed_alpha=FIXED_ALPHA), path).fit()
    from lcs_train.evaluate import evaluate_subspace, prepare_evaluation

    (row,) = evaluate_subspace(*prepare_evaluation(path, None))
    assert abs(row.measured["sparsity"] - FIXED_ALPHA) < 0.01


def test_compare_matches_eval_and_writes_table_json_and_png(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, subspace_checkpoint: Callable[[str, str], Path], one_step_baseline,
) -> None:
    subspace, baseline = subspace_checkpoint("unstructured", "line"), one_step_baseline[0]
    out = tmp_path / "compare"
    result = run_cli(capsys, "compare", str(subspace), str(baseline), "--alphas", "0,0.5,0.9", "--out", str(out))
    assert result.code == 0, result.stderr
    assert "accuracy against measured sparsity, same held-out data" in result.stdout
    report = json.loads((out / "compare.json").read_text())
    assert report["x_unit"] == "sparsity"
    first, second = report["checkpoints"]
    assert (first["role"], second["role"]) == ("subspace", "fixed-alpha baseline")
    assert [level["alpha"] for level in first["levels"]] == [0.0, 0.5, 0.9]
    assert [level["alpha"] for level in second["levels"]] == [FIXED_ALPHA]
    assert [round(level["x"], 2) for level in first["levels"]] == [0.0, 0.5, 0.9]
    # The printed table holds the same accuracies as the JSON.
    for level in first["levels"] + second["levels"]:
        assert f"{100 * level['accuracy']:.2f}" in result.stdout
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same figures as lcs-train eval, for the subspace and for the baseline.
    for path, levels in ((subspace, first["levels"]), (baseline, second["levels"])):
        eval_report = tmp_path / f"{path.stem}.eval.json"
        alphas = ",".join(f"{level['alpha']:g}" for level in levels)
        assert run_cli(capsys, "eval", str(path), "--alphas", alphas, "--out", str(eval_report)).code == 0
        evaluated = json.loads(eval_report.read_text())["levels"]
        assert [(r["accuracy"], r["measured"], r["nonzeros"]) for r in evaluated] == \
            [(r["accuracy"], r["measured"], r["nonzeros"]) for r in levels]


def test_compare_refuses_what_it_cannot_compare(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, subspace_checkpoint: Callable[[str, str], Path], one_step_baseline,
) -> None:
    subspace, baseline = subspace_checkpoint("unstructured", "line"), one_step_baseline[0]
    not_a_checkpoint = tmp_path / "notes.safetensors"
    not_a_checkpoint.write_text("hello")
    relabelled = rewrite_checkpoint(baseline, tmp_path / "relabelled.safetensors",
                                    lambda metadata: metadata.update(classes=list(reversed(metadata["classes"]))))
    structured = subspace_checkpoint("structured", "point")
    out = tmp_path / "out"
    cases = [
        ([], "compare needs a subspace and at least one baseline, got nothing"),
        ([subspace], f"got only {subspace}"),
        ([subspace, not_a_checkpoint], str(not_a_checkpoint)),
        ([subspace, relabelled], f"{relabelled} cannot be compared with {subspace}: its classes differs"),
        ([subspace, structured], f"{structured} cannot be compared with {subspace}: its compression method differs"),
        ([baseline, subspace], f"{baseline} is a fixed-alpha baseline, not a subspace"),
    ]
    for paths, message in cases:
        result = run_cli(capsys, "compare", *map(str, paths), "--out", str(out))
        assert_one_line_error(result, 2, message)
    assert not out.exists()


def test_a_universally_slimmable_baseline_distils_and_compares_by_width(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, subspace_checkpoint: Callable[[str, str], Path],
) -> None:
    # One full-batch step each, same seed: plain LCS+P structured against --baseline us.
    weights = {}
    for baseline in (None, "us"):
        path = tmp_path / f"{baseline or 'point'}.safetensors"
        config = tiny_config("structured", "point", epochs=1, batch_size=4096, baseline=baseline)
        trainer = Trainer(config, path)
        trainer.fit()
        weights[baseline] = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    # The widest network's loss is the same; only distilling the narrower ones changes the step.
    assert not torch.equal(weights[None], weights["us"])
    slimmable = tmp_path / "us.safetensors"
    out = tmp_path / "compare"
    subspace = subspace_checkpoint("structured", "point")
    result = run_cli(capsys, "compare", str(subspace), str(slimmable), "--alphas", "0,0.5,0.75", "--out", str(out))
    assert result.code == 0, result.stderr
    report = json.loads((out / "compare.json").read_text())
    assert report["x_unit"] == "width"
    entry = report["checkpoints"][1]
    assert entry["role"] == "universally slimmable baseline" and entry["fixed_alpha"] is None
    assert [round(level["x"], 2) for level in entry["levels"]] == [1.0, 0.5, 0.25]


def test_a_universally_slimmable_baseline_with_batch_norm_keeps_statistics_per_width(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, subspace_checkpoint: Callable[[str, str], Path],
) -> None:
    """US-Nets' own normalisation: BatchNorm, its statistics recalibrated per width after
    training. Each width's row is what a direct recalibration of that width's narrowed
    network gives, eval and compare use them, and a narrowed level exports with parity."""
    path = tmp_path / "us-batch.safetensors"
    trainer = Trainer(tiny_config("structured", "point", epochs=1, batch_size=4096, baseline="us", norm="batch"), path)
    trainer.fit()
    assert trainer.norm == "batch"
    model, _ = load_subspace(path)
    norms = batch_norm_layers(model)
    assert norms and all(n.level_mean.shape[0] == len(n.method.statistics_alphas()) for n in norms)
    images = trainer.recalibration_images()
    grid = norms[0].method.statistics_alphas()
    for row in (0, len(grid) - 1):
        # The level as materialised from the table, against the same narrowed network whose
        # own BatchNorms are recalibrated directly on the same images.
        level = materialize_level(model, grid[row], list(images.shape[1:]))
        plain = recalibrate_plain_batch_norms(copy.deepcopy(level), images, RECALIBRATION_BATCH)
        assert len(plain) == len(norms)
        tabled = [m for m in level.modules() if isinstance(m, nn.BatchNorm2d)]
        for got, expected in zip(tabled, plain):
            assert torch.allclose(got.running_mean, expected.running_mean, atol=1e-4), row
            assert torch.allclose(got.running_var, expected.running_var, atol=1e-4, rtol=1e-4), row
    assert not torch.allclose(norms[-1].level_var[0], norms[-1].level_var[-1])  # the widths' statistics differ
    out = tmp_path / "compare"
    result = run_cli(capsys, "compare", str(subspace_checkpoint("structured", "point")), str(path),
                     "--alphas", "0,0.5,0.75", "--out", str(out))
    assert result.code == 0, result.stderr
    entry = json.loads((out / "compare.json").read_text())["checkpoints"][1]
    assert entry["role"] == "universally slimmable baseline"
    assert [round(level["x"], 2) for level in entry["levels"]] == [1.0, 0.5, 0.25]
    held_out, labels = trainer.dataset.held_out()
    levels = build_levels(model, [0.5], list(held_out.shape[1:]))
    target = get_target("onnx")
    (tmp_path / "onnx").mkdir()
    artifacts = target.export_levels(levels, held_out[:1], tmp_path / "onnx", target.parse_options({}))
    reports = artifact_parity(target, tmp_path / "onnx", artifacts[0], model, held_out[:200], labels[:200],
                              levels[0].compression)
    assert [r.alpha for r in reports] == [0.5] and all(r.passed for r in reports), [r.failures for r in reports]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baseline", "slimmable", "--method", "structured"], "unknown baseline 'slimmable'"),
        (["--baseline", "us"], "--baseline us applies to --method structured only (got unstructured)"),
        (["--baseline", "us", "--method", "structured", "--fixed-alpha", "0.5"], "two different baselines"),
    ],
)
def test_bad_baseline_options_are_refused_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str,
) -> None:
    out = tmp_path / "run" / "baseline.safetensors"
    result = run_cli(capsys, "--model", "cpreresnet11", "--dataset", "digits", *args, "--out", str(out))
    assert_one_line_error(result, 2, message)
    assert not out.parent.exists()
