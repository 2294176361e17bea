"""Graphs that take alpha as an input: one single graph, and the switch-once pair.

An app changes level rarely and infers often. Recomputing the compressed weights inside the
inference graph on every call costs 10-58x a static level on CPU (a sort per layer for the
top-k threshold, and computed weights lose the runtime's constant-weight pre-packing), so
two forms are offered:

``AlphaInputModule`` -- one graph, ``forward(input, alpha) -> logits``. Everything,
including the compressed weights, is computed from alpha on every call. Simplest for a host;
slow per call. Use it where a level switch happens about as often as an inference.

The switch-once pair -- the alpha-dependent constants computed once per level switch:

- ``AlphaWeightsModule``: ``forward(alpha) -> tuple`` of every alpha-dependent constant, in
  the order of ``constant_names`` (compressed conv/linear weights and biases with structured
  channel masks folded in, norm scale/shift as [C], a kept BatchNorm's running mean/var at
  alpha as [C], activation quantization
  scale / zero point / top code as scalars). Output ``i`` is named ``constant_names[i]``.
- ``alpha_predict_module(model)``: ``forward(input) -> logits``, the same network with those
  constants as buffers of exactly those names, no prefix (exporters write them as
  initializers of those names). Its stored values are the alpha-0 constants, so by itself
  it is the alpha-0 level.

A host runs the weights graph once when the level changes and binds its outputs by name as
the predict graph's constants; the runtime then sees ordinary constant weights, pre-packs
them and applies its layout optimisations, so the per-call cost is the static level's. For
ONNX (``targets.onnx``) the binding is a byte copy of each output into the predict file at
recorded offsets before opening a session from the bytes, which works in every ONNX Runtime
flavour; ``SessionOptions.add_initializer`` is correct only with ORT_DISABLE_ALL (from
ORT_ENABLE_BASIC up, constant folding bakes the file's own values into folded nodes). Structured
levels keep their full width in this form (the masks are folded into zero rows and zero
scale/shift); a physically narrower network needs the static level files.

In every form alpha is a float32 tensor of shape [1], clamped to the trained range
[0, max_alpha] inside the graph, so out-of-range values run the nearest end and NaN runs
alpha 0 (quantized
alphas between whole bit widths round to the nearest bit width, as in training).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lcs_train.layers import CompressibleConv2d, CompressibleLayer, CompressibleLinear, CompressibleNorm
from lcs_train.methods import CompressionMethod
from lcs_train.subspace import model_method, set_alpha

#: Graph input / output names shared by every target.
INPUT_NAME = "input"
ALPHA_NAME = "alpha"
OUTPUT_NAME = "logits"


def clamp_alpha(alpha: Tensor, method: CompressionMethod) -> Tensor:
    """alpha as float32 [1], clamped to the trained range [0, max_alpha] (in the graph).

    A NaN alpha becomes 0, the most accurate end: clamp passes NaN through, and a NaN that
    reaches a table lookup or a top-k index makes the runtime fail (ONNX Gather) or compute
    garbage. ``alpha == alpha`` is false only for NaN; Equal and Where convert to every
    target (ONNX, Core ML, TorchScript), where an isnan op does not.
    """
    alpha = alpha.reshape(1).to(torch.float32)
    alpha = torch.where(alpha == alpha, alpha, torch.zeros_like(alpha))
    return torch.clamp(alpha, 0.0, float(method.max_alpha))


def _explicit_copy(model: nn.Module) -> nn.Module:
    """A private eval-mode copy whose InstanceNorms and BatchNorms apply their affine (and a
    BatchNorm its statistics) as a multiply-add.

    Core ML's instance_norm needs compile-time-constant gamma/beta, and its batch_norm
    constant statistics, which alpha-dependent ones are not; the explicit form converts
    everywhere. GroupNorm keeps the fused form:
    converters decompose it with no such limit, and the fused form computes bit for bit what
    the trained network computes (an explicit multiply-add rounds differently, and at low
    bit widths one rounding flip moves an activation by a whole quantization step).
    The copy keeps the caller's model untouched.
    """
    private = copy.deepcopy(model).eval()
    for module in private.modules():
        if isinstance(module, CompressibleNorm) and module.kind in ("instance", "batch"):
            module.explicit_affine = True
    return private


class AlphaInputModule(nn.Module):
    """The whole subspace as one graph: ``forward(input, alpha) -> logits``.

    ``alpha`` is float32 [1], clamped to [0, max_alpha] in the graph; compressed weights are
    recomputed from it on every call (see the module docstring for the faster pair).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.method = model_method(model)
        self.subspace = _explicit_copy(model)

    def forward(self, input: Tensor, alpha: Tensor) -> Tensor:  # noqa: A002 (graph input name)
        set_alpha(self.subspace, clamp_alpha(alpha, self.method))
        return self.subspace(input)


def _named_layers(model: nn.Module) -> Iterator[tuple[str, CompressibleLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, CompressibleLayer):
            yield name, module


def layer_constants(layer: CompressibleLayer, alpha: Tensor, tables: nn.Module | None = None) -> dict[str, Tensor]:
    """Every alpha-dependent constant of one layer, by local name (the layer's method says
    which: ``CompressionMethod.alpha_constants``, with the layer's ``switch_tables``; see
    ``AlphaWeightsModule``)."""
    return layer.method.alpha_constants(layer, alpha, tables)


class AlphaWeightsModule(nn.Module):
    """Switch-once, step 1: ``forward(alpha) -> tuple`` of every alpha-dependent constant.

    Output ``i`` is the constant called ``constant_names[i]`` (``<layer path>.<local name>``,
    e.g. ``stages.0.conv1.weight``, ``stages.0.norm1.scale``), which is also the buffer /
    initializer name in :func:`alpha_predict_module`. Tables its layers' methods precompute
    (``switch_tables``: unstructured thresholds without a sort, ``lcs_train.threshold_brackets``)
    are built here, once, from the layers' weights as they are now.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.method = model_method(model)
        self.subspace = _explicit_copy(model)
        # Precomputed per layer once, here, so that a switch runs no sort (keyed by the
        # layer's position: module names cannot hold the dots of a layer path).
        self.tables = nn.ModuleDict()
        for index, (_, layer) in enumerate(_named_layers(self.subspace)):
            tables = layer.method.switch_tables(layer)
            if tables is not None:
                self.tables[str(index)] = tables
        zero = torch.zeros(1)
        self.constant_names: list[str] = [
            f"{path}.{local}"
            for index, (path, layer) in enumerate(_named_layers(self.subspace))
            for local in layer_constants(layer, zero, self._tables_of(index))
        ]

    def _tables_of(self, index: int) -> nn.Module | None:
        return self.tables[str(index)] if str(index) in self.tables else None

    def forward(self, alpha: Tensor) -> tuple[Tensor, ...]:
        alpha = clamp_alpha(alpha, self.method)
        set_alpha(self.subspace, alpha)
        outputs = []
        for index, (_, layer) in enumerate(_named_layers(self.subspace)):
            outputs.extend(layer_constants(layer, alpha, self._tables_of(index)).values())
        return tuple(outputs)

    @torch.no_grad()
    def constants(self, alpha: float) -> dict[str, Tensor]:
        """Eagerly: the constants at ``alpha`` by name (clamped like the graph)."""
        values = self(torch.tensor([alpha], dtype=torch.float32))
        return {name: value.detach() for name, value in zip(self.constant_names, values)}


class _SwitchLayer(nn.Module):
    """Shared by the predict layers: constants live in buffers under their exported names."""

    def __init__(self, constants: dict[str, Tensor]) -> None:
        super().__init__()
        for name, value in constants.items():
            self.register_buffer(name, value.detach().clone().contiguous())

    def quantize_input(self, x: Tensor) -> Tensor:
        if not hasattr(self, "activation_scale"):
            return x
        # Same operations, in the same order, as lcs_train.compression.quantize_codes.
        codes = torch.minimum(
            torch.clamp(torch.round(x / self.activation_scale) + self.activation_zero_point, min=0.0),
            self.activation_levels,
        )
        return (codes - self.activation_zero_point) * self.activation_scale


class SwitchConv2d(_SwitchLayer):
    """Conv2d reading weight / bias / activation qparams from named buffers."""

    def __init__(self, layer: CompressibleConv2d, constants: dict[str, Tensor]) -> None:
        super().__init__(constants)
        if layer.padding_mode != "zeros":
            raise ValueError(f"the switch-once graph supports zero padding only, not {layer.padding_mode!r}")
        self.stride, self.padding, self.dilation, self.groups = layer.stride, layer.padding, layer.dilation, layer.groups
        self.has_bias = "bias" in constants

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias if self.has_bias else None
        return F.conv2d(self.quantize_input(x), self.weight, bias, self.stride, self.padding, self.dilation, self.groups)


class SwitchLinear(_SwitchLayer):
    """Linear layer reading weight / bias / activation qparams from named buffers."""

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias if hasattr(self, "bias") else None
        return F.linear(self.quantize_input(x), self.weight, bias)


class SwitchNorm(_SwitchLayer):
    """GroupNorm / InstanceNorm / BatchNorm whose affine scale and shift (and a BatchNorm's
    running mean and var) are named [C] buffers.

    The fused form: in the predict graph scale and shift are constants (Core ML's constant
    gamma/beta rule holds), exporters emit one affine step instead of a default one plus an
    explicit one, and GroupNorm rounds exactly as the trained network does.
    """

    def __init__(self, layer: CompressibleNorm, constants: dict[str, Tensor]) -> None:
        super().__init__(constants)
        self.kind, self.groups, self.eps = layer.kind, layer.groups, layer.eps

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "batch":
            return F.batch_norm(x, self.mean, self.var, self.scale, self.shift, False, 0.0, self.eps)
        if self.kind == "instance":
            return F.instance_norm(x, weight=self.scale, bias=self.shift, eps=self.eps)
        return F.group_norm(x, self.groups, self.scale, self.shift, eps=self.eps)


def alpha_predict_module(model: nn.Module, alpha: float = 0.0) -> nn.Module:
    """Switch-once, step 2: the network as ``forward(input) -> logits``, constants as buffers.

    The returned module is the subspace's own architecture with every compressible layer
    replaced by a layer whose alpha-dependent constants are buffers named exactly as in
    ``AlphaWeightsModule.constant_names`` (listed again in the module's ``constant_names``).
    It is built with the constants at ``alpha`` (default 0, the most accurate end); a host
    replaces them with the weights graph's outputs at the new level.
    """
    weights = AlphaWeightsModule(model)
    constants = weights.constants(alpha)
    network = copy.deepcopy(model).eval()
    for path, layer in list(_named_layers(network)):
        local = {name[len(path) + 1:]: value for name, value in constants.items()
                 if name.rpartition(".")[0] == path}
        replacement: nn.Module
        if isinstance(layer, CompressibleNorm):
            replacement = SwitchNorm(layer, local)
        elif isinstance(layer, CompressibleLinear):
            replacement = SwitchLinear(local)
        else:
            replacement = SwitchConv2d(layer, local)
        parent, _, child = path.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, child, replacement)
    network.constant_names = list(weights.constant_names)
    return network.requires_grad_(False)
