"""Median time of one LCS+L unstructured training step over a plain dense step.

Same architecture (cPreResNet20, GroupNorm), batch 128, 28x28 MNIST-sized input, 2 threads.
The two steps run interleaved in one process so that machine noise hits both alike; the
figure to read is the ratio (target: at most 1.05x).

    python bench/train_step.py [--steps 20] [--batch-size 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from lcs_train import Line, Unstructured, build_subspace, set_alpha
from lcs_train.models import build_model
from lcs_train.sampling import sample_alphas
from lcs_train.subspace import line_cosine_squared, set_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 1, 28, 28)
    labels = torch.randint(0, 10, (args.batch_size,))

    plain = build_model("cpreresnet20", in_channels=1)
    method, shape = Unstructured(), Line()
    subspace = build_subspace("cpreresnet20", method, shape, in_channels=1)
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
    for step in range(args.steps + 3):
        for name, run in (("plain dense step", plain_step), ("LCS+L unstructured step", subspace_step)):
            started = time.perf_counter()
            run()
            if step >= 3:  # the first steps pay for allocation and kernel selection
                timings[name].append(time.perf_counter() - started)

    medians = {name: statistics.median(values) for name, values in timings.items()}
    ratio = medians["LCS+L unstructured step"] / medians["plain dense step"]
    table = Table(title=f"training step, cPreResNet20, batch {args.batch_size}, {args.threads} threads, {args.steps} steps each")
    table.add_column("step")
    table.add_column("median ms", justify="right")
    for name, value in medians.items():
        table.add_row(name, f"{1000 * value:.1f}")
    table.add_row("[bold]ratio LCS+L / dense[/bold]", f"[bold]{ratio:.3f}x[/bold] (target <= 1.05x)")
    Console().print(table)


if __name__ == "__main__":
    main()
