"""Benchmark of exported ONNX artifacts: per-call latency, level-switch cost and file sizes.

ONNX Runtime on CPU, batch 1, 2 intra-op threads, cPreResNet20. Every latency is the median
over interleaved bursts (each variant runs a burst in turn, round after round), so slow
drift of the machine hits all variants alike. What matters are the ratios:

- switch-once steady state over the static level at the same alpha (target <= 1.1x);
- the one-off cost of switching alpha on the switch-once path (target <= 50 ms), and against
  opening a static level file, for the demo model's three methods and (``--resnet18``) a
  ResNet18-sized unstructured line (target <= 2x; ``bench/switch_cost.py``);
- the single alpha-input graph's per-call cost over the static level (for reference);
- structured level at width 0.25 over width 1.0 (target <= 0.35x);
- 8-bit and 4-bit level files over the float level file (targets <= 0.30x and <= 0.20x);
- 7-, 6- and 5-bit level files with packed codes (the default) over one code a byte;
- unstructured level files with pruned weights stored compact (bit mask plus nonzero values,
  the default) over the same level stored dense (``dense_weights``), at alphas 0, 0.5 and 0.9
  (target <= 0.20x at 0.9), and at 0.9 the session creation time and per-call latency of both.

Usage: ``python bench/export.py [CHECKPOINT] [--rounds 20 --burst 25 --switch-rounds 15 --resnet18]``. Without a
checkpoint file an untrained cPreResNet20 subspace (MNIST-sized input) is used: latency and
size do not depend on training. The structured and quantized rows always use untrained
subspaces of the same architecture. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lcs_train.materialize import materialize_level  # noqa: E402
from lcs_train.methods import method_from_name  # noqa: E402
from lcs_train.restore import load_subspace  # noqa: E402
from lcs_train.shapes import shape_from_name  # noqa: E402
from lcs_train.subspace import build_subspace, model_method  # noqa: E402
from lcs_export.export import build_alpha_graph  # noqa: E402
from targets.inputs import Level  # noqa: E402
from targets.onnx.runner import AlphaInputRunner, LevelRunner, SwitchOnceRunner, _session  # noqa: E402
from targets.onnx.target import OnnxOptions, OnnxTarget  # noqa: E402
from switch_cost import export_pairs, resnet18_line, switch_against_open, switch_rows  # noqa: E402


def untrained(method: str, input_shape: tuple[int, int, int] = (1, 28, 28)) -> torch.nn.Module:
    """An untrained cPreResNet20 subspace (line) of ``method``: enough for latency and size."""
    torch.manual_seed(0)
    model = build_subspace(
        "cpreresnet20", method_from_name(method), shape_from_name("line"),
        in_channels=input_shape[0], num_classes=10,
    )
    return model.eval()


def interleaved_medians(calls: dict[str, Callable[[], object]], rounds: int, burst: int) -> dict[str, float]:
    """Median seconds per call of each callable, measured in interleaved bursts."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up: first runs allocate and pre-pack
        for _ in range(5):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(burst):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def export_level(model: torch.nn.Module, alpha: float, example: torch.Tensor, directory: Path,
                 options: OnnxOptions | None = None) -> Path:
    """Export the level at ``alpha`` with the ONNX target; returns the file."""
    level = Level(alpha, materialize_level(model, alpha, list(example.shape[1:])), {})
    artifact = OnnxTarget().export_levels([level], example, directory, options or OnnxOptions())[0]
    return directory / artifact.path


def median_session_creation(files: dict[str, Path], repeats: int) -> dict[str, float]:
    """Median seconds to open a session on each file (from bytes, as the runners do), interleaved."""
    data = {name: path.read_bytes() for name, path in files.items()}
    samples: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(repeats):
        for name, model in data.items():
            start = time.perf_counter()
            _session(model)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def sparse_storage_rows(model: torch.nn.Module, example: torch.Tensor, feed: dict[str, np.ndarray],
                        directory: Path, rounds: int, burst: int) -> list[tuple[str, str, str, str]]:
    """Compact (bit mask + values) over dense storage of unstructured levels: size, load, per call."""
    rows, files = [], {}
    for alpha in (0.0, 0.5, 0.9):
        compact = export_level(model, alpha, example, _mk(directory / f"compact-{alpha}"))
        dense = export_level(model, alpha, example, _mk(directory / f"dense-{alpha}"), OnnxOptions(dense_weights=True))
        files[alpha] = {"compact": compact, "dense": dense}
        size, dense_size = compact.stat().st_size, dense.stat().st_size
        rows.append((f"unstructured alpha {alpha:g}: compact level file / dense", f"{size:,} / {dense_size:,} B",
                     f"{size / dense_size:.3f}x", "<= 0.20x" if alpha == 0.9 else ""))
    opened = median_session_creation(files[0.9], 15)
    rows.append(("alpha 0.9: session creation, compact / dense",
                 f"{opened['compact'] * 1e3:.1f} / {opened['dense'] * 1e3:.1f} ms",
                 f"{opened['compact'] / opened['dense']:.2f}x", ""))
    compact, dense = (LevelRunner(files[0.9][name], 0.9) for name in ("compact", "dense"))
    calls = interleaved_medians({"compact": lambda: compact.session.run(None, feed),
                                 "dense": lambda: dense.session.run(None, feed)}, rounds, burst)
    rows.append(("alpha 0.9: per call, compact / dense",
                 f"{calls['compact'] * 1e3:.3f} / {calls['dense'] * 1e3:.3f} ms",
                 f"{calls['compact'] / calls['dense']:.2f}x", "~1.0x"))
    return rows


def switch_costs(runner: SwitchOnceRunner, alphas: list[float], repeats: int) -> dict[str, float]:
    """Median seconds of a level switch, and of its parts (weights graph, session creation)."""
    total, weights = [], []
    feeds = [{"alpha": np.array([a], np.float32)} for a in alphas]
    for index in range(repeats):
        alpha = alphas[index % len(alphas)]
        start = time.perf_counter()
        runner.switch(alpha)
        total.append(time.perf_counter() - start)
        start = time.perf_counter()
        runner.weights.run(None, feeds[index % len(alphas)])
        weights.append(time.perf_counter() - start)
    return {"switch": statistics.median(total), "weights_graph": statistics.median(weights)}


def main() -> None:
    """Run every measurement and print the table of ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="runs/demo/subspace.safetensors")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds per comparison")
    parser.add_argument("--burst", type=int, default=25, help="calls per variant per round")
    parser.add_argument("--switch-rounds", type=int, default=15, help="interleaved rounds of switch against open level")
    parser.add_argument("--resnet18", action="store_true",
                        help="also measure switches on a ResNet18-sized unstructured line (minutes of export)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if Path(args.checkpoint).is_file():
        model, checkpoint = load_subspace(args.checkpoint)
        input_shape = tuple(checkpoint.metadata["input"]["shape"][1:])
        source = args.checkpoint
    else:
        input_shape = (1, 28, 28)
        model, source = untrained("unstructured", input_shape), "untrained cPreResNet20 (no checkpoint found)"
    method = model_method(model)
    alpha = method.discrete_alphas()[len(method.discrete_alphas()) // 2] if method.discrete_alphas() else round(method.max_alpha / 2, 4)
    example = torch.randn(1, *input_shape)
    image = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as temporary, console.status("exporting and measuring"):
        directory = Path(temporary)
        console.log(f"subspace: {source}; {method.name}, alpha {alpha:g}")
        level = LevelRunner(export_level(model, alpha, example, directory), alpha)
        artifacts = OnnxTarget().export_alpha_input(build_alpha_graph(model, example), directory, OnnxOptions())
        single = AlphaInputRunner(directory / "alpha_input.onnx")
        offsets = next(a for a in artifacts if a.kind == "alpha_weights").details["constant_offsets"]
        patched = SwitchOnceRunner(directory / "alpha_weights.onnx", directory / "alpha_predict.onnx", offsets,
                                   mode="patch")
        bound = SwitchOnceRunner(directory / "alpha_weights.onnx", directory / "alpha_predict.onnx", offsets,
                                 mode="add_initializer")
        patched.switch(alpha)
        bound.switch(alpha)
        import onnxruntime as ort

        extended = ort.SessionOptions()
        extended.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        static_extended = _session(str(level.path), extended)
        console.log("measuring per-call latency (interleaved)")
        feed = {"input": image}
        medians = interleaved_medians({
            "static": lambda: level.session.run(None, feed),
            "static_extended": lambda: static_extended.run(None, feed),
            "switch_once": lambda: patched.predict.run(None, feed),
            "switch_once_add_initializer": lambda: bound.predict.run(None, feed),
            "single_graph": lambda: single.run(image, alpha),
        }, args.rounds, args.burst)
        base = medians["static"]
        rows += [
            ("static level, per call", f"{base * 1e3:.3f} ms", "1.00x", ""),
            ("switch-once (bytes patched), per call / static", f"{medians['switch_once'] * 1e3:.3f} ms",
             f"{medians['switch_once'] / base:.2f}x", "<= 1.1x"),
            ("switch-once (add_initializer: correct only at ORT_DISABLE_ALL), per call / static",
             f"{medians['switch_once_add_initializer'] * 1e3:.3f} ms",
             f"{medians['switch_once_add_initializer'] / base:.2f}x", ""),
            ("static level at ORT_ENABLE_EXTENDED / static", f"{medians['static_extended'] * 1e3:.3f} ms",
             f"{medians['static_extended'] / base:.2f}x", ""),
            ("single alpha-input graph, per call / static", f"{medians['single_graph'] * 1e3:.3f} ms",
             f"{medians['single_graph'] / base:.1f}x", ""),
        ]
        console.log("measuring level switches")
        switch_alphas = [0.0, alpha, float(method.max_alpha)]
        costs = switch_costs(patched, switch_alphas, 15)
        bound_costs = switch_costs(bound, switch_alphas, 15)
        rows += [
            ("switch alpha (bytes patched): weights graph + new session", f"{costs['switch'] * 1e3:.1f} ms", "", "<= 50 ms"),
            ("  of which the weights graph", f"{costs['weights_graph'] * 1e3:.1f} ms", "", ""),
            ("switch alpha (add_initializer, ORT_DISABLE_ALL)", f"{bound_costs['switch'] * 1e3:.1f} ms", "", ""),
        ]
        console.log("level switches against opening a level file (interleaved)")
        switch_alphas = [alpha, float(method.max_alpha), 0.0]
        rows += _switch_against_open_rows(f"{method.name} (demo)", model, alpha, example, image,
                                          switch_alphas, directory / "switch", args.switch_rounds)
        for name in ("quantized", "structured"):
            if name != method.name:
                other = untrained(name, input_shape)
                other_method = model_method(other)
                discrete = other_method.discrete_alphas()
                other_alpha = discrete[len(discrete) // 2] if discrete else round(other_method.max_alpha / 2, 4)
                rows += _switch_against_open_rows(
                    f"{name} (demo, untrained)", other, other_alpha, example, image,
                    [other_alpha, float(other_method.max_alpha), 0.0], directory / f"switch-{name}", args.switch_rounds)
        if args.resnet18:
            console.log("ResNet18-sized line: exporting (minutes)")
            big = resnet18_line()
            big_example = torch.randn(1, 3, 32, 32)
            big_image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
            rows += _switch_against_open_rows("unstructured ResNet18 line", big, 0.5, big_example, big_image,
                                              [0.5, 0.95, 0.0], directory / "switch-resnet18", args.switch_rounds)
        console.log("structured widths")
        structured = untrained("structured", input_shape)
        wide = LevelRunner(export_level(structured, 0.0, example, _mk(directory / "s0")), 0.0)
        narrow = LevelRunner(export_level(structured, 0.75, example, _mk(directory / "s1")), 0.75)
        widths = interleaved_medians({
            "wide": lambda: wide.session.run(None, feed), "narrow": lambda: narrow.session.run(None, feed),
        }, args.rounds, args.burst)
        rows.append(("structured width 0.25 / width 1.0, per call",
                     f"{widths['narrow'] * 1e3:.3f} / {widths['wide'] * 1e3:.3f} ms",
                     f"{widths['narrow'] / widths['wide']:.2f}x", "<= 0.35x"))
        console.log("quantized file sizes")
        quantized = untrained("quantized", input_shape)
        float_size = export_level(untrained("unstructured", input_shape), 0.0, example, _mk(directory / "f")).stat().st_size
        eight = export_level(quantized, 0.0, example, _mk(directory / "q8")).stat().st_size
        four = export_level(quantized, 0.8, example, _mk(directory / "q4")).stat().st_size
        rows += [
            ("8-bit level file / float level file", f"{eight:,} / {float_size:,} B", f"{eight / float_size:.2f}x", "<= 0.30x"),
            ("4-bit level file / float level file", f"{four:,} / {float_size:,} B", f"{four / float_size:.2f}x", "<= 0.20x"),
        ]
        for alpha, bits in ((0.2, 7), (0.4, 6), (0.6, 5)):
            packed = export_level(quantized, alpha, example, _mk(directory / f"p{bits}")).stat().st_size
            plain = export_level(quantized, alpha, example, _mk(directory / f"u{bits}"),
                                 OnnxOptions(dense_weights=True)).stat().st_size
            rows.append((f"{bits}-bit level file, codes packed / one code a byte", f"{packed:,} / {plain:,} B",
                         f"{packed / plain:.2f}x", ""))
        console.log("unstructured levels: compact and dense storage")
        sparse = model if method.name == "unstructured" else untrained("unstructured", input_shape)
        rows += sparse_storage_rows(sparse, example, feed, directory, args.rounds, args.burst)
    table = Table(title=f"ONNX Runtime {ort.__version__}, batch 1, 2 threads, cPreResNet20 ({method.name} at alpha {alpha:g})")
    for column in ("measure", "value", "ratio", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _switch_against_open_rows(label: str, model: torch.nn.Module, alpha: float, example: torch.Tensor,
                              image: np.ndarray, alphas: list[float], directory: Path,
                              rounds: int) -> list[tuple[str, str, str, str]]:
    """Export the switch-once pair(s) of ``model`` and the level file at ``alpha`` (default
    storage, and dense for an unstructured subspace: its compact default costs more to open),
    and measure switches against opening the level."""
    levels = {"default": export_level(model, alpha, example, _mk(directory / "level"))}
    if model_method(model).name == "unstructured":
        levels["dense"] = export_level(model, alpha, example, _mk(directory / "level-dense"),
                                       OnnxOptions(dense_weights=True))
    start = time.perf_counter()
    runners = export_pairs(model, example, _mk(directory))
    exported = time.perf_counter() - start
    rows = switch_rows(label, switch_against_open(levels, runners, image, alphas, rounds))
    rows.append((f"{label}: exporting the pair(s) (each variant; tables included)", f"{exported:.0f} s", "", ""))
    return rows


def _mk(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


if __name__ == "__main__":
    main()
