"""Training reduces the loss for every method x shape; resume equals an uninterrupted run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import METHODS, SHAPES, train_tiny
from lcs_train import at_alpha, load_subspace
from lcs_train.checkpoint import load_checkpoint
from lcs_train.data import load_dataset
from lcs_train.errors import LcsError
from lcs_train.restore import model_from_metadata
from lcs_train.train import TrainConfig, Trainer


def held_out_loss(model: torch.nn.Module, alpha: float) -> float:
    images, labels = load_dataset("digits").held_out()
    with torch.no_grad(), at_alpha(model, alpha):
        return float(F.cross_entropy(model.eval()(images), labels))


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
    # The same run, stopped after one epoch and resumed in a fresh Trainer.
    config = TrainConfig(
        model="cpreresnet11", method="unstructured", shape="line", dataset="digits", epochs=2,
        batch_size=32, lr=0.05, warmup_epochs=1, augment_shift=0,
    )
    first = Trainer(config, tmp_path / "resumed.safetensors")
    first.history.append(first.train_epoch(0))
    first.save(1)
    second = Trainer(config, tmp_path / "resumed.safetensors", resume=True)
    assert second.start_epoch == 1
    second.history.append(second.train_epoch(1))
    second.save(2)
    a = load_checkpoint(straight, with_train_state=True)
    b = load_checkpoint(tmp_path / "resumed.safetensors", with_train_state=True)
    assert a.model_state.keys() == b.model_state.keys()
    for key in a.model_state:
        assert torch.equal(a.model_state[key], b.model_state[key]), key
    for key in a.train_state:
        assert torch.equal(a.train_state[key], b.train_state[key]), key


def test_resume_with_other_settings_is_refused(trained_checkpoint: Callable[[str, str], Path], tmp_path: Path) -> None:
    path = tmp_path / "copy.safetensors"
    path.write_bytes(trained_checkpoint("unstructured", "line").read_bytes())
    config = TrainConfig(model="cpreresnet11", method="structured", shape="line", dataset="digits",
                         epochs=2, batch_size=32, lr=0.05, warmup_epochs=1, augment_shift=0)
    with pytest.raises(LcsError, match="other settings.*method"):
        Trainer(config, path, resume=True)
