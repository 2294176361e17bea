"""Models beyond cPreResNet: ``--model torchvision:NAME`` and the paper's CIFAR ResNet18 / VGG19
train, checkpoint and rebuild; ``--init`` starts both ends of a line from a state_dict; every
bad input (model name, class count, init of another architecture, resume of another model) is
one line with exit code 2 and leaves nothing behind."""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torch import nn
from train_helpers import assert_one_line_error, run_cli

from lcs_train.channel_plan import derive_channel_plan
from lcs_train.errors import LcsError
from lcs_train.methods import Structured
from lcs_train.models import build_model
from lcs_train.restore import load_subspace
from lcs_train.shapes import Line
from lcs_train.subspace import at_alpha
from lcs_train.train import TrainConfig, Trainer, check_model_runs
from lcs_train.transform import to_subspace

#: Training images the tests step on: four steps of eight per epoch.
TRAIN_IMAGES = 32


def small_trainer(out: Path, model: str, method: str = "unstructured", **overrides: object) -> Trainer:
    """A Trainer on the 8x8 digits cut to ``TRAIN_IMAGES`` images and 16 held-out ones, with the
    method's norm (kept BatchNorms, the torchvision default, recalibrate 11 levels after each
    epoch: tests/test_batch_norm.py covers them)."""
    settings = {"model": model, "method": method, "shape": "line", "dataset": "digits", "epochs": 3,
                "batch_size": 8, "lr": 0.01, "warmup_epochs": 0, "augment_shift": 0, "device": "cpu",
                "norm": "group" if method != "structured" else "instance", **overrides}
    trainer = Trainer(TrainConfig(**settings), out)
    trainer.dataset.train_labels = trainer.dataset.train_labels[:TRAIN_IMAGES]
    trainer.train_images = trainer.train_images[:TRAIN_IMAGES]
    trainer.quick_indices = trainer.quick_indices[:16]
    return trainer


def train_and_save(trainer: Trainer) -> None:
    """``Trainer.fit`` with one save at the end instead of one per epoch (a resnet18 line
    checkpoint is 90 MB: writing and hashing it each epoch would dominate the test)."""
    for epoch in range(trainer.config.epochs):
        trainer.history.append(trainer.train_epoch(epoch))
    trainer.save(trainer.config.epochs)


def alpha0_loss(trainer: Trainer) -> float:
    """Cross-entropy of the dense end on the training images."""
    trainer.model.eval()
    with torch.no_grad(), at_alpha(trainer.model, 0.0):
        return float(F.cross_entropy(trainer.model(trainer.train_images), trainer.dataset.train_labels))


@pytest.mark.parametrize("method, alpha", [("unstructured", 0.5), ("quantized", 0.4)])
def test_torchvision_resnet18_trains_and_reloads_with_identical_logits(method: str, alpha: float, tmp_path: Path) -> None:
    torch.manual_seed(0)
    trainer = small_trainer(tmp_path / "tv.safetensors", "torchvision:resnet18", method)
    before = alpha0_loss(trainer)
    train_and_save(trainer)
    assert alpha0_loss(trainer) < before
    model, checkpoint = load_subspace(trainer.output)
    assert checkpoint.metadata["model"] == {"name": "torchvision:resnet18", "arguments": {"in_channels": 1, "num_classes": 10}}
    images = trainer.test_images[:8]
    trainer.model.eval()
    with torch.no_grad(), at_alpha(trainer.model, alpha), at_alpha(model, alpha):
        assert torch.equal(model(images), trainer.model(images))


def test_efficientnet_b0_checkpoint_rebuilds_and_mobilenet_v2_is_refused_on_8px_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Untrained (saved at epoch 0): what is tested is that the checkpoint rebuilds the network
    # with its SE blocks and SiLU, and that quantized levels match after the reload.
    trainer = small_trainer(tmp_path / "effnet.safetensors", "torchvision:efficientnet_b0", "quantized")
    trainer.save(0)
    model, _ = load_subspace(trainer.output)
    trainer.model.eval()
    with torch.no_grad(), at_alpha(trainer.model, 0.6), at_alpha(model, 0.6):
        assert torch.equal(model(trainer.test_images[:4]), trainer.model(trainer.test_images[:4]))
    # MobileNetV2 shrinks 8x8 digits to 1x1 with one channel per group: with GroupNorm, refused
    # before training (its kept BatchNorms, the default, run on 1x1 maps).
    out = tmp_path / "mobilenet.safetensors"
    result = run_cli(capsys, "--model", "torchvision:mobilenet_v2", "--dataset", "digits", "--norm", "group",
                     "--out", str(out))
    assert_one_line_error(result, 2, "torchvision:mobilenet_v2 cannot run on 1x8x8 images")
    assert not out.exists()


def structured(name: str) -> nn.Module:
    return to_subspace(build_model(name, norm="instance", in_channels=1, num_classes=10), Structured(), Line())


# 64 px: structured levels use InstanceNorm, which needs more than one pixel at every norm.
@pytest.mark.parametrize("name", ["cresnet18", "cvgg19", "torchvision:resnet18"])
def test_structured_channel_plans_derive_for_the_paper_models_and_resnet18(name: str) -> None:
    model = structured(name)
    check_model_runs(model, Structured(), name, [1, 64, 64])
    widths = derive_channel_plan(model, [1, 64, 64]).widths(torch.tensor([0.5]))
    assert any(kept < full for kept, full in widths.values())  # some layers really narrow


def test_structured_refuses_before_training_what_it_cannot_narrow_or_run(tmp_path: Path) -> None:
    # SqueezeNet's fire modules concatenate two convs' outputs: the plan names the operation.
    with pytest.raises(LcsError, match="cat"):
        check_model_runs(structured("torchvision:squeezenet1_1"), Structured(), "torchvision:squeezenet1_1", [1, 64, 64])
    # ResNet18 shrinks 8x8 digits to one pixel, where InstanceNorm cannot normalise.
    with pytest.raises(LcsError, match="torchvision:resnet18 cannot run on 1x8x8 images"):
        small_trainer(tmp_path / "s.safetensors", "torchvision:resnet18", "structured")


def imagenet_style_resnet18_state() -> dict[str, torch.Tensor]:
    """A torchvision resnet18 state_dict as ImageNet weights come: RGB stem, 1000 classes."""
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_init_starts_both_ends_of_the_line_from_the_state_dict(suffix: str, tmp_path: Path) -> None:
    state = imagenet_style_resnet18_state()
    path = tmp_path / f"init{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    trainer = small_trainer(tmp_path / "ft.safetensors", "torchvision:resnet18", init=str(path))
    model = trainer.model
    for layer, key in ((model.layer2[0].conv1, "layer2.0.conv1.weight"), (model.layer3[1].bn2, "layer3.1.bn2.weight")):
        assert torch.equal(layer.weight, state[key]) and torch.equal(layer.weight_end, state[key])
    # Adapted, and said so: the RGB stem summed for grey digits; the 1000-class head fresh.
    assert torch.equal(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert model.fc.weight.shape == (10, 512)
    assert [note.split(":")[0] for note in trainer.init_notes] == ["conv1", "fc"]


class _Payload:
    """Unpickled, it would create ``ran`` (the file it names) by calling ``os.system``."""

    def __init__(self, ran: Path) -> None:
        self.ran = ran

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.ran}",))


def test_a_pickled_object_in_a_pth_is_refused_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "module.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": nn.ReLU()}, module)  # a module needs unpickling code
    ran = tmp_path / "payload-ran"
    hostile = tmp_path / "hostile.pth"  # a plain pickle (protocol 4, which torch warns about) calling os.system
    hostile.write_bytes(pickle.dumps({"conv1.weight": _Payload(ran)}, protocol=4))
    out = tmp_path / "x.safetensors"
    for path, objection in ((module, "GLOBAL torch.nn.modules.activation.ReLU"), (hostile, "Unsupported operand")):
        result = run_cli(capsys, "--model", "torchvision:resnet18", "--dataset", "digits", "--init", str(path),
                         "--out", str(out))
        assert_one_line_error(result, 2, f"--init {path} is not a file of tensors alone: torch.load(weights_only=True)")
        assert objection in result.stderr
        # torch's own message advises weights_only=False, which would run the payload: not passed on.
        assert "False" not in result.stderr and "add_safe_globals" not in result.stderr
    assert not out.exists() and not ran.exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "torchvision:resnet19"], "did you mean torchvision:resnet18"),
    (["--model", "torchvision:fasterrcnn_resnet50_fpn"], "no classification model 'fasterrcnn_resnet50_fpn'"),
    (["--num-classes", "5"], "--num-classes 5 disagrees with digits, which has 10 classes"),
    (["--recipe", "finetune"], "no --init was given"),
    (["--init", "missing.safetensors"], "--init missing.safetensors does not exist"),
])
def test_bad_model_inputs_are_one_line_and_write_nothing(args: list[str], message: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.safetensors"
    result = run_cli(capsys, "--dataset", "digits", "--out", str(out), *args)
    assert_one_line_error(result, 2, message)
    assert not out.exists()


def test_init_of_another_architecture_names_the_first_mismatching_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cresnet.safetensors"
    save_file(build_model("cresnet18", in_channels=1, num_classes=10).state_dict(), str(path))
    out = tmp_path / "x.safetensors"
    result = run_cli(capsys, "--model", "torchvision:resnet18", "--dataset", "digits", "--init", str(path), "--out", str(out))
    assert_one_line_error(result, 2, "the first mismatching key, 'conv1.weight', is missing from the file")
    assert not out.exists()


def test_resume_with_a_checkpoint_of_another_model_is_refused_and_keeps_it(
    subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "subspace.safetensors"
    shutil.copy(subspace_checkpoint("unstructured", "line"), out)
    before = out.read_bytes()
    result = run_cli(capsys, "--model", "torchvision:resnet18", "--dataset", "digits", "--resume", "--out", str(out))
    assert_one_line_error(result, 2, "model: 'cpreresnet11' there, 'torchvision:resnet18' now")
    assert out.read_bytes() == before
