"""Median time of one LCS+L unstructured training step over a plain dense step.

Two networks, each against its own plain twin with the same norm layers (GroupNorm), so the
ratio is what the subspace adds (the line's two weight sets, the per-layer top-k masks, the
cos^2 regulariser), not a change of normalisation:

- ``cpreresnet20``: batch 128, 28x28 MNIST-sized input (target: at most 1.05x);
- ``resnet18``: torchvision's ResNet18 (GroupNorm) turned into a subspace by
  ``lcs_train.transform.to_subspace``, batch 8, 224x224 ImageNet-sized input (target: at most
  1.15x); its large layers (2.4 M weights) are where a top-k selection costs the most.

The two steps of a pair run interleaved in one process so that machine noise hits both alike;
the figure to read is the ratio. The subspace runs at full compression (the warm-up over)
and samples its alphas as training does (an endpoint half the time, else uniform).

    python bench/train_step.py [--model cpreresnet20|resnet18|all] [--steps N] [--batch-size B] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
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
from lcs_train.subspace import line_cosine_squared, set_schedule
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
        line_cosine_squared(subspace).backward()
        subspace_optimizer.step()

    timings: dict[str, list[float]] = {"plain dense step": [], "LCS+L unstructured step": []}
    for step in range(steps + 3):
        for name, run in (("plain dense step", plain_step), ("LCS+L unstructured step", subspace_step)):
            started = time.perf_counter()
            run()
            if step >= 3:  # the first steps pay for allocation and kernel selection
                timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*CASES, "all"], default="all")
    parser.add_argument("--steps", type=int, default=None, help="timed steps of each kind (default: 20 / 10)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 / 8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = list(CASES) if args.model == "all" else [args.model]
    table = Table(title=f"training step, {args.threads} threads, median of interleaved steps")
    for column in ("network", "batch", "steps", "plain dense ms", "LCS+L unstructured ms", "ratio", "target"):
        table.add_column(column, justify="right")
    for name in names:
        case = CASES[name]
        batch_size, steps = args.batch_size or case.batch_size, args.steps or case.steps
        medians = bench(case, batch_size, steps)
        ratio = medians["LCS+L unstructured step"] / medians["plain dense step"]
        table.add_row(case.title, str(batch_size), str(steps), f"{1000 * medians['plain dense step']:.1f}",
                      f"{1000 * medians['LCS+L unstructured step']:.1f}", f"[bold]{ratio:.3f}x[/bold]", f"<= {case.target}x")
    Console().print(table)


if __name__ == "__main__":
    main()
