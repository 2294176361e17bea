"""A switch-once level switch against opening a static level file, with ONNX Runtime on CPU.

A switch is what a host does on a level change: run ``alpha_weights.onnx``, hand its outputs
to a new session of the predict file (``add_external_initializers``, what the Python runner
does; "bytes patched": written into a copy of the file's bytes, what a host that opens models
only from bytes does) and run it once. Opening a level is
creating a session from the level file's bytes and running it once. Both are measured in
interleaved rounds (open, then each switch variant, round after round), so drift of a busy
machine hits them alike; the figures that matter are the ratios (target: a switch at most
2x opening a level file). "sort-based" is the same weights graph with every unstructured
threshold found by a full sort, as before the bracket tables (``lcs_train.threshold_brackets``).

Run through ``bench/export.py`` (``--resnet18`` adds the ResNet18-sized model).
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from lcs_train import Line, Unstructured, to_subspace
from lcs_train.alpha_graph import AlphaWeightsModule, alpha_predict_module
from lcs_train.layers import CompressibleWeighted
from lcs_train.subspace import model_method
from targets.inputs import AlphaGraph, SwitchOnce
from targets.onnx.runner import SwitchOnceRunner, _session
from targets.onnx.target import OnnxOptions, OnnxTarget


def resnet18_line() -> nn.Module:
    """torchvision's ResNet18 (10 classes) as an unstructured line whose two ends are drawn
    independently (same scale per layer): to_subspace starts both ends equal, which would
    make the line a point; trained ends are pushed apart by the cos^2 regulariser."""
    torch.manual_seed(0)
    model = to_subspace(torchvision.models.resnet18(num_classes=10), Unstructured(), Line()).eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, CompressibleWeighted) and layer.method.compresses:
                layer.weight_end.copy_(torch.randn_like(layer.weight) * layer.weight.std())
    return model


def export_pairs(model: nn.Module, example: torch.Tensor, directory: Path) -> dict[str, SwitchOnceRunner]:
    """The switch-once pair as exported ("bracket tables" for an unstructured subspace,
    "switch" otherwise) and, for an unstructured subspace, the sort-based pair."""
    weights = AlphaWeightsModule(model).eval()
    variants = {"switch (bracket tables)" if len(weights.tables) else "switch": weights}
    if len(weights.tables):
        sort_based = copy.deepcopy(weights)
        sort_based.tables = nn.ModuleDict()  # no tables: alpha_constants falls back to the sort
        variants["switch (sort-based)"] = sort_based
    predict = alpha_predict_module(model).eval()
    runners = {}
    for name, module in variants.items():
        folder = directory / name.replace(" ", "-").replace("(", "").replace(")", "")
        folder.mkdir(parents=True, exist_ok=True)
        pair = SwitchOnce(module, predict, tuple(module.constant_names))
        graph = AlphaGraph(nn.Identity(), float(model_method(model).max_alpha), model_method(model).name, example, pair)
        artifacts = OnnxTarget().export_alpha_input(graph, folder, OnnxOptions(None, False, True))
        offsets = next(a for a in artifacts if a.kind == "alpha_weights").details["constant_offsets"]
        files = (folder / "alpha_weights.onnx", folder / "alpha_predict.onnx", offsets)
        runners[name] = SwitchOnceRunner(*files)
        if "sort" not in name:  # how a host that opens models only from bytes switches (the web app)
            runners[f"{name}, bytes patched"] = SwitchOnceRunner(*files, mode="patch")
    return runners


def switch_against_open(levels: dict[str, Path], runners: dict[str, SwitchOnceRunner], image: np.ndarray,
                        alphas: list[float], rounds: int) -> dict[str, float]:
    """Median seconds of opening each level file (``levels``: its storage -> path) and of each
    runner's switch (and of its weights graph alone), in interleaved rounds; each switch goes
    to the next of ``alphas``."""
    level_bytes = {f"open level ({storage})": Path(path).read_bytes() for storage, path in levels.items()}
    feed = {"input": image}
    samples: dict[str, list[float]] = {name: [] for name in level_bytes}
    for name in runners:
        samples[name] = []
        samples[f"  of which the weights graph, {name}"] = []
    for index in range(rounds + 1):
        alpha = alphas[index % len(alphas)]
        measured = {}
        for name, data in level_bytes.items():
            start = time.perf_counter()
            _session(data).run(None, feed)
            measured[name] = time.perf_counter() - start
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.switch(alpha)
            runner.predict.run(None, feed)
            measured[name] = time.perf_counter() - start
            start = time.perf_counter()
            runner.weights.run(None, {"alpha": np.array([alpha], np.float32)})
            measured[f"  of which the weights graph, {name}"] = time.perf_counter() - start
        if index:  # the first round warms up allocators and caches
            for name, value in measured.items():
                samples[name].append(value)
    return {name: statistics.median(values) for name, values in samples.items()}


def switch_rows(label: str, medians: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """Table rows: opening each level file, then each switch (and weights graph) over every
    one of them (ratios in the order the level files are listed)."""
    opens = {name: value for name, value in medians.items() if name.startswith("open level")}
    rows = [(f"{label}: {name} file (session + first run)", f"{value * 1e3:.1f} ms", "1.00x", "")
            for name, value in opens.items()]
    for name, value in medians.items():
        if name not in opens:
            target = "<= 2x" if name in ("switch (bracket tables)", "switch") else ""  # what the Python runner does
            ratios = " / ".join(f"{value / base:.2f}x" for base in opens.values())
            over = " / ".join(opens)
            rows.append((f"{label}: {name} over {over}", f"{value * 1e3:.1f} ms", ratios, target))
    return rows
