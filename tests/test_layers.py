"""Compressible layers: gradients flow as the method specifies, alpha as float or tensor."""

from __future__ import annotations

import torch

from lcs_train import Line, Point, Quantized, Structured, Unstructured, at_alpha, build_subspace, set_alpha
from lcs_train.layers import CompressibleConv2d, CompressibleLinear
from lcs_train.subspace import add_line_cosine_squared_gradient, compressible_layers, line_cosine_squared, set_schedule


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


def _cos_squared_by_autograd(model: torch.nn.Module) -> torch.Tensor:
    """The regulariser written with plain autograd ops: the reference for both fast forms."""
    ends = [(layer.weight, layer.weight_end) for layer in compressible_layers(model)
            if getattr(layer, "weight_end", None) is not None and isinstance(layer, (CompressibleConv2d, CompressibleLinear))]
    dot = sum((s * e).sum() for s, e in ends)
    return dot**2 / (sum(s.square().sum() for s, _ in ends) * sum(e.square().sum() for _, e in ends))


def test_the_regulariser_gradient_added_in_place_equals_autograd() -> None:
    """Both the autograd Function and the in-place form training uses give the plain autograd
    value and gradient, added to what ``.grad`` already holds (or set where it holds nothing)."""
    torch.manual_seed(0)
    model = build_subspace("cpreresnet11", Unstructured(), Line(), in_channels=1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)  # ends apart: cos^2 < 1
    parameters = list(model.parameters())
    task = [torch.randn_like(p) if index % 3 else None for index, p in enumerate(parameters)]

    def gradients(add_regulariser) -> list[torch.Tensor | None]:
        for parameter, grad in zip(parameters, task):
            parameter.grad = None if grad is None else grad.clone()
        add_regulariser()
        return [None if p.grad is None else p.grad.clone() for p in parameters]

    expected = gradients(lambda: (0.7 * _cos_squared_by_autograd(model)).backward())
    function = gradients(lambda: (0.7 * line_cosine_squared(model)).backward())
    value = []
    in_place = gradients(lambda: value.append(add_line_cosine_squared_gradient(model, 0.7)))
    assert 0.0 < float(value[0]) < 1.0
    assert abs(float(value[0]) - float(_cos_squared_by_autograd(model).detach())) < 1e-6
    assert sum(g is not None for g in expected) > len(parameters) // 2
    for reference, got_function, got_in_place in zip(expected, function, in_place):
        assert (reference is None) == (got_function is None) == (got_in_place is None)
        if reference is not None:
            torch.testing.assert_close(got_function, reference, rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(got_in_place, reference, rtol=1e-5, atol=1e-9)
