"""Data-parallel training with 2 gloo processes: the ranks stay identical, they match one
process given the same global batch, one rank writes the checkpoint, and ranks launched with
different settings are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file

from ddp_helpers import config_dict, free_port, run_rank
from helpers import tiny_config
from lcs_train.checkpoint import load_checkpoint
from lcs_train.train import Trainer

WORLD = 2


def spawn(configs: list[dict], output: Path, results: Path, **options: object) -> None:
    results.mkdir(exist_ok=True)
    for stale in results.iterdir():
        stale.unlink()
    mp.spawn(run_rank, args=(WORLD, free_port(), configs, str(output), str(results), *options.values()),
             nprocs=WORLD, join=True)


def rank_states(results: Path) -> list[dict[str, torch.Tensor]]:
    errors = sorted(results.glob("*.error"))
    assert not errors, errors[0].read_text()
    return [load_file(str(results / f"rank{rank}.safetensors")) for rank in range(WORLD)]


def assert_close(one: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    assert one.keys() == other.keys()
    for name in one:
        # Summing gradients across ranks reorders float additions: equal within rounding.
        torch.testing.assert_close(other[name], one[name], rtol=1e-4, atol=1e-5, msg=lambda text: f"{name}: {text}")


def write_noise_folder(root: Path, per_class: int = 16) -> Path:
    """A small ImageFolder tree of seeded noise images (10x12, resized to 8x8 on reading),
    each class with its own colour bias so there is something to learn."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for label, name in enumerate(("a", "b")):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 160, (12, 10, 3), dtype=np.uint8)
                pixels[..., label] += 90
                Image.fromarray(pixels).save(root / split / name / f"{index}.png")
    return root


@pytest.mark.parametrize("method, norm", [("quantized", "group"), ("unstructured", "batch")])
def test_two_gloo_processes_match_one_process(tmp_path: Path, method: str, norm: str) -> None:
    # 32 training images in batches of 7: global batches split 4 / 3, the last (4 images)
    # 2 / 2; shifts and flips exercise augmentation of the global batch before the split.
    # A quantized line covers two things a rank could get wrong alone: the line's cos^2
    # regulariser must be added once, after the all-reduce, and every rank's running
    # activation ranges must follow the global batch (they are compared too; activation
    # quantization is on after 40 % of the steps). A line with kept BatchNorms covers the
    # third: it must normalise with the global batch's statistics, not its slice's, and take
    # the gradient through them (GroupNorm has nothing shared across samples).
    root = write_noise_folder(tmp_path / "data")
    config = tiny_config(method, "line", epochs=1, dataset="imagefolder", data_dir=str(root), image_size=8,
                         batch_size=7, augment_shift=1, compression_warmup=0.4, norm=norm)
    single = Trainer(config, tmp_path / "single.safetensors")
    initial = {k: v.clone() for k, v in single.model.state_dict().items()}
    single.fit()

    output, results = tmp_path / "ddp.safetensors", tmp_path / "results"
    spawn([config_dict(config)] * WORLD, output, results, resume=False, stop_after_epoch=None)
    first, second = rank_states(results)
    for name in first:
        assert torch.equal(first[name], second[name]), f"ranks disagree on {name}"
    assert any(not torch.equal(first[k], initial[k]) for k in initial), "training did not move the weights"
    assert_close(single.model.state_dict(), first)
    written = load_checkpoint(output, with_train_state=True)
    assert written.metadata["epoch"] == 1 and written.metadata["complete"]
    assert all(torch.equal(written.model_state[k], first[k]) for k in first)
    # Only rank 0 wrote: no other checkpoint, no temporary file left beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["ddp.safetensors", "single.safetensors"]
    expected = load_checkpoint(tmp_path / "single.safetensors").metadata["history"][0]["loss"]
    assert written.metadata["history"][0]["loss"] == pytest.approx(expected, rel=1e-5)


def test_ranks_launched_with_different_settings_are_refused(tmp_path: Path) -> None:
    base = config_dict(tiny_config("unstructured", "line", epochs=1))
    other = {**base, "lr": 0.02}
    output, results = tmp_path / "ddp.safetensors", tmp_path / "results"
    spawn([base, other], output, results, resume=False, stop_after_epoch=None)
    for rank in range(WORLD):
        message = (results / f"rank{rank}.error").read_text()
        assert "started with different settings (rank 1 differs from rank 0" in message
        assert f"this is rank {rank}" in message and "same options" in message
    assert not output.exists()


def test_ranks_reading_different_data_are_refused(tmp_path: Path) -> None:
    # The directories may differ (one per machine); their contents may not.
    same = write_noise_folder(tmp_path / "one")
    fewer = write_noise_folder(tmp_path / "two", per_class=15)
    configs = [config_dict(tiny_config("unstructured", "line", epochs=1, dataset="imagefolder", data_dir=str(root),
                                       image_size=8, batch_size=7)) for root in (same, fewer)]
    output, results = tmp_path / "ddp.safetensors", tmp_path / "results"
    spawn(configs, output, results, resume=False, stop_after_epoch=None)
    for rank in range(WORLD):
        assert "started with different data (rank 1 differs from rank 0" in (results / f"rank{rank}.error").read_text()
    assert not output.exists()
