"""Wall time of writing ONNX files, with the exporter's torchlib registry built once per process
(``targets.onnx.torchlib_registry``, what every export does) over built on every call (what
``torch.onnx.export`` does by itself).

cPreResNet20 line subspaces (MNIST-sized input, untrained: export time does not depend on
training), one thread: a level file of each method, and the unstructured subspace's single
alpha-input graph. The two variants run interleaved, round after round, and each figure is the
median over the rounds; the ratio is what to read. Nothing here asserts on time.

    python bench/export_time.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from export import untrained  # noqa: E402
from lcs_export.export import build_alpha_graph  # noqa: E402
from lcs_train.materialize import materialize_level  # noqa: E402
from targets.inputs import Level  # noqa: E402
from targets.onnx import torchlib_registry  # noqa: E402
from targets.onnx.target import OnnxOptions, OnnxTarget  # noqa: E402

INPUT_SHAPE = [1, 28, 28]
#: (row, method, level alpha or None for the alpha-input graph)
CASES = [
    ("unstructured level, alpha 0.9", "unstructured", 0.9),
    ("structured level, width 0.5", "structured", 0.5),
    ("quantized level, 4 bits", "quantized", 0.75),
    ("unstructured alpha-input graph", "unstructured", None),
]


def _exporter(method: str, alpha: float | None, directory: Path) -> Callable[[], object]:
    model, target, example = untrained(method), OnnxTarget(), torch.zeros(1, *INPUT_SHAPE)
    if alpha is None:
        graph = build_alpha_graph(model, example, switch_once=False)
        return lambda: target.export_alpha_input(graph, directory, OnnxOptions())
    level = Level(alpha, materialize_level(model, alpha, INPUT_SHAPE), {})
    return lambda: target.export_levels([level], example, directory, OnnxOptions())


def _timed(call: Callable[[], object], cached: bool) -> float:
    # Uncached: the cache finds no registry class to patch, so torch builds its own per call.
    patch = contextlib.nullcontext() if cached else mock.patch.object(torchlib_registry, "registry_class",
                                                                      lambda: None)
    with patch:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per row (default 5)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    torch.set_num_threads(1)
    if torchlib_registry.registry_class() is None:
        raise SystemExit(f"this torch has no {torchlib_registry.SYMBOL} as the cache knows it: nothing to compare")
    table = Table(title=f"ONNX export wall time, 1 thread, median of {args.rounds} interleaved rounds")
    for column in ("file", "registry built per call s", "built once s", "ratio"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as temporary:
        for row, method, alpha in CASES:
            call = _exporter(method, alpha, Path(temporary))
            _timed(call, cached=True)  # warm-up: the first export imports and builds what both use
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.rounds):
                for cached in (False, True):
                    times[cached].append(_timed(call, cached))
            per_call, once = statistics.median(times[False]), statistics.median(times[True])
            table.add_row(row, f"{per_call:.2f}", f"{once:.2f}", f"[bold]{once / per_call:.2f}x[/bold]")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
