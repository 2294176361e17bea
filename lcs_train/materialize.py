"""Materialising a level: the subspace at one alpha as a plain network, compression made real.

``materialize_level(model, alpha)`` returns a module built from standard torch layers
(``nn.Conv2d``, ``nn.Linear``, ``nn.GroupNorm``, ``nn.InstanceNorm2d``) and two small custom
ones for quantized levels, traceable by ``torch.export`` and TorchScript. It computes what the
subspace computes at ``alpha`` in eval mode:

- unstructured: the interpolated weights with the pruned entries stored as zeros;
- structured: a physically narrower network. Every compressible conv keeps its first
  ``round(C * width)`` output channels and reads only the kept input channels; norms keep the
  same channels; the stem's output is cut to what block 1's norm keeps (its only consumer is
  a per-channel InstanceNorm followed by the mask) and the classifier reads only the kept
  features. Masked channels are exactly zero in the subspace, so dropping them changes
  nothing but the cost;
- quantized: weights stored as integer codes (uint8) with a per-tensor scale and zero point,
  dequantized in ``forward`` so that exporters can write the integers; the inputs of
  compressible layers fake-quantized with constants for that bit width.

``level_stats`` measures parameters, nonzeros and FLOPs on the materialised module.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lcs_train.compression import affine_qparams, kept_channels, quantize_codes
from lcs_train.level_layers import FakeQuantize, QuantizedConv2d, QuantizedLinear, QuantizedWeight
from lcs_train.errors import LcsError
from lcs_train.layers import CompressibleLayer, CompressibleLinear, CompressibleNorm
from lcs_train.methods import Dense, Quantized, Structured
from lcs_train.subspace import check_model_alpha, compressible_layers, model_method


def _parameter(value: Tensor) -> nn.Parameter:
    return nn.Parameter(value.detach().clone().contiguous(), requires_grad=False)


def _conv(weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> nn.Conv2d:
    out_channels, in_channels, kernel, _ = weight.shape
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=bias is not None)
    conv.weight = _parameter(weight)
    if bias is not None:
        conv.bias = _parameter(bias)
    return conv


def _linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    linear.weight = _parameter(weight)
    if bias is not None:
        linear.bias = _parameter(bias)
    return linear


def _norm(layer: CompressibleNorm, scale: Tensor, shift: Tensor) -> nn.Module:
    channels = scale.shape[0]
    if layer.kind == "instance":
        norm: nn.Module = nn.InstanceNorm2d(channels, eps=1e-5, affine=True, track_running_stats=False)
    else:
        norm = nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-5, affine=True)
    norm.weight = _parameter(scale)
    norm.bias = _parameter(shift)
    return norm


def _width_counts(layer: CompressibleLayer, alpha: Tensor) -> tuple[int, int]:
    """(kept input channels, kept output channels) of a layer at a structured level."""
    if isinstance(layer, CompressibleNorm):
        kept = _kept(layer.channels, layer, alpha)
        return kept, kept
    if isinstance(layer, CompressibleLinear):
        channels_in, channels_out = layer.in_features, layer.out_features
    else:
        channels_in, channels_out = layer.in_channels, layer.out_channels
    if isinstance(layer.method, Dense):
        if isinstance(layer, CompressibleLinear):
            # The classifier reads the final norm's masked features.
            return _kept(channels_in, layer, alpha), channels_out
        # The stem feeds only block 1's InstanceNorm, whose output keeps the first channels.
        return channels_in, _kept(channels_out, layer, alpha)
    # The architecture guarantees every compressible conv reads a channel-masked input.
    return _kept(channels_in, layer, alpha), _kept(channels_out, layer, alpha)


def _kept(channels: int, layer: CompressibleLayer, alpha: Tensor) -> int:
    # Same float32 arithmetic as Structured.output: width = 1 - alpha * ramp.
    width = 1.0 - alpha * layer.compression_ramp
    return int(kept_channels(channels, width).item())


def _quantized_weight(weight: Tensor, bits: Tensor) -> QuantizedWeight:
    scale, zero_point, levels = affine_qparams(weight.min(), weight.max(), bits)
    codes = quantize_codes(weight, scale, zero_point, levels)
    return QuantizedWeight(codes, scale, zero_point, int(bits.item()))


def _activation_quantizer(layer: CompressibleLayer, bits: Tensor) -> FakeQuantize | None:
    if not layer.quantize_activations:
        return None
    scale, zero_point, levels = affine_qparams(layer.activation_range[0], layer.activation_range[1], bits)
    return FakeQuantize(scale, zero_point, levels)


def _materialize_layer(layer: CompressibleLayer, alpha: Tensor, network_method: Any) -> nn.Module:
    """The plain module computing ``layer`` at ``alpha`` in a network of ``network_method``."""
    method = layer.method
    # Dense layers (stem, classifier) are narrowed too where they touch masked channels.
    structured = isinstance(network_method, Structured)
    if isinstance(layer, CompressibleNorm):
        scale, shift = layer.interpolated("weight", alpha), layer.interpolated("bias", alpha)
        if structured:
            kept, _ = _width_counts(layer, alpha)
            scale, shift = scale[:kept], shift[:kept]
        return _norm(layer, scale, shift)
    bias = None if layer.bias is None else layer.interpolated("bias", alpha)
    if isinstance(method, Quantized):
        bits = method.bits(alpha).reshape(())
        weight = _quantized_weight(layer.interpolated("weight", alpha), bits)
        activation = _activation_quantizer(layer, bits)
        if isinstance(layer, CompressibleLinear):
            return QuantizedLinear(weight, bias, activation)
        return QuantizedConv2d(weight, bias, layer.stride, layer.padding, activation)
    weight = layer.compressed_weight(alpha)
    trained_out = weight.shape[0]
    if structured:
        kept_in, kept_out = _width_counts(layer, alpha)
        weight = weight[:kept_out, :kept_in]
        bias = None if bias is None else bias[:kept_out]
    plain = _linear(weight, bias) if isinstance(layer, CompressibleLinear) else _conv(
        weight, bias, layer.stride, layer.padding
    )
    plain.trained_out_channels = trained_out
    return plain


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _named_compressible(model: nn.Module) -> Iterator[tuple[str, CompressibleLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, CompressibleLayer):
            yield name, module


@torch.no_grad()
def materialize_level(model: nn.Module, alpha: float) -> nn.Module:
    """A plain eval-mode module computing ``model`` (a subspace) at ``alpha``, compression real.

    ``alpha`` is validated against the trained range. The result records what it is in
    ``lcs_level`` (alpha, method, compression) and which layers are prunable in
    ``lcs_prunable`` (names of the compressible conv / linear layers).
    """
    method = model_method(model)
    alpha = check_model_alpha(model, alpha)
    if isinstance(method, Structured):
        kinds = {layer.kind for layer in compressible_layers(model) if isinstance(layer, CompressibleNorm)}
        if kinds - {"instance"}:
            raise LcsError(
                "a structured level can only be made narrower behind per-channel (instance) norms",
                "train structured subspaces with the method's default InstanceNorm",
            )
    # Same float32 tensor the layers build from a float alpha (CompressibleLayer.alpha_tensor).
    alpha_tensor = torch.full((1,), alpha, dtype=torch.float32)
    source = dict(_named_compressible(model))
    level = copy.deepcopy(model)
    prunable = []
    for name, layer in source.items():
        _replace(level, name, _materialize_layer(layer, alpha_tensor, method))
        if not isinstance(layer.method, Dense) and not isinstance(layer, CompressibleNorm):
            prunable.append(name)
    if hasattr(level, "lcs_method"):
        del level.lcs_method
    level.lcs_level = {"alpha": alpha, "method": method.name, "compression": method.level(alpha)}
    level.lcs_prunable = prunable
    level.requires_grad_(False)
    return level.eval()


def _weight_of(module: nn.Module) -> Tensor:
    if isinstance(module, QuantizedConv2d | QuantizedLinear):
        return module.weight()
    return module.weight


def _count_macs(level: nn.Module, input_shape: Sequence[int]) -> dict[str, dict[str, int]]:
    """Per conv / linear layer: dense MACs and MACs over nonzero weights, for one image."""
    counts: dict[str, dict[str, int]] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            weight = _weight_of(module)
            positions = output[0, 0].numel() if output.dim() > 2 else 1
            per_output = weight[0].numel()
            counts[name] = {
                "macs": output.shape[1] * positions * per_output,
                "nonzero_macs": int(torch.count_nonzero(weight)) * positions,
            }
        return record

    for name, module in level.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear | QuantizedConv2d | QuantizedLinear):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            level(torch.zeros(1, *list(input_shape)[-3:]))
    finally:
        for handle in handles:
            handle.remove()
    return counts


def level_stats(module: nn.Module, alpha: float, input_shape: Sequence[int]) -> dict[str, Any]:
    """Parameters, nonzeros, FLOPs and the measured compression of a level.

    ``module`` is a materialised level or a subspace (materialised at ``alpha`` first).
    ``input_shape`` is [C, H, W] or [1, C, H, W]. FLOPs count conv and linear layers
    (2 per multiply-accumulate, dense); ``nonzero_flops`` counts only nonzero weights (what a
    sparse kernel would do). ``measured`` is the real compression over the prunable layers:
    sparsity (fraction of zero weights), width (kept / trained output channels) or bits.
    """
    level = module if not hasattr(module, "lcs_method") else materialize_level(module, alpha)
    prunable = set(getattr(level, "lcs_prunable", []))
    weights = {name: _weight_of(m) for name, m in level.named_modules()
               if isinstance(m, nn.Conv2d | nn.Linear | QuantizedConv2d | QuantizedLinear)}
    parameters = sum(t.numel() for t in level.parameters()) + sum(
        m.codes.numel() for m in level.modules() if isinstance(m, QuantizedWeight)
    )
    nonzeros = sum(int(torch.count_nonzero(t)) for t in level.parameters()) + sum(
        int(torch.count_nonzero(m())) for m in level.modules() if isinstance(m, QuantizedWeight)
    )
    macs = _count_macs(level, input_shape)
    stats: dict[str, Any] = {
        "alpha": float(alpha),
        "parameters": int(parameters),
        "nonzeros": int(nonzeros),
        "macs": int(sum(c["macs"] for c in macs.values())),
        "flops": int(2 * sum(c["macs"] for c in macs.values())),
        "nonzero_flops": int(2 * sum(c["nonzero_macs"] for c in macs.values())),
    }
    pruned = [weights[name] for name in prunable if name in weights]
    total = sum(w.numel() for w in pruned)
    measured: dict[str, Any] = {}
    if total:
        measured["sparsity"] = float(sum(int((w == 0).sum()) for w in pruned) / total)
    info = getattr(level, "lcs_level", {})
    if info.get("method") == "structured":
        measured["width"] = _measured_width(level, prunable)
    quantized = [m.weight for m in level.modules() if isinstance(m, QuantizedConv2d | QuantizedLinear)]
    if quantized:
        measured["bits"] = max(q.bits for q in quantized)
        measured["weight_bytes_at_bits"] = int(sum(math.ceil(q.codes.numel() * q.bits / 8) for q in quantized))
    stats["measured"] = measured
    stats["compression"] = dict(info.get("compression", {}))
    return stats


def _measured_width(level: nn.Module, prunable: set[str]) -> float:
    """Kept output channels over trained ones, summed over the prunable convs."""
    kept = trained = 0
    for name in prunable:
        module = level.get_submodule(name)
        kept += int(module.weight.shape[0])
        trained += int(getattr(module, "trained_out_channels", module.weight.shape[0]))
    return kept / trained if trained else 1.0
