"""ExecuTorch quantized levels: float32 weights (the default) against integer codes (``--weight-codes``).

For an untrained, calibrated quantized cPreResNet20 (28x28 input), each level is lowered both
ways and run through ``executorch.runtime`` at batch 1: median latency over interleaved calls
and the program's bytes. With codes the convolutions read weights computed in the graph, which
XNNPACK does not take, so they run on the portable kernels. Nothing here asserts on time.

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
from targets.executorch.lower import export_program, fold_constants, lower, quiet_executorch_import  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_subspace("cpreresnet20", method_from_name("quantized"), shape_from_name("line"),
                           in_channels=1, num_classes=10)
    calibrate_activation_ranges(model, torch.randn(64, 1, 28, 28))
    with quiet_executorch_import():
        from executorch.runtime import Runtime
    runtime = Runtime.get()
    image = torch.randn(1, 1, 28, 28)
    example = (torch.randn(2, 1, 28, 28),)
    for alpha in model_method(model).discrete_alphas()[::3]:
        level = materialize_level(model, alpha, [1, 28, 28]).eval()
        programs = {"codes": export_program(level, example, 8)}
        programs["float32"] = fold_constants(export_program(level, example, 8))
        methods, sizes, loaded = {}, {}, []
        for name, program in programs.items():
            data = lower({"forward": program}).data
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
        print(f"alpha {alpha:g}: float32 weights {median['float32']:.2f} ms, {sizes['float32']:,} B; "
              f"codes {median['codes']:.2f} ms, {sizes['codes']:,} B; "
              f"latency {median['float32'] / median['codes']:.2f}x, size {sizes['codes'] / sizes['float32']:.2f}x")


if __name__ == "__main__":
    main()
