"""Median time of one LCS+L unstructured training step over a plain dense step.

Two networks, each against its own plain twin with the same norm layers (GroupNorm), so the
ratio is what the subspace adds (the line's two weight sets, the per-layer top-k masks, the
cos^2 regulariser), not a change of normalisation:

- ``cpreresnet20``: batch 128, 28x28 MNIST-sized input (target: at most 1.05x);
- ``resnet18``: torchvision's ResNet18 (GroupNorm) turned into a subspace by
  ``lcs_train.transform.to_subspace``, batch 8, 224x224 ImageNet-sized input (target: at most
  1.15x); its large layers (2.4 M weights) are where a top-k selection costs the most.

The two steps of a pair run interleaved in one process so that machine noise hits both alike;
the figure to read is the ratio. The subspace runs at full compression (the warm-up over),
samples its alphas and adds the regulariser's gradient as ``Trainer.fit`` does, with the
allocator settings ``fit`` uses (``lcs_train.cpu_memory``) for both networks. Each network is
measured in ``--processes`` fresh processes and the median ratio is the figure: the state of
one process's heap moved a single measurement by up to 0.1x.

    python bench/train_step.py [--model cpreresnet20|resnet18|all] [--steps N] [--batch-size B]
                               [--threads 2] [--processes 3] [--default-malloc]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from lcs_train import Line, Unstructured, set_alpha
from lcs_train.models import build_model
from lcs_train.sampling import sample_alphas
from lcs_train.cpu_memory import retain_freed_cpu_memory
from lcs_train.subspace import add_line_cosine_squared_gradient, set_schedule
from lcs_train.transform import to_subspace


@dataclass(frozen=True)
class Case:
    """One network to bench: how to build its plain twin, its input size and defaults."""

    title: str
    build_plain: Callable[[], nn.Module]
    channels: int
    size: int
    batch_size: int
    steps: int
    target: float


def _torchvision_resnet18() -> nn.Module:
    from torchvision.models import resnet18

    # GroupNorm as the subspace uses (to_subspace would swap BatchNorm for it anyway).
    return resnet18(norm_layer=lambda channels: nn.GroupNorm(min(32, channels), channels))


PLAIN_STEP, SUBSPACE_STEP = "plain dense step", "LCS+L unstructured step"

CASES: dict[str, Case] = {
    "cpreresnet20": Case("cPreResNet20, 28x28", lambda: build_model("cpreresnet20", in_channels=1), 1, 28, 128, 20, 1.05),
    "resnet18": Case("torchvision ResNet18, 224x224", _torchvision_resnet18, 3, 224, 8, 10, 1.15),
}


def bench(case: Case, batch_size: int, steps: int) -> dict[str, float]:
    """Median seconds of a plain dense step and of an LCS+L unstructured step of ``case``."""
    torch.manual_seed(0)
    images = torch.randn(batch_size, case.channels, case.size, case.size)
    labels = torch.randint(0, 10, (batch_size,))
    plain = case.build_plain()
    method, shape = Unstructured(), Line()
    # What build_subspace does for cPreResNet20, and the path for any torchvision network.
    subspace = to_subspace(case.build_plain(), method, shape)
    set_schedule(subspace, 1.0, True)  # full compression: the most work a step does
    plain_optimizer = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    subspace_optimizer = torch.optim.SGD(subspace.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)

    def plain_step() -> None:
        plain_optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(plain(images), labels).backward()
        plain_optimizer.step()

    def subspace_step() -> None:
        subspace_optimizer.zero_grad(set_to_none=True)
        for alpha in sample_alphas(method, shape, generator):
            set_alpha(subspace, alpha)
            F.cross_entropy(subspace(images), labels).backward()
        add_line_cosine_squared_gradient(subspace)  # as Trainer.fit adds the regulariser
        subspace_optimizer.step()

    timings: dict[str, list[float]] = {PLAIN_STEP: [], SUBSPACE_STEP: []}
    for step in range(steps + 3):
        for name, run in ((PLAIN_STEP, plain_step), (SUBSPACE_STEP, subspace_step)):
            started = time.perf_counter()
            run()
            if step >= 3:  # the first steps pay for allocation and kernel selection
                timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in timings.items()}


def _run_in_fresh_process(name: str, batch_size: int, steps: int, threads: int, default_malloc: bool
                          ) -> dict[str, float]:
    """``bench`` of one network in a new Python process (its medians, from a JSON line)."""
    command = [sys.executable, __file__, "--worker", "--model", name, "--batch-size", str(batch_size),
               "--steps", str(steps), "--threads", str(threads)] + (["--default-malloc"] if default_malloc else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the measurement of {name} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*CASES, "all"], default="all")
    parser.add_argument("--steps", type=int, default=None, help="timed steps of each kind (default: 20 / 10)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 / 8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", type=int, default=3,
                        help="fresh processes per network; the ratio read is their median (default 3)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc settings as they are (Trainer.fit changes them)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    torch.set_num_threads(args.threads)
    if not args.default_malloc:
        retain_freed_cpu_memory()  # as Trainer.fit does, for both networks
    names = list(CASES) if args.model == "all" else [args.model]
    if args.worker:
        case = CASES[names[0]]
        print(json.dumps(bench(case, args.batch_size or case.batch_size, args.steps or case.steps)))
        return
    malloc = "glibc malloc defaults" if args.default_malloc else "malloc as Trainer.fit sets it"
    table = Table(title=f"training step, {args.threads} threads, {malloc}, median of interleaved steps, "
                        f"median over {args.processes} processes")
    for column in ("network", "batch", "steps", "plain dense ms", "LCS+L unstructured ms", "ratio per process",
                   "ratio", "target"):
        table.add_column(column, justify="right")
    for name in names:
        case = CASES[name]
        batch_size, steps = args.batch_size or case.batch_size, args.steps or case.steps
        runs = [_run_in_fresh_process(name, batch_size, steps, args.threads, args.default_malloc)
                for _ in range(args.processes)]
        ratios = [run[SUBSPACE_STEP] / run[PLAIN_STEP] for run in runs]
        table.add_row(case.title, str(batch_size), str(steps),
                      f"{1000 * statistics.median(run[PLAIN_STEP] for run in runs):.1f}",
                      f"{1000 * statistics.median(run[SUBSPACE_STEP] for run in runs):.1f}",
                      ", ".join(f"{ratio:.3f}" for ratio in ratios),
                      f"[bold]{statistics.median(ratios):.3f}x[/bold]", f"<= {case.target}x")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
