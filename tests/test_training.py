"""Training reduces the loss for every method x shape; resume equals an uninterrupted run;
calibration sets activation ranges and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import METHODS, SHAPES, tiny_config, train_tiny
from lcs_train import at_alpha, compressible_layers, load_subspace, set_alpha
from lcs_train.calibrate import calibrate_activation_ranges, calibration_alphas
from lcs_train.checkpoint import load_checkpoint
from lcs_train.layers import CompressibleNorm
from lcs_train.data import load_dataset
from lcs_train.errors import LcsError
from lcs_train.restore import model_from_metadata
from lcs_train.train import EpochRecord, Trainer


def held_out_loss(model: torch.nn.Module, alpha: float) -> float:
    images, labels = load_dataset("digits").held_out()
    with torch.no_grad(), at_alpha(model, alpha):
        return float(F.cross_entropy(model.eval()(images), labels))


@pytest.mark.xdist_group("trained")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", METHODS)
def test_training_reduces_the_loss_at_both_ends(
    trained_checkpoint: Callable[[str, str], Path], method: str, shape: str
) -> None:
    trained, checkpoint = load_subspace(trained_checkpoint(method, shape))
    torch.manual_seed(checkpoint.metadata["training"]["seed"])  # the trainer's initialisation
    initial = model_from_metadata(checkpoint.metadata)
    top = checkpoint.metadata["alpha"]["max"]
    for alpha in (0.0, top):
        assert held_out_loss(trained, alpha) < held_out_loss(initial, alpha)


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    straight = train_tiny(tmp_path / "straight.safetensors", "unstructured", "line", epochs=2)
    # The same run, stopped after its first epoch and resumed in a fresh Trainer.
    config = tiny_config("unstructured", "line", epochs=2)
    first = Trainer(config, tmp_path / "resumed.safetensors")
    seen: list[int] = []

    def stop_after_the_first_epoch(record: EpochRecord) -> None:
        seen.append(record.epoch)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.fit(on_epoch=stop_after_the_first_epoch)
    assert seen == [1] and first.saved_epoch == 1
    second = Trainer(config, tmp_path / "resumed.safetensors", resume=True)
    assert second.start_epoch == 1 and [record.epoch for record in second.history] == [1]
    steps: list[tuple[float, float]] = []
    history = second.fit(on_step=lambda facts: steps.append((facts["epoch"], facts["step"])))
    assert [record.epoch for record in history] == [1, 2]
    assert steps == [(2, index + 1) for index in range(second.steps_per_epoch)]
    a = load_checkpoint(straight, with_train_state=True)
    b = load_checkpoint(tmp_path / "resumed.safetensors", with_train_state=True)
    assert b.metadata["epoch"] == 2 and b.metadata["complete"]
    assert a.model_state.keys() == b.model_state.keys()
    for key in a.model_state:
        assert torch.equal(a.model_state[key], b.model_state[key]), key
    for key in a.train_state:
        assert torch.equal(a.train_state[key], b.train_state[key]), key


def test_resume_with_other_settings_is_refused(subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path) -> None:
    path = tmp_path / "copy.safetensors"
    path.write_bytes(subspace_checkpoint("unstructured", "line").read_bytes())
    config = tiny_config("structured", "line")
    with pytest.raises(LcsError, match="other settings.*method"):
        Trainer(config, path, resume=True)


def test_calibration_sets_activation_ranges_and_nothing_else(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config("quantized", "line"), tmp_path / "x.safetensors")
    model = trainer.model.eval()
    set_alpha(model, 0.4)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    calibrate_activation_ranges(model, trainer.train_images[:64])
    changed = {name for name, tensor in model.state_dict().items() if not torch.equal(tensor, before[name])}
    assert changed and all(name.endswith(("activation_range", "range_observed")) for name in changed), changed
    assert not model.training and all(layer.alpha == 0.4 for layer in compressible_layers(model))
    quantized = [layer for layer in compressible_layers(model)
                 if layer.method.name == "quantized" and not isinstance(layer, CompressibleNorm)]
    assert quantized and all(bool(layer.range_observed) for layer in quantized)
    assert all(layer.activation_range[0] < layer.activation_range[1] for layer in quantized)
    assert calibration_alphas(model) == list(trainer.method.discrete_alphas())
