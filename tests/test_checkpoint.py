"""The safetensors checkpoint: bit-exact round trip, integrity checks, atomic saves."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import lcs_train.files as files_module
from lcs_train import at_alpha, load_subspace
from lcs_train.checkpoint import load_checkpoint, save_checkpoint
from lcs_train.errors import LcsError


# What a finished training run writes (history, momentum): the trained fixture, on the worker
# that trains it for test_training too.
pytestmark = pytest.mark.xdist_group("trained")


@pytest.fixture()
def checkpoint_copy(trained_checkpoint: Callable[[str, str], Path], tmp_path: Path) -> Path:
    path = tmp_path / "subspace.safetensors"
    path.write_bytes(trained_checkpoint("quantized", "line").read_bytes())
    return path


def test_round_trip_is_bit_exact(checkpoint_copy: Path, tmp_path: Path) -> None:
    loaded = load_checkpoint(checkpoint_copy, with_train_state=True)
    again = save_checkpoint(tmp_path / "again.safetensors", loaded.metadata, loaded.model_state, loaded.train_state)
    reloaded = load_checkpoint(again, with_train_state=True)
    for key, tensor in loaded.model_state.items():
        assert torch.equal(tensor, reloaded.model_state[key])
    first, _ = load_subspace(checkpoint_copy)
    second, _ = load_subspace(again)
    x = torch.randn(4, 1, 8, 8)
    with at_alpha(first, 0.6), at_alpha(second, 0.6):
        assert torch.equal(first(x), second(x))


def test_checkpoint_holds_what_export_needs(checkpoint_copy: Path) -> None:
    metadata = load_checkpoint(checkpoint_copy).metadata
    assert metadata["model"] == {"name": "cpreresnet11", "arguments": {"in_channels": 1, "num_classes": 10}}
    assert metadata["method"]["name"] == "quantized" and metadata["shape"] == "line"
    assert metadata["alpha"]["discrete"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert metadata["input"]["shape"] == [1, 1, 8, 8] and len(metadata["input"]["mean"]) == 1
    assert metadata["classes"] == [str(i) for i in range(10)]
    assert len(metadata["history"]) == metadata["epoch"] and metadata["complete"]
    assert {"torch", "python", "lcs"} <= set(metadata["versions"])


def test_truncated_checkpoint_is_refused(checkpoint_copy: Path) -> None:
    data = checkpoint_copy.read_bytes()
    checkpoint_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(LcsError, match="not a readable safetensors checkpoint"):
        load_checkpoint(checkpoint_copy)


def test_tampered_tensor_is_refused(checkpoint_copy: Path) -> None:
    data = bytearray(checkpoint_copy.read_bytes())
    data[-5] ^= 0xFF
    checkpoint_copy.write_bytes(bytes(data))
    with pytest.raises(LcsError, match="integrity check"):
        load_checkpoint(checkpoint_copy)


def test_tampered_metadata_is_refused(checkpoint_copy: Path) -> None:
    """Relabelling a quantized checkpoint as another method is caught, even with same tensors."""
    with safe_open(str(checkpoint_copy), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["lcs"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    metadata["method"] = {"name": "unstructured", "max_sparsity": 0.95}
    save_file(tensors, str(checkpoint_copy), metadata={"lcs": json.dumps(metadata)})
    with pytest.raises(LcsError, match="integrity check"):
        load_checkpoint(checkpoint_copy)


def test_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(LcsError, match="not an lcs subspace checkpoint"):
        load_checkpoint(path)


def test_interrupted_save_keeps_the_previous_checkpoint(checkpoint_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = checkpoint_copy.read_bytes()
    loaded = load_checkpoint(checkpoint_copy)

    def dies_half_way(step: str) -> None:
        if step == "written":
            raise KeyboardInterrupt

    monkeypatch.setattr(files_module, "pause_point", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(checkpoint_copy, loaded.metadata, loaded.model_state)
    assert checkpoint_copy.read_bytes() == before
    assert [p.name for p in checkpoint_copy.parent.iterdir()] == [checkpoint_copy.name]


def test_only_dead_writers_temporaries_of_the_same_file_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    dead = process.pid
    target = tmp_path / "run"
    stale = tmp_path / f".run.{dead}.0badc0de.tmp"
    live = tmp_path / f".run.{os.getppid()}.0000beef.tmp"
    # ``run.5``'s temporary starts with ``.run.5.``: its 5 is no pid of a writer of ``run``.
    other = tmp_path / f".run.5.{dead}.0badc0de.tmp"
    foreign = tmp_path / ".run.notapid.tmp"
    for path in (stale, live, other, foreign):
        path.write_bytes(b"x")
    files_module.atomic_write_bytes(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, foreign.name, "run"])
    assert target.read_bytes() == b"new"


#: A child that loads the file it is given and prints its peak resident memory (MiB): its own
#: VmHWM, since ru_maxrss of a child started by vfork starts from its parent's peak (a test
#: worker's, which training raises).
PEAK_LOADER = """
import re, sys
from lcs_train.errors import LcsError
from lcs_train.restore import load_subspace
try:
    load_subspace(sys.argv[1])
    print("loaded")
except LcsError as error:
    print("refused:", error.message)
with open("/proc/self/status") as status:
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) // 1024)
"""


def test_metadata_naming_a_huge_network_is_refused_before_it_is_built(
    subspace_checkpoint: Callable[[str, str], Path], tmp_path: Path
) -> None:
    """An edited file (digest recomputed) whose metadata names torchvision's RegNetY-128GF
    (645 M weights; as a line subspace, 8 GB to build) over a small network's tensors: the
    tensors are compared with the network built on the meta device, so the refusal comes
    before any of it is allocated."""
    import subprocess
    import sys

    from train_helpers import python_env, rewrite_checkpoint

    hostile = rewrite_checkpoint(subspace_checkpoint("unstructured", "line"), tmp_path / "hostile.safetensors",
                                 lambda metadata: metadata["model"].update(name="torchvision:regnet_y_128gf"))
    done = subprocess.run([sys.executable, "-c", PEAK_LOADER, str(hostile)], capture_output=True, text=True,
                          timeout=300, env=python_env())
    assert done.returncode == 0, done.stderr
    verdict, peak = done.stdout.strip().splitlines()
    assert verdict.startswith("refused:") and "does not match the network its metadata describes" in verdict
    assert int(peak) < 2048, f"peak {peak} MiB: the network was built before its tensors were checked"
