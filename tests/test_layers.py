"""Compressible layers: gradients flow as the method specifies, alpha as float or tensor."""

from __future__ import annotations

import torch

from lcs_train import Line, Point, Quantized, Structured, Unstructured, at_alpha, build_subspace, set_alpha
from lcs_train.layers import CompressibleConv2d, CompressibleLinear
from lcs_train.subspace import line_cosine_squared, set_schedule


def test_pruned_weights_get_no_task_gradient() -> None:
    layer = CompressibleLinear(16, 4, method=Unstructured(), shape=Point())
    layer.alpha = 0.5
    layer(torch.randn(8, 16)).square().sum().backward()
    kept = layer.compressed_weight(torch.tensor([0.5])) != 0
    assert torch.all(layer.weight.grad[~kept] == 0)
    assert torch.all(layer.weight.grad[kept] != 0)


def test_quantization_gradient_is_straight_through() -> None:
    layer = CompressibleLinear(16, 4, method=Quantized(), shape=Point())
    layer.alpha = 1.0  # 3 bits: the forward really changes the weights
    x = torch.randn(8, 16)
    layer.eval()
    layer(x).sum().backward()
    # d(sum(x W^T))/dW is the (quantized) input summed over the batch, as if the weight
    # rounding were not there.
    quantized_input = layer.method.activation(layer, x, torch.tensor([1.0]))
    expected = quantized_input.sum(0).expand(4, 16)
    assert torch.allclose(layer.weight.grad, expected, atol=1e-5)


def test_line_gradient_splits_between_the_ends() -> None:
    layer = CompressibleConv2d(3, 4, 3, padding=1, method=Unstructured(), shape=Line())
    set_schedule(layer, 0.0, True)  # no pruning: isolate the interpolation
    layer.alpha = 0.95 * 0.25  # t = 0.25
    layer(torch.randn(2, 3, 5, 5)).sum().backward()
    assert torch.allclose(layer.weight.grad * 0.25, layer.weight_end.grad * 0.75, atol=1e-5)


def test_alpha_as_tensor_matches_alpha_as_float() -> None:
    torch.manual_seed(0)
    model = build_subspace("cpreresnet11", Structured(), Line(), in_channels=1).eval()
    x = torch.randn(3, 1, 8, 8)
    with at_alpha(model, 0.5):
        by_float = model(x)
    set_alpha(model, torch.tensor([0.5]))
    assert torch.allclose(model(x), by_float)


def test_cos_squared_is_zero_for_points_and_one_for_identical_ends() -> None:
    assert float(line_cosine_squared(build_subspace("cpreresnet11", Unstructured(), Point()))) == 0.0
    line = build_subspace("cpreresnet11", Unstructured(), Line())
    # Ends start identical (non-zero layers): cos^2 = 1, and the regulariser pushes them apart.
    assert abs(float(line_cosine_squared(line).detach()) - 1.0) < 1e-5
