"""Shared fixtures: tiny subspace checkpoints, each built once per session (per xdist worker).

- ``subspace_checkpoint(method, shape)``: random weights, calibrated, never trained (well
  under a second): for export, parity, manifest, bundle, app and input-checking tests;
- ``trained_checkpoint(method, shape)``: trained for an epoch or two on the 8x8 digits (seconds):
  only for tests of training and of accuracy. Tests that use it are in the ``trained``
  xdist group, so that one worker trains each subspace once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from helpers import built_once_per_run, random_subspace, train_tiny

#: Under pytest-xdist every worker is one process on a shared machine: one torch thread each
#: (and for the processes tests start) instead of each claiming every core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
THREADS = torch.get_num_threads()

#: A run started in the background of a non-interactive shell (``make test &``) inherits
#: SIGINT ignored, and so would every process the Ctrl-C tests start (an ignored signal stays
#: ignored across exec; a handler is reset to the default). Seen once: a backgrounded CI run
#: whose interrupted exports slept through their SIGINT.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """Put back the worker's torch thread count after a test that changed it (the trainer's
    ``--threads``, a test's own setting): a worker left on two threads beside another worker
    oversubscribes the cores and slows every later test it runs several times over."""
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


def _cached(factory: pytest.TempPathFactory, kind: str, build: Callable[[Path, str, str], Path],
            per_run: bool = False) -> Callable[[str, str], Path]:
    """``get(method, shape)``: the checkpoint ``build`` writes, built once per worker, or with
    ``per_run`` once for the whole run (``helpers.built_once_per_run``)."""
    cache: dict[tuple[str, str], Path] = {}

    def get(method: str = "unstructured", shape: str = "line") -> Path:
        key = (method, shape)
        if key not in cache:
            name = f"{kind}-{method}-{shape}"
            if per_run:
                directory = built_once_per_run(factory, name, "subspace.safetensors",
                                               lambda d: build(d / "subspace.safetensors", method, shape))
                cache[key] = directory / "subspace.safetensors"
            else:
                cache[key] = build(factory.mktemp(name) / "subspace.safetensors", method, shape)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def subspace_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``subspace_checkpoint(method, shape)``: an untrained, calibrated digits subspace, built
    once for the whole run (both xdist workers read the same file; copy it to change it)."""
    return _cached(tmp_path_factory, "random", random_subspace, per_run=True)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``trained_checkpoint(method, shape)``: a digits subspace trained briefly (``helpers.train_tiny``)."""
    return _cached(tmp_path_factory, "trained", train_tiny)


@pytest.fixture(scope="session")
def onnx_app_bundle(subspace_checkpoint: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unstructured line fixture as the sample apps load it: ONNX level files at 0, 0.5 and
    0.9 plus the alpha graphs (single graph and switch-once pair), validated on 60 held-out
    samples (``bundle_helpers.onnx_bundle``: exported once for the whole run, and the same
    bundle the bundle-safety, fuzz and interruption tests start from). Tests that change it
    work on a copy."""
    from bundle_helpers import onnx_bundle

    return onnx_bundle(tmp_path_factory, subspace_checkpoint("unstructured", "line"))
