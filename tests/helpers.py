"""Small helpers every test module may use, and the tiny subspaces the fixtures build.

Two kinds of subspace checkpoint, both through ``Trainer`` (same metadata, same writer):

- ``train_tiny``: really trained (``Trainer.fit``) on the 8x8 digits; for the tests of
  training itself (the loss falls, resume) and of accuracy;
- ``random_subspace``: no gradient step at all: seeded random weights in every layer, both
  ends of a line apart, ``calibrate_activation_ranges`` so that quantized levels have real
  input ranges, and a least-squares read-out (the classifier only) so that predictions are
  spread over the classes with clear margins, as a trained network's are: parity compares
  top-1 between PyTorch and a runtime, and a random network's near-constant, near-tied
  logits would turn rounding noise into flips. Export, parity, bundle and app tests need a
  subspace with honest structure and non-trivial weights, not a trained one, and this takes
  about a second.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

METHODS = ("unstructured", "structured", "quantized")
SHAPES = ("line", "point")


@dataclass
class CliResult:
    """What one in-process run of ``lcs-train`` or ``lcs-export`` printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """The non-blank lines on stderr: a user error must be exactly one."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def built_once_per_run(factory: pytest.TempPathFactory, name: str, marker: str,
                       build: Callable[[Path], Any]) -> Path:
    """The directory ``build(directory)`` fills, built once for the whole test run.

    Under pytest-xdist every worker is its own process: the first to get here builds into the
    run's directory (above every worker's own) under a lock, the others wait for it and reuse
    what it built. ``marker``, relative to the directory, is the file whose presence says the
    build finished (a build that failed is tried again by the next). Copy before changing.
    """
    from filelock import FileLock

    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    directory = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (directory / marker).is_file():
            directory.mkdir(parents=True, exist_ok=True)
            build(directory)
    return directory


def tiny_config(method: str, shape: str, epochs: int = 2, **overrides: object):
    """The settings of every tiny test subspace: cPreResNet11 on the 8x8 digits."""
    from lcs_train.train import TrainConfig

    settings = {"model": "cpreresnet11", "method": method, "shape": shape, "dataset": "digits", "epochs": epochs,
                "batch_size": 32, "lr": 0.05, "warmup_epochs": 1, "augment_shift": 0, **overrides}
    return TrainConfig(**settings)


def train_tiny(output: Path, method: str, shape: str, epochs: int | None = None, **overrides: object) -> Path:
    """Train a small digits subspace into ``output`` (``Trainer.fit``) and return the path.

    One epoch by default; structured subspaces get two (with the loss summed over four alphas
    per step and the width annealed in, one epoch of 45 steps does not yet lower the loss at
    the narrow end), and so does the unstructured line: after one epoch its 95 % end, annealed
    in over that epoch, ended up on either side of its starting held-out loss (2.28 with two
    threads, 2.66 with one, from 2.38); after two it is at 1.46.
    """
    from lcs_train.train import Trainer

    two = method == "structured" or (method, shape) == ("unstructured", "line")
    epochs = epochs if epochs is not None else (2 if two else 1)
    Trainer(tiny_config(method, shape, epochs, **overrides), output).fit()
    return output


#: Calibration images (from the training split) for ``random_subspace``.
CALIBRATION_IMAGES = 256


@torch.no_grad()
def randomize_weights(model: nn.Module, seed: int) -> None:
    """Seeded random values in every parameter, so that no layer is trivial.

    Conv and linear weights: uniform at torch's default scale for their fan-in, a quarter of
    it where the model initialised them to zero (the last conv of each residual block, which
    would otherwise leave every residual branch dead). Norm scales: 1 +- noise; biases: small
    noise. Each end of a line gets its own draw, so points inside it differ from both ends.
    """
    generator = torch.Generator().manual_seed(seed)
    drawn: dict[str, torch.Tensor] = {}
    for name, parameter in model.named_parameters():
        if parameter.dim() >= 2:
            bound = 1.0 / math.sqrt(parameter[0].numel()) * (1.0 if parameter.any() else 0.25)
            value = (torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound
        elif name.rsplit(".", 1)[-1].startswith("weight"):
            value = 1.0 + 0.2 * torch.randn(parameter.shape, generator=generator)
        else:
            value = 0.1 * torch.randn(parameter.shape, generator=generator)
        if name.endswith("_end"):
            # The far end of a line: the near end moved by a third of a fresh draw, so that
            # the ends differ clearly and the middle of the line is still a working network.
            value = drawn[name.removesuffix("_end")] + value / 3
        drawn[name] = value
        parameter.copy_(value)


@torch.no_grad()
def fit_readout(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """Set the classifier (the last compressible linear layer) by ridge regression from its
    inputs to one-hot labels, from the features at both ends and the middle of the trained
    range together."""
    from lcs_train.layers import CompressibleLinear
    from lcs_train.subspace import at_alpha, compressible_layers, model_method

    classifier = [layer for layer in compressible_layers(model) if isinstance(layer, CompressibleLinear)][-1]
    top = model_method(model).max_alpha
    features: list[torch.Tensor] = []
    handle = classifier.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    was_training = model.training
    model.eval()

    def solve(alphas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        features.clear()
        for alpha in alphas:
            with at_alpha(model, alpha):
                model(images)
        x = torch.cat(features).double()
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        y = torch.nn.functional.one_hot(labels.repeat(len(alphas)), num_classes).double() * 4.0 - 2.0
        gram = x.T @ x
        gram += 0.1 * gram.diagonal().mean() * torch.eye(x.shape[1], dtype=x.dtype)
        solution = torch.linalg.solve(gram, x.T @ y).T.float()
        return solution[:, :-1], solution[:, -1]

    try:
        weight, bias = solve([0.0, top / 2, top])
        classifier.weight.copy_(weight), classifier.bias.copy_(bias)
        if hasattr(classifier, "weight_end"):
            # One read-out serves the whole line (two separately fitted ones would not add up
            # to a working one in the middle); its far end differs by a little noise.
            generator = torch.Generator().manual_seed(len(images))
            classifier.weight_end.copy_(weight * (1 + 0.05 * torch.randn(weight.shape, generator=generator)))
            classifier.bias_end.copy_(bias + 0.05 * torch.randn(bias.shape, generator=generator))
    finally:
        handle.remove()
        model.train(was_training)


def random_subspace(output: Path, method: str, shape: str, seed: int = 0, **overrides: object) -> Path:
    """An untrained but calibrated digits subspace checkpoint at ``output`` (epoch 0)."""
    from lcs_train.calibrate import calibrate_activation_ranges
    from lcs_train.train import Trainer

    trainer = Trainer(tiny_config(method, shape, **overrides), output)
    randomize_weights(trainer.model, seed)
    calibrate_activation_ranges(trainer.model, trainer.train_images[:CALIBRATION_IMAGES])
    fit_readout(trainer.model, trainer.train_images, trainer.dataset.train_labels, len(trainer.dataset.classes))
    trainer.save(0)
    return output


# --- torchvision networks as subspaces (tests/test_to_subspace.py, tests/test_torchvision_models.py) ---


@torch.no_grad()
def recalibrate_plain_batch_norms(network: nn.Module, images: torch.Tensor, batch_size: int) -> list[nn.BatchNorm2d]:
    """Recalibrate ``network``'s plain BatchNorms directly (statistics reset, cumulative
    averages over ``images`` in batches of ``batch_size``), the reference the per-level
    tables are checked against; returns them, in module order."""
    norms = [module for module in network.modules() if isinstance(module, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    for start in range(0, len(images), batch_size):
        network(images[start:start + batch_size])
    return norms


def digits_rgb(count: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` real held-out MNIST digits in a seeded random order (the split is stored
    class by class), padded to 32 px, resized to ``size`` and repeated to RGB (torchvision
    networks' own three-channel stems)."""
    import torch.nn.functional as F

    from lcs_train.data import load_dataset

    images, labels = load_dataset("mnist").held_out()
    rows = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:count]
    images, labels = F.pad(images[rows], (2, 2, 2, 2)), labels[rows]
    if size != 32:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.expand(-1, 3, -1, -1).contiguous(), labels


def train_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, alphas: list[float],
                steps: int = 6, batch: int = 16, lr: float = 0.02) -> list[float]:
    """A few SGD steps, each over the given alphas (the subspace's own training objective),
    cycling through the batches of ``images``; returns each step's mean loss."""
    import torch.nn.functional as F

    from lcs_train.subspace import line_cosine_squared, set_alpha

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    batches = max(1, len(images) // batch)
    for step in range(steps):
        rows = slice(batch * (step % batches), batch * (step % batches + 1))
        optimizer.zero_grad()
        loss = torch.zeros(())
        for alpha in alphas:
            set_alpha(model, alpha)
            loss = loss + F.cross_entropy(model(images[rows]), labels[rows])
        (loss / len(alphas) + line_cosine_squared(model)).backward()
        optimizer.step()
        losses.append(float(loss.detach()) / len(alphas))
    model.eval()
    return losses


def artifact_parity(target, directory: Path, artifact, model: nn.Module, images: torch.Tensor,
                    labels: torch.Tensor, compression: dict):
    """The project's parity reports (``lcs_export.parity.compare``, default tolerances) of one
    exported artifact against the subspace in PyTorch, one per alpha the artifact serves."""
    from lcs_export.parity import ReferenceCache, Tolerances, compare, parity_regime, run_batched

    entry = {"path": artifact.path, "kind": artifact.kind, "alphas": artifact.alphas, "details": artifact.details}
    runner = target.load(directory, entry)
    references = ReferenceCache(model, images.numpy())
    reports = []
    for alpha in artifact.alphas:
        got = run_batched(runner.run, images.numpy(), alpha)
        reports.append(compare(got, references(alpha), labels.numpy(), artifact=artifact.path, kind=artifact.kind,
                               alpha=alpha, reference_alpha=alpha, regime=parity_regime(compression, artifact.details),
                               tolerances=Tolerances(), float_error=references.float_error(alpha)))
    return reports
