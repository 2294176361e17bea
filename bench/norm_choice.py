"""Which normalisation serves a BatchNorm network's subspace better: measured, not assumed.

(a) ``group``: ``to_subspace`` replaces every BatchNorm by the method's norm (GroupNorm for
    unstructured), starting from BatchNorm's affine; no running statistics (the paper's choice).
(b) ``batch``: BatchNorm is kept (a subclass, which ``to_subspace`` leaves alone), its affine
    shared by every level, and before evaluating each alpha its running statistics are
    recalibrated on training batches at that alpha (what universally slimmable networks do).
    ``batch-stale`` is the same trained network without the recalibration, for reference.

Same network, data, seed, steps and alpha sampling for all; prints held-out top-1 per alpha.

    python bench/norm_choice.py --model resnet18 --size 32 --epochs 15
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from lcs_train.data import load_dataset, random_shift
from lcs_train.methods import Unstructured
from lcs_train.sampling import sample_alphas
from lcs_train.shapes import Line
from lcs_train.subspace import at_alpha, line_cosine_squared, set_alpha, set_schedule
from lcs_train.transform import to_subspace


class KeptBatchNorm(nn.BatchNorm2d):
    """BatchNorm that ``to_subspace`` does not swap (it swaps only the exact torch classes)."""


def network(norm: str, channels: int, zero_init_residual: bool) -> nn.Module:
    """torchvision's ResNet18 for ``channels``-channel input, with the norm of option ``norm``."""
    layer = nn.BatchNorm2d if norm == "group" else KeptBatchNorm
    model = torchvision.models.resnet18(num_classes=10, norm_layer=layer, zero_init_residual=zero_init_residual)
    model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return to_subspace(model, Unstructured(), Line())


@torch.no_grad()
def recalibrate(model: nn.Module, images: Tensor, batches: int, batch_size: int) -> None:
    """Reset every BatchNorm's statistics and re-estimate them (cumulative mean) at the model's alpha."""
    norms = [m for m in model.modules() if isinstance(m, KeptBatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    for index in range(batches):
        model(images[index * batch_size : (index + 1) * batch_size])
    model.eval()


@torch.no_grad()
def top1(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    model.eval()
    return sum(int((model(images[i : i + 500]).argmax(1) == labels[i : i + 500]).sum()) for i in range(0, len(labels), 500)) / len(labels)


def run(norm: str, arguments: argparse.Namespace, device: torch.device) -> dict[str, dict[str, float]]:
    """Train option ``norm`` ("group" or "batch") and measure it; "batch" also reports its
    accuracy before recalibration ("batch-stale")."""
    dataset = load_dataset(arguments.dataset)
    resize = lambda x: F.interpolate(x, size=arguments.size, mode="bilinear", align_corners=False)  # noqa: E731
    train_x = resize(dataset.normalize(dataset.train_images)).to(device)
    train_y = dataset.train_labels.to(device)
    test_x, test_y = (t.to(device) for t in dataset.held_out())
    test_x = resize(test_x)
    torch.manual_seed(arguments.seed)
    model = network("group" if norm == "group" else "batch", train_x.shape[1], arguments.zero_init_residual).to(device)
    method, shape = Unstructured(), Line()
    optimizer = torch.optim.SGD(model.parameters(), lr=arguments.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = math.ceil(len(train_y) / arguments.batch_size)
    total = arguments.epochs * steps
    generator = torch.Generator().manual_seed(arguments.seed)
    started = time.perf_counter()
    for step in range(total):
        if step % steps == 0:
            order = torch.randperm(len(train_y), generator=generator).to(device)
        batch = order[(step % steps) * arguments.batch_size : (step % steps + 1) * arguments.batch_size]
        warm = steps  # one warm-up epoch, then cosine (the quick recipe)
        lr = arguments.lr * ((step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm))))
        for group in optimizer.param_groups:
            group["lr"] = lr
        set_schedule(model, min(1.0, step / (0.8 * total)), quantize_activations=True)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        images = random_shift(train_x[batch].cpu(), 2, generator).to(device)
        for alpha in sample_alphas(method, shape, generator):
            set_alpha(model, alpha)
            F.cross_entropy(model(images), train_y[batch]).backward()
        line_cosine_squared(model).backward()
        optimizer.step()
    set_schedule(model, 1.0, True)
    results = {norm if norm == "group" else "batch-stale": {}}
    for alpha in arguments.alphas:
        with at_alpha(model, alpha):
            for name in results:
                results[name][f"{alpha:g}"] = top1(model, test_x, test_y)
    if norm == "batch":
        results["batch"] = {}
        for alpha in arguments.alphas:
            with at_alpha(model, alpha):
                recalibrate(model, train_x, arguments.calibration_batches, 128)
                results["batch"][f"{alpha:g}"] = top1(model, test_x, test_y)
    for result in results.values():
        result["seconds"] = time.perf_counter() - started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--size", type=int, default=32, help="images are resized to size x size")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration-batches", type=int, default=8, help="training batches of 128 per alpha")
    parser.add_argument("--alphas", type=lambda s: [float(a) for a in s.split(",")], default=[0.0, 0.5, 0.9])
    parser.add_argument("--norms", default="group,batch")
    parser.add_argument("--zero-init-residual", action="store_true", help="each block's last norm starts at scale 0")
    arguments = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for norm in arguments.norms.split(","):
        for name, result in run(norm, arguments, device).items():
            cells = "  ".join(f"a={k}: {100 * v:.1f}%" for k, v in result.items() if k != "seconds")
            print(f"{name:12s} {arguments.dataset} {arguments.size}px seed {arguments.seed}: {cells}  ({result['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
