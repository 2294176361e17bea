"""Shared fixtures: each tiny subspace is trained once per session (seconds, on digits) and
every export and parity test reuses it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lcs_train.train import TrainConfig, Trainer

METHODS = ("unstructured", "structured", "quantized")
SHAPES = ("line", "point")


def train_tiny(output: Path, method: str, shape: str, epochs: int = 2, **overrides: object) -> Path:
    """Train a small digits subspace into ``output`` and return the checkpoint path."""
    torch.set_num_threads(2)
    config = TrainConfig(
        model="cpreresnet11", method=method, shape=shape, dataset="digits", epochs=epochs, batch_size=32,
        lr=0.05, warmup_epochs=1, augment_shift=0, **overrides,
    )
    trainer = Trainer(config, output)
    for epoch in range(config.epochs):
        trainer.history.append(trainer.train_epoch(epoch))
        trainer.save(epoch + 1)
    return output


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``trained_checkpoint(method, shape)``: path of a digits subspace, trained once per session."""
    cache: dict[tuple[str, str], Path] = {}

    def get(method: str = "unstructured", shape: str = "line") -> Path:
        key = (method, shape)
        if key not in cache:
            directory = tmp_path_factory.mktemp(f"ckpt-{method}-{shape}")
            cache[key] = train_tiny(directory / "subspace.safetensors", method, shape)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def onnx_app_bundle(trained_checkpoint: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unstructured line fixture as the sample apps load it: ONNX level files at 0, 0.5 and
    0.9 plus the alpha graphs (single graph and switch-once pair), validated on 60 held-out
    samples. Exported once; tests that change it work on a copy."""
    from lcs_export.export import ExportRequest, export_bundle

    output = tmp_path_factory.mktemp("onnx-app-bundle") / "onnx"
    export_bundle(ExportRequest(target="onnx", checkpoint=trained_checkpoint("unstructured", "line"), output=output,
                                levels="0.0,0.5,0.9", dynamic_alpha=True, samples=60))
    return output
