"""Data-parallel training with 2 gloo processes: the ranks stay identical, they match one
process given the same global batch, one rank writes the checkpoint, and ranks launched with
different settings are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
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


@pytest.mark.parametrize("method, shape", [("unstructured", "line"), ("quantized", "point")])
def test_two_gloo_processes_match_one_process(tmp_path: Path, method: str, shape: str) -> None:
    # 1,438 training digits in batches of 199: each global batch is split 100 / 99 and the last
    # (45 images) 23 / 22; shifts exercise augmentation of the global batch before the split.
    # unstructured line: the cos^2 regulariser is added once, after the all-reduce.
    # quantized: activation quantization is on after 40 % of the steps, so the ranks' running
    # activation ranges must follow the global batch for the weights to agree.
    config = tiny_config(method, shape, epochs=1, batch_size=199, augment_shift=1, compression_warmup=0.4)
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
    messages = [(results / f"rank{rank}.error").read_text() for rank in range(WORLD)]
    for rank, message in enumerate(messages):
        assert "started with different settings (rank 1 differs from rank 0" in message
        assert f"this is rank {rank}" in message and "same options" in message
    assert not output.exists()
