"""Compressible layers: drop-in replacements for ``nn.Conv2d``, ``nn.Linear`` and norm layers
whose parameters live on a subspace.

Each layer takes the constructor arguments of the torch layer it replaces, plus keyword-only
``method`` and ``shape``; ``from_dense`` converts an existing torch layer, copying its
parameters to every end of the subspace (``lcs_train.transform.to_subspace`` walks a model
with it). At run time a layer asks its shape for a parameter at the current alpha
(interpolation along a line) and its method for the compression (mask, quantization).
``alpha`` is a float set by :func:`lcs_train.subspace.set_alpha` or a tensor, which is how
export turns it into a graph input.

Each layer also knows how to become its plain torch counterpart (``plain``) from the weights
a method hands it; what those weights are is the method's business
(``lcs_train.methods.base.CompressionMethod``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from lcs_train.distributed import global_moments
from lcs_train.methods.base import CompressionMethod
from lcs_train.shapes import Line, Point, line_position


class CompressibleLayer(nn.Module):
    """State shared by every compressible layer: method, shape, alpha and training switches."""

    def __init__(self, method: CompressionMethod, shape: Point | Line) -> None:
        super().__init__()
        self.method = method
        self.shape = shape
        self.alpha: float | Tensor = 0.0
        #: scales the compression during the training warm-up (1 = full compression).
        self.compression_ramp: float | Tensor = 1.0
        #: activation quantization is switched on after the warm-up.
        self.quantize_activations: bool = True
        # Running input range for activation quantization; harmless for other methods.
        self.register_buffer("activation_range", torch.zeros(2))
        self.register_buffer("range_observed", torch.zeros((), dtype=torch.bool))

    def alpha_tensor(self, like: Tensor) -> Tensor:
        """alpha as a float tensor of shape [1] on ``like``'s device."""
        if isinstance(self.alpha, Tensor):
            return self.alpha.reshape(1).to(device=like.device, dtype=torch.float32)
        return torch.full((1,), float(self.alpha), device=like.device, dtype=torch.float32)

    def interpolated(self, name: str, alpha: Tensor) -> Tensor:
        """Parameter ``name`` at this alpha's position on the subspace."""
        return self.shape.value(self, name, line_position(alpha, self.method.max_alpha))

    def _register(self, name: str, initial: Tensor | None, draw: Callable[[], Tensor]) -> None:
        """Put parameter ``name`` on the subspace, from a converted layer's value or a fresh draw."""
        self.shape.register(self, name, (lambda: initial.detach().clone()) if initial is not None else draw)


class CompressibleWeighted(CompressibleLayer):
    """A conv or linear layer: its weight is compressed by the method, its input may be too."""

    #: output channels / features and input channels / features (set by subclasses)
    out_channels: int
    in_channels: int

    def compressed_weight(self, alpha: Tensor) -> Tensor:
        """The weight this layer multiplies with at ``alpha``."""
        return self.method.weight(self, self.interpolated("weight", alpha), alpha)

    def interpolated_bias(self, alpha: Tensor) -> Tensor | None:
        """The bias at ``alpha`` (None for a layer without one)."""
        return None if self.bias is None else self.interpolated("bias", alpha)

    def compute(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The layer's own operation with the given weight and bias."""
        raise NotImplementedError

    def plain(self, weight: Tensor, bias: Tensor | None) -> nn.Module:
        """The torch layer computing this one with constant ``weight`` and ``bias``.

        The weight may be narrower than the trained one (a structured level); the layer's
        other settings (stride, padding, groups, ...) carry over.
        """
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha_tensor(x)
        x = self.method.activation(self, x, alpha)
        y = self.compute(x, self.compressed_weight(alpha), self.interpolated_bias(alpha))
        return self.method.output(self, y, alpha)


def _same_padding(kernel_size: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) for padding="same" (extra pixel on the right/bottom)."""
    pads: list[int] = []
    for k, d in reversed(list(zip(kernel_size, dilation))):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return tuple(pads)  # type: ignore[return-value]


class CompressibleConv2d(CompressibleWeighted):
    """``nn.Conv2d`` (any groups, dilation, padding and padding mode) on a subspace."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        method: CompressionMethod,
        shape: Point | Line,
        initial: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__(method, shape)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} must divide by groups {groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.groups, self.padding_mode = groups, padding_mode
        initial = initial or {}
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        # torch's own Conv2d initialiser: with GroupNorm, the larger He-normal draw made
        # early training unstable at the learning rates the recipe uses.
        self._register("weight", initial.get("weight"), lambda: nn.init.kaiming_uniform_(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size), a=math.sqrt(5)))
        if bias:
            bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
            self._register("bias", initial.get("bias"), lambda: torch.empty(out_channels).uniform_(-bound, bound))
        else:
            self.bias = None

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, method: CompressionMethod, shape: Point | Line) -> CompressibleConv2d:
        """The compressible twin of ``conv``, starting (at every end) from its parameters."""
        initial = {"weight": conv.weight}
        if conv.bias is not None:
            initial["bias"] = conv.bias
        return cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,  # type: ignore[arg-type]
            method=method, shape=shape, initial=initial,
        )

    def compute(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode == "zeros":
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if self.padding == "same":
            pads = _same_padding(self.kernel_size, self.dilation)
        elif self.padding == "valid":
            pads = (0, 0, 0, 0)
        else:
            pads = (self.padding[1], self.padding[1], self.padding[0], self.padding[0])
        x = F.pad(x, pads, mode=self.padding_mode)
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)

    def plain(self, weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
        out_channels, in_per_group = weight.shape[:2]
        # A narrowed depthwise conv keeps one group per kept channel.
        depthwise = self.groups == self.in_channels == self.out_channels
        groups = out_channels if depthwise else self.groups
        conv = nn.Conv2d(in_per_group * groups, out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, groups, bias is not None, self.padding_mode)
        conv.weight = constant_parameter(weight)
        if bias is not None:
            conv.bias = constant_parameter(bias)
        return conv


class CompressibleLinear(CompressibleWeighted):
    """``nn.Linear`` on a subspace."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        method: CompressionMethod,
        shape: Point | Line,
        initial: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__(method, shape)
        self.in_features, self.out_features = in_features, out_features
        self.in_channels, self.out_channels = in_features, out_features
        initial = initial or {}
        bound = 1.0 / math.sqrt(in_features)
        self._register("weight", initial.get("weight"),
                       lambda: torch.empty(out_features, in_features).uniform_(-bound, bound))
        if bias:
            self._register("bias", initial.get("bias"), lambda: torch.empty(out_features).uniform_(-bound, bound))
        else:
            self.bias = None

    @classmethod
    def from_dense(cls, linear: nn.Linear, method: CompressionMethod, shape: Point | Line) -> CompressibleLinear:
        """The compressible twin of ``linear``, starting (at every end) from its parameters."""
        initial = {"weight": linear.weight}
        if linear.bias is not None:
            initial["bias"] = linear.bias
        return cls(linear.in_features, linear.out_features, linear.bias is not None,
                   method=method, shape=shape, initial=initial)

    def compute(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def plain(self, weight: Tensor, bias: Tensor | None) -> nn.Linear:
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        linear.weight = constant_parameter(weight)
        if bias is not None:
            linear.bias = constant_parameter(bias)
        return linear


class CompressibleNorm(CompressibleLayer):
    """GroupNorm or InstanceNorm with affine parameters on the subspace.

    ``kind`` is "group" (``groups`` groups, default 32 capped by the channels) or "instance".
    With ``explicit_affine`` set (export sets it for alpha-input graphs) the affine step is
    an explicit multiply-add rather than the norm's own weight/bias: Core ML's instance_norm
    needs compile-time-constant gamma/beta, which an alpha-input graph cannot give it.
    Training keeps the fused form, which is markedly faster on CPU.
    """

    #: the kinds this class computes (a kept BatchNorm is ``CompressibleBatchNorm``)
    KINDS: tuple[str, ...] = ("group", "instance")

    def __init__(
        self,
        channels: int,
        kind: str = "group",
        groups: int | None = None,
        eps: float = 1e-5,
        *,
        method: CompressionMethod,
        shape: Point | Line,
        initial: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__(method, shape)
        if kind not in self.KINDS:
            raise ValueError(f"norm kind must be one of {', '.join(map(repr, self.KINDS))}, got {kind!r}")
        self.channels, self.kind, self.eps = channels, kind, eps
        # 32 groups, capped by channels (groups must divide the channel count).
        self.groups = groups if groups is not None else math.gcd(32, channels)
        self.explicit_affine = False
        initial = initial or {}
        self._register("weight", initial.get("weight"), lambda: torch.ones(channels))
        self._register("bias", initial.get("bias"), lambda: torch.zeros(channels))

    @classmethod
    def from_dense(cls, norm: nn.Module, method: CompressionMethod, shape: Point | Line) -> CompressibleNorm:
        """The compressible twin of a GroupNorm, InstanceNorm2d or BatchNorm2d.

        BatchNorm becomes the method's normalisation (GroupNorm, or InstanceNorm for
        structured sparsity) with BatchNorm's affine as its start: LCS uses no per-level
        running statistics (see the design notes), so BatchNorm's are dropped. A GroupNorm
        under a method that needs per-channel norms (structured) becomes an InstanceNorm.
        """
        channels = norm.num_channels if isinstance(norm, nn.GroupNorm) else norm.num_features
        affine = getattr(norm, "affine", False) and norm.weight is not None
        initial = {"weight": norm.weight, "bias": norm.bias} if affine else None
        kind, groups = method.norm, None
        if isinstance(norm, nn.GroupNorm) and method.norm == "group":
            groups = norm.num_groups
        return cls(channels, kind, groups, norm.eps, method=method, shape=shape, initial=initial)

    def normalize(self, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
        """Normalise ``x``, with the per-channel affine when ``scale`` and ``shift`` are given."""
        if self.kind == "instance":
            return F.instance_norm(x, weight=scale, bias=shift, eps=self.eps)
        return F.group_norm(x, self.groups, scale, shift, eps=self.eps)

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha_tensor(x)
        scale = self.interpolated("weight", alpha)
        shift = self.interpolated("bias", alpha)
        if self.explicit_affine:
            y = self.normalize(x) * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
        else:
            y = self.normalize(x, scale, shift)
        return self.method.output(self, y, alpha)

    def plain(self, scale: Tensor, shift: Tensor) -> nn.Module:
        """The torch norm with constant affine ``scale`` and ``shift`` (possibly narrowed)."""
        channels = scale.shape[0]
        norm: nn.Module
        if self.kind == "instance":
            norm = nn.InstanceNorm2d(channels, eps=self.eps, affine=True, track_running_stats=False)
        else:
            if channels % self.groups:
                raise ValueError(f"a GroupNorm of {self.groups} groups cannot hold {channels} channels")
            norm = nn.GroupNorm(self.groups, channels, eps=self.eps, affine=True)
        norm.weight = constant_parameter(scale)
        norm.bias = constant_parameter(shift)
        return norm


def interpolate_rows(table: Tensor, position: Tensor) -> Tensor:
    """Row ``position`` ([1], fractional, in [0, rows - 1]) of ``table`` [rows, C], linear
    between the two neighbouring rows; a whole position is that row exactly.

    The one interpolation rule of the per-level statistics: PyTorch evaluation, materialised
    levels and the alpha-input graphs all call it. Written as hat weights times the table (no
    index computed from alpha), which every target converts: no gather, no floor.
    """
    rows = torch.arange(table.shape[0], dtype=table.dtype, device=table.device)
    weights = torch.clamp(1.0 - torch.abs(position.reshape(1).to(table.dtype) - rows), min=0.0)
    return weights @ table


class CompressibleBatchNorm(CompressibleNorm):
    """BatchNorm on a subspace, with running statistics per level.

    The affine scale and shift live on the subspace like every norm's. Training normalises
    with the batch's statistics and never touches the stored ones. At inference the mean and
    variance come from a table, ``level_mean`` and ``level_var`` [rows, C], one row per alpha
    of the method's ``statistics_alphas`` (11 points over the trained range, or one per bit
    width), interpolated linearly between neighbouring rows (``interpolate_rows``): a level
    changes the distribution every layer sees, so one set of statistics cannot serve them all
    (US-Nets' observation). ``lcs_train.calibrate.recalibrate_batch_norm`` fills the table
    from data after training; the training loop does so before every checkpoint.

    Under data-parallel training the batch statistics are those of the global batch,
    all-reduced across ranks (``lcs_train.distributed.global_moments``). Statistics are per
    full channel: a structured level that keeps the first k channels keeps their statistics.
    ``explicit_affine`` (the alpha-input graphs) writes the normalisation as multiply-adds,
    since Core ML's batch_norm needs constant statistics.
    """

    KINDS = ("batch",)

    def __init__(
        self,
        channels: int,
        eps: float = 1e-5,
        *,
        method: CompressionMethod,
        shape: Point | Line,
        initial: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__(channels, "batch", None, eps, method=method, shape=shape, initial=initial)
        initial = initial or {}
        rows = len(method.statistics_alphas())
        mean, var = initial.get("running_mean"), initial.get("running_var")
        # A converted BatchNorm's own statistics fill every row: a pretrained network runs as
        # it did (at alpha 0) until the first recalibration.
        self.register_buffer("level_mean", (torch.zeros(channels) if mean is None else mean.detach().float()).repeat(rows, 1))
        self.register_buffer("level_var", (torch.ones(channels) if var is None else var.detach().float()).repeat(rows, 1))
        #: (mean, var, batches) while ``recalibrate_batch_norm`` records; None otherwise
        self.recording: tuple[Tensor, Tensor, int] | None = None

    @classmethod
    def from_dense(cls, norm: nn.Module, method: CompressionMethod, shape: Point | Line) -> CompressibleBatchNorm:
        """The compressible twin of a BatchNorm2d: its affine at every end, its running
        statistics in every row of the table."""
        assert isinstance(norm, nn.BatchNorm2d)
        initial: dict[str, Tensor] = {}
        if norm.affine:
            initial.update(weight=norm.weight, bias=norm.bias)
        if norm.running_mean is not None and norm.running_var is not None:
            initial.update(running_mean=norm.running_mean, running_var=norm.running_var)
        return cls(norm.num_features, norm.eps, method=method, shape=shape, initial=initial)

    def level_statistics(self, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """Running mean and variance [C] at ``alpha``, interpolated from the table."""
        position = self.method.statistics_position(alpha, self.level_mean.shape[0])
        return interpolate_rows(self.level_mean, position), interpolate_rows(self.level_var, position)

    def start_recording(self) -> None:
        """Use batch statistics and average them (equal weight per batch, like BatchNorm's
        ``momentum=None``) until ``stop_recording``."""
        self.recording = (torch.zeros_like(self.level_mean[0]), torch.ones_like(self.level_var[0]), 0)

    def stop_recording(self) -> tuple[Tensor, Tensor] | None:
        """The averaged mean and variance since ``start_recording`` (None if no batch ran)."""
        if self.recording is None:
            return None
        mean, var, batches = self.recording
        self.recording = None
        return (mean, var) if batches else None

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha_tensor(x)
        scale = self.interpolated("weight", alpha)
        shift = self.interpolated("bias", alpha)
        if self.recording is not None:
            mean, var, batches = self.recording
            # torch's own kernel and cumulative average (momentum 1/n): the table row equals
            # what an nn.BatchNorm2d with momentum=None records on the same batches.
            y = F.batch_norm(x, mean, var, scale, shift, True, 1.0 / (batches + 1), self.eps)
            self.recording = (mean, var, batches + 1)
        elif self.training:
            moments = global_moments(x)
            if moments is None:
                y = F.batch_norm(x, None, None, scale, shift, True, 0.0, self.eps)
            else:
                # A data-parallel step: normalise with the global batch's statistics, so
                # every rank computes what one process does (no per-rank BatchNorm drift).
                y = self._multiply_add(x, *moments, scale, shift)
        else:
            mean, var = self.level_statistics(alpha)
            if self.explicit_affine:
                y = self._multiply_add(x, mean, var, scale, shift)
            else:
                y = F.batch_norm(x, mean, var, scale, shift, False, 0.0, self.eps)
        return self.method.output(self, y, alpha)

    def _multiply_add(self, x: Tensor, mean: Tensor, var: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """The normalisation written as one multiply-add per channel (differentiable in the
        statistics too, where ``F.batch_norm`` takes given statistics as constants)."""
        factor = scale * torch.rsqrt(var + self.eps)
        shape = [1, -1] + [1] * (x.dim() - 2)
        return x * factor.reshape(shape) + (shift - mean * factor).reshape(shape)

    def plain(self, scale: Tensor, shift: Tensor, mean: Tensor | None = None,  # type: ignore[override]
              var: Tensor | None = None) -> nn.Module:
        """An eval-mode ``nn.BatchNorm2d`` with constant affine and statistics (possibly narrowed)."""
        if mean is None or var is None:
            raise ValueError("a BatchNorm level needs its running mean and variance")
        norm = nn.BatchNorm2d(scale.shape[0], eps=self.eps)
        norm.weight = constant_parameter(scale)
        norm.bias = constant_parameter(shift)
        norm.running_mean.copy_(mean.detach())
        norm.running_var.copy_(var.detach())
        return norm.eval()


def constant_parameter(value: Tensor) -> nn.Parameter:
    """A frozen copy of ``value`` as a parameter of a materialised module."""
    return nn.Parameter(value.detach().clone().contiguous(), requires_grad=False)
