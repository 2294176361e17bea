"""Small torch modules and conversion helpers for the MIL interpreter tests."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def quiet_coremltools():
    """Import coremltools with its Linux/untested-torch warnings silenced."""
    warnings.filterwarnings("ignore", module="coremltools")
    warnings.filterwarnings("ignore", message=".*coremltools.*")
    import coremltools as ct

    return ct


def convert(
    module: nn.Module,
    example: Sequence[torch.Tensor],
    input_names: Sequence[str],
    *,
    target,
    precision,
    via: str = "trace",
    output_names: Sequence[str] | None = None,
):
    """Convert ``module`` to an ML program with fp32 inputs; ``via`` is "trace" or "export"."""
    ct = quiet_coremltools()
    module = module.eval()
    if via == "trace":
        source = torch.jit.trace(module, tuple(example))
    else:
        source = torch.export.export(module, tuple(example)).run_decompositions({})
    inputs = [
        ct.TensorType(name=name, shape=tuple(t.shape), dtype=np.float32)
        for name, t in zip(input_names, example)
    ]
    outputs = None if output_names is None else [ct.TensorType(name=n) for n in output_names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ct.convert(
            source,
            convert_to="mlprogram",
            inputs=inputs,
            outputs=outputs,
            minimum_deployment_target=target,
            compute_precision=precision,
        )


def save(model, directory: Path, name: str) -> Path:
    path = Path(directory) / f"{name}.mlpackage"
    model.save(str(path))
    return path


class SmallCNN(nn.Module):
    """conv -> group norm (+affine by hand) -> relu -> strided conv -> instance norm -> relu
    -> adaptive avg pool -> flatten -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.g_w = nn.Parameter(torch.randn(8))
        self.g_b = nn.Parameter(torch.randn(8))
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.i_w = nn.Parameter(torch.randn(16))
        self.i_b = nn.Parameter(torch.randn(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c1(x)
        x = F.group_norm(x, 4) * self.g_w[None, :, None, None] + self.g_b[None, :, None, None]
        x = F.relu(x)
        x = self.c2(x)
        x = F.instance_norm(x) * self.i_w[None, :, None, None] + self.i_b[None, :, None, None]
        x = F.relu(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class AlphaNet(nn.Module):
    """Weights computed in the graph from alpha: a line w(t) = (1-t) w0 + t w1, magnitude top-k
    pruning via sort + gather, a structured channel mask and affine fake quantization with
    bits = round(8 - 5 alpha)."""

    def __init__(self) -> None:
        super().__init__()
        self.w0 = nn.Parameter(torch.randn(8, 3, 3, 3))
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3))
        self.q0 = nn.Parameter(torch.randn(8, 8, 3, 3) * 0.3)
        self.q1 = nn.Parameter(torch.randn(8, 8, 3, 3) * 0.3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        w = (1 - alpha) * self.w0 + alpha * self.w1
        s = torch.sort(w.abs().flatten()).values
        k = torch.round(alpha * s.numel()).long()
        thr = torch.cat([s.new_full((1,), -1.0), s])[k]
        w = w * (w.abs() > thr)
        y = F.relu(F.conv2d(x, w, padding=1))
        channels = y.shape[1]
        mask = (torch.arange(channels) < torch.round(channels * (1 - alpha))).to(y.dtype)
        y = y * mask[None, :, None, None]
        q = (1 - alpha) * self.q0 + alpha * self.q1
        bits = torch.round(8 - 5 * alpha)
        qmax = 2**bits - 1
        lo, hi = q.min(), q.max()
        scale = (hi - lo) / qmax
        zp = torch.round(-lo / scale)
        qq = torch.clamp(torch.round(q / scale) + zp, torch.zeros_like(qmax), qmax)
        q = (qq - zp) * scale
        y = F.relu(F.conv2d(y, q, padding=1))
        return self.fc(y.mean(dim=(2, 3)))


class CompressNet(nn.Module):
    """A tiny float network whose weights the coremltools.optimize tests compress."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, groups=2)
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(x.mean((2, 3)))


# One torch expression per op (group) under test. Every case must depend on the input, or the
# converter would fold it into a constant. Each entry: name -> f(x, params) with x of shape
# (1, 4, 6, 6) (values roughly in [-2, 2]).
OpCase = Callable[[torch.Tensor, "OpZoo"], torch.Tensor]


class OpZoo(nn.Module):
    """Many small ops side by side; each is its own named output, so one conversion checks all."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_g = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)
        self.conv_same = nn.Conv2d(4, 4, (3, 2), padding="same", bias=False)
        self.conv_valid = nn.Conv2d(4, 3, 2, stride=(1, 2))
        self.conv_dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.deconv = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.ln = nn.LayerNorm(6)
        self.lin = nn.Linear(6, 5)
        self.mat = nn.Parameter(torch.randn(6, 3))
        self.prelu = nn.PReLU(4)

    def forward(self, x: torch.Tensor):
        return tuple(fn(x, self) for fn in OP_CASES.values())


def _idx(x: torch.Tensor) -> torch.Tensor:
    """Integer indices that depend on the input (so they are not constant-folded)."""
    return (x[0, 0, 0].abs() * 3).long().clamp(0, 5)


OP_CASES: dict[str, OpCase] = {
    "conv_grouped_dilated": lambda x, m: m.conv_g(x),
    "conv_same": lambda x, m: m.conv_same(x),
    "conv_valid_strided": lambda x, m: m.conv_valid(x),
    "conv_depthwise": lambda x, m: m.conv_dw(x),
    "conv_transpose": lambda x, m: m.deconv(x),
    "linear": lambda x, m: m.lin(x),
    "matmul": lambda x, m: x @ m.mat,
    "bmm": lambda x, m: x @ x.transpose(-1, -2),
    "batch_norm": lambda x, m: m.bn(x),
    "instance_norm": lambda x, m: F.instance_norm(x),
    "layer_norm": lambda x, m: m.ln(x),
    "group_norm": lambda x, m: F.group_norm(x, 2),
    "relu": lambda x, m: F.relu(x),
    "relu6": lambda x, m: F.relu6(x * 4),
    "sigmoid": lambda x, m: torch.sigmoid(x),
    "tanh": lambda x, m: torch.tanh(x),
    "softmax": lambda x, m: torch.softmax(x, dim=1),
    "gelu": lambda x, m: F.gelu(x),
    "gelu_tanh": lambda x, m: F.gelu(x, approximate="tanh"),
    "silu": lambda x, m: F.silu(x),
    "leaky_relu": lambda x, m: F.leaky_relu(x, 0.1),
    "elu": lambda x, m: F.elu(x),
    "hardsigmoid": lambda x, m: F.hardsigmoid(x),
    "softplus": lambda x, m: F.softplus(x),
    "prelu": lambda x, m: m.prelu(x),
    "clip": lambda x, m: torch.clamp(x, -0.5, 0.7),
    "avg_pool": lambda x, m: F.avg_pool2d(x, 2),
    "avg_pool_ceil_pad": lambda x, m: F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
    "max_pool": lambda x, m: F.max_pool2d(x, 3, 2, padding=1),
    "reduce_mean": lambda x, m: x.mean(dim=(2, 3)),
    "reduce_sum": lambda x, m: x.sum(dim=1, keepdim=True),
    "reduce_max": lambda x, m: x.amax(dim=-1),
    "reduce_min": lambda x, m: x.amin(dim=2),
    "reduce_l2": lambda x, m: torch.linalg.vector_norm(x, dim=(2, 3)),
    "reduce_logsumexp": lambda x, m: torch.logsumexp(x, dim=1),
    "argmax": lambda x, m: x.argmax(dim=1).int(),
    "reshape": lambda x, m: x.reshape(2, 2, 36),
    "permute": lambda x, m: x.permute(0, 2, 3, 1),
    "concat": lambda x, m: torch.cat([x, x * 2], dim=1),
    "stack": lambda x, m: torch.stack([x, -x], dim=2),
    "split": lambda x, m: torch.split(x, [1, 3], dim=1)[1],
    "squeeze": lambda x, m: x[:, :1].squeeze(1),
    "unsqueeze": lambda x, m: x.unsqueeze(2),
    "slice_strided": lambda x, m: x[:, 1:3, ::2, -3:],
    "slice_select": lambda x, m: x[:, 2],
    "narrow": lambda x, m: x.narrow(3, 1, 4),
    "index_select": lambda x, m: x.index_select(2, _idx(x)),
    "gather_along_axis": lambda x, m: torch.gather(x, 3, _idx(x).reshape(1, 1, 1, 6).expand(1, 4, 6, 6)),
    "scatter_add": lambda x, m: torch.zeros_like(x).scatter_add(3, _idx(x).reshape(1, 1, 1, 6).expand(1, 4, 6, 6), x),
    "add": lambda x, m: x + 1.5,
    "sub": lambda x, m: 2 - x,
    "mul": lambda x, m: x * x,
    "div": lambda x, m: x / (x.abs() + 1),
    "floor_div": lambda x, m: torch.floor_divide(x * 4, 3),
    "pow": lambda x, m: x.abs() ** 1.7,
    "maximum": lambda x, m: torch.maximum(x, x.flip(3)),
    "minimum": lambda x, m: torch.minimum(x, -x),
    "sqrt": lambda x, m: torch.sqrt(x.abs()),
    "rsqrt": lambda x, m: torch.rsqrt(x.abs() + 0.1),
    "abs": lambda x, m: x.abs(),
    "floor": lambda x, m: torch.floor(x * 3),
    "ceil": lambda x, m: torch.ceil(x * 3),
    "round": lambda x, m: torch.round(x * 3),
    "sign": lambda x, m: torch.sign(x),
    "exp": lambda x, m: torch.exp(x),
    "log": lambda x, m: torch.log(x.abs() + 0.1),
    "sin_cos": lambda x, m: torch.sin(x) + torch.cos(x),
    "erf": lambda x, m: torch.erf(x),
    "less_greater": lambda x, m: torch.logical_or(x < 0.2, x > 1.0).float(),
    "equal": lambda x, m: (torch.round(x) == 0).float(),
    "logical_and_not": lambda x, m: ((x > -1) & ~(x > 1)).float(),
    "where": lambda x, m: torch.where(x > 0, x, x * 0.1),
    "cast_int": lambda x, m: (x * 3).int(),
    "full_like": lambda x, m: torch.full_like(x, 2.5) + x,
    "arange": lambda x, m: torch.arange(x.shape[-1]).to(x.dtype) * x,
    "repeat": lambda x, m: x.repeat(1, 2, 1, 1),
    "argsort": lambda x, m: torch.argsort(x[0, 0].flatten(), descending=True).int(),
    "sort_values": lambda x, m: torch.sort(x, dim=-1).values,
    "topk": lambda x, m: torch.topk(x.flatten(1), 5).values,
    "topk_indices": lambda x, m: torch.topk(x.flatten(1), 5).indices.int(),
    "cumsum": lambda x, m: torch.cumsum(x, dim=3),
    "pad_reflect": lambda x, m: F.pad(x, (1, 2, 2, 1), mode="reflect"),
    "pad_constant": lambda x, m: F.pad(x, (1, 1, 0, 2), value=0.5),
    "upsample_nearest": lambda x, m: F.interpolate(x, scale_factor=2, mode="nearest"),
    "pixel_shuffle": lambda x, m: F.pixel_shuffle(x, 2),
    "flatten": lambda x, m: x.flatten(1),
}
