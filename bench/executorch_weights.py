"""ExecuTorch quantized levels: float32 weights (the default) against integer codes (``--weight-codes``).

For an untrained, calibrated quantized cPreResNet20 (28x28 input), each level is lowered three
ways and run through ``executorch.runtime`` at batch 1: median latency over interleaved calls,
the program's bytes and the time lowering took. With codes the convolutions read weights
computed in the graph, which XNNPACK does not take, so they run on the portable kernels; the
codes are lowered once with XNNPACK taking the elementwise ops in between and once on the
portable kernels alone (what ``--weight-codes`` writes). Nothing here asserts on time.

    python bench/executorch_weights.py [--calls 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lcs_train.calibrate import calibrate_activation_ranges  # noqa: E402
from lcs_train.materialize import materialize_level  # noqa: E402
from lcs_train.subspace import build_subspace, model_method  # noqa: E402
from lcs_train.methods import method_from_name  # noqa: E402
from lcs_train.shapes import shape_from_name  # noqa: E402
from targets.executorch.lower import export_program, fold_constants, lower  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_subspace("cpreresnet20", method_from_name("quantized"), shape_from_name("line"),
                           in_channels=1, num_classes=10)
    calibrate_activation_ranges(model, torch.randn(64, 1, 28, 28))
    from executorch.runtime import Runtime
    runtime = Runtime.get()
    image = torch.randn(1, 1, 28, 28)
    example = (torch.randn(2, 1, 28, 28),)
    for alpha in model_method(model).discrete_alphas()[::3]:
        level = materialize_level(model, alpha, [1, 28, 28]).eval()
        codes = export_program(level, example, 8)
        # (program, delegate): codes lowered with XNNPACK taking what it can, and on the
        # portable kernels alone (its convolutions are portable either way).
        programs = {"codes": (codes, True), "codes, portable": (codes, False),
                    "float32": (fold_constants(export_program(level, example, 8)), True)}
        methods, sizes, lowering, loaded = {}, {}, {}, []
        for name, (program, delegate) in programs.items():
            started = time.perf_counter()
            data = lower({"forward": program}, delegate=delegate).data
            lowering[name] = time.perf_counter() - started
            sizes[name] = len(data)
            loaded.append((data, runtime.load_program(data)))  # a method needs its program alive
            methods[name] = loaded[-1][1].load_method("forward")
            for _ in range(5):
                methods[name].execute([image])
        samples: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.calls):
            for name, method in methods.items():
                start = time.perf_counter()
                method.execute([image])
                samples[name].append(time.perf_counter() - start)
        median = {name: statistics.median(values) * 1e3 for name, values in samples.items()}
        print(f"alpha {alpha:g}: " + "; ".join(
            f"{name} {median[name]:.2f} ms, {sizes[name]:,} B, lowered in {lowering[name]:.1f} s" for name in methods))
        print(f"  codes over float32: latency {median['codes'] / median['float32']:.2f}x, size "
              f"{sizes['codes'] / sizes['float32']:.2f}x; codes portable over codes: latency "
              f"{median['codes, portable'] / median['codes']:.2f}x, lowering "
              f"{lowering['codes, portable'] / lowering['codes']:.2f}x")


if __name__ == "__main__":
    main()
