"""The compression functions on hand-checked tensors, eagerly and inside a captured graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lcs_train.compression import (
    affine_qparams,
    apply_magnitude_mask,
    channel_mask,
    fake_quantize,
    fake_quantize_tensor,
    magnitude_keep,
    magnitude_mask,
    quantize_codes,
)
from lcs_train.methods import Quantized, Structured, Unstructured


def test_magnitude_mask_zeroes_exactly_the_smallest_weights() -> None:
    weight = torch.tensor([0.1, -0.5, 0.3, 2.0, -0.05, 0.7, 0.2, -1.0])
    mask = magnitude_mask(weight, torch.tensor([0.5]))
    assert mask.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert magnitude_mask(weight, torch.tensor([0.0])).tolist() == [1] * 8
    assert magnitude_mask(weight, torch.tensor([1.0])).tolist() == [0] * 8


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9, 0.95])
def test_magnitude_mask_gives_exact_sparsity_per_layer(sparsity: float) -> None:
    weight = torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(1))
    mask = magnitude_mask(weight, torch.tensor([sparsity]))
    assert int((mask == 0).sum()) == round(sparsity * weight.numel())
    kept = weight.abs()[mask.bool()]
    pruned = weight.abs()[~mask.bool()]
    if len(kept) and len(pruned):
        assert pruned.max() < kept.min()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cpu_training_mask_equals_the_bool_mask_with_ties_and_gradients(dtype: torch.dtype) -> None:
    """Training on the CPU masks with hardshrink at the threshold; it must keep exactly the
    weights "|w| > k-th smallest |w|" keeps (a third of them tied in pairs) and pass the
    gradient to those only, at every sparsity including none and all."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(3000, dtype=dtype, generator=generator)
    weight[:1000] = -weight[1000:2000]
    weight.requires_grad_(True)
    upstream = torch.randn(3000, dtype=dtype, generator=generator)
    for sparsity in (0.0, 0.1, 0.5, 0.9, 0.95, 1.0):
        level = torch.tensor([sparsity])
        masked = apply_magnitude_mask(weight, level)
        expected = torch.where(magnitude_keep(weight, level), weight, 0.0)
        assert torch.equal(masked, expected)
        # Ties are pairs: "|w| > threshold" prunes the k-th smallest's twin too.
        assert round(sparsity * 3000) <= int((masked == 0).sum()) <= round(sparsity * 3000) + 1
        (got,) = torch.autograd.grad(masked, weight, upstream)
        (want,) = torch.autograd.grad(expected, weight, upstream)
        assert torch.equal(got, want)


class _Masker(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        return self.weight * magnitude_mask(self.weight, alpha)


def test_captured_graph_threshold_matches_eager_selection() -> None:
    weight = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(2))
    module = _Masker(weight)
    program = torch.export.export(module, (torch.tensor([0.5]),))
    graph_ops = {
        str(node.target)
        for module in program.graph_module.modules()
        if isinstance(module, torch.fx.GraphModule)
        for node in module.graph.nodes
    }
    assert any("sort" in op for op in graph_ops)  # the capture path, not the selection
    for alpha in (0.0, 0.3, 0.5, 0.77, 0.95):
        eager = module(torch.tensor([alpha]))
        captured = program.module()(torch.tensor([alpha]))
        assert torch.equal(eager, captured)


def test_channel_mask_keeps_the_first_channels() -> None:
    assert channel_mask(16, torch.tensor([0.25])).tolist() == [1] * 4 + [0] * 12
    assert channel_mask(64, torch.tensor([1.0])).tolist() == [1] * 64
    assert channel_mask(10, torch.tensor([0.55])).tolist() == [1] * 6 + [0] * 4  # round(5.5) = 6
    assert channel_mask(8, torch.tensor([0.0])).tolist() == [1] + [0] * 7  # never zero channels


def test_affine_quantization_grid_and_zero_point() -> None:
    x = torch.tensor([-1.0, 0.0, 0.6, 2.0])
    scale, zero_point, levels = affine_qparams(x.min(), x.max(), torch.tensor(2.0))
    assert float(levels) == 3.0
    assert float(scale) == pytest.approx(1.0)
    assert float(zero_point) == 1.0
    assert quantize_codes(x, scale, zero_point, levels).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert fake_quantize(x, scale, zero_point, levels).tolist() == [-1.0, 0.0, 1.0, 2.0]


def test_quantization_keeps_zero_exact_and_uses_all_levels() -> None:
    x = torch.linspace(0.3, 5.0, 1000)  # all positive: the range still widens to include 0
    out = fake_quantize_tensor(torch.cat([x, torch.zeros(3)]), torch.tensor(3.0))
    assert torch.all(out[-3:] == 0)
    assert len(torch.unique(out)) <= 8


def test_alpha_maps_to_the_documented_compression() -> None:
    quantized = Quantized()
    assert [quantized.level(a)["bits"] for a in quantized.discrete_alphas()] == [8, 7, 6, 5, 4, 3]
    assert Structured().level(0.75) == {"width": 0.25}
    assert Unstructured().level(0.9) == {"sparsity": 0.9}
    assert Unstructured().max_alpha == 0.95 and Structured().max_alpha == 0.75
