"""A materialised level computes what the subspace computes, with the compression made real."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lcs_train.level_layers import QuantizedConv2d, QuantizedWeight
from lcs_train.cost import level_cost
from lcs_train.materialize import materialize_level
from lcs_train.data import load_dataset
from lcs_train.errors import LcsError
from lcs_train.layers import CompressibleConv2d
from lcs_train.restore import load_subspace
from lcs_train.subspace import at_alpha, model_method

METHODS = ("unstructured", "structured", "quantized")
SHAPES = ("line", "point")


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    images, _ = load_dataset("digits").held_out()
    return images


def level_alphas(model: nn.Module) -> list[float]:
    method = model_method(model)
    discrete = method.discrete_alphas()
    if discrete:
        return [discrete[0], discrete[2], discrete[3], discrete[-1]]  # 8, 6, 5 (or 4) and 3 bits
    return [0.0, method.max_alpha / 3, method.max_alpha]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", METHODS)
def test_level_matches_subspace(subspace_checkpoint, held_out, method: str, shape: str) -> None:
    model, _ = load_subspace(subspace_checkpoint(method, shape))
    for alpha in level_alphas(model):
        with torch.no_grad(), at_alpha(model, alpha):
            expected = model(held_out)
            got = materialize_level(model, alpha, [1, 8, 8])(held_out)
        assert (got - expected).abs().max().item() <= 1e-5, (method, shape, alpha)
        assert torch.equal(got.argmax(1), expected.argmax(1))


def test_structured_level_is_physically_narrower(subspace_checkpoint) -> None:
    model, checkpoint = load_subspace(subspace_checkpoint("structured", "line"))
    input_shape = checkpoint.metadata["input"]["shape"]
    alpha = 0.5
    level = materialize_level(model, alpha, input_shape)
    trained = {name: m for name, m in model.named_modules() if isinstance(m, CompressibleConv2d)}
    for name, layer in trained.items():
        conv = level.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        expected_out = max(1, round(layer.out_channels * (1 - alpha)))
        expected_in = layer.in_channels if name == "stem" else max(1, round(layer.in_channels * (1 - alpha)))
        assert tuple(conv.weight.shape[:2]) == (expected_out, expected_in), name
    assert level.classifier.in_features == round(model.classifier.in_features * (1 - alpha))
    dense, narrow = level_cost(model, 0.0, input_shape), level_cost(model, alpha, input_shape)
    assert narrow["flops"] < 0.4 * dense["flops"]
    assert narrow["parameters"] < dense["parameters"]
    assert narrow["measured"]["width"] == pytest.approx(1 - alpha, abs=0.02)


def test_quantized_level_stores_integer_codes_on_the_grid(subspace_checkpoint) -> None:
    model, _ = load_subspace(subspace_checkpoint("quantized", "line"))
    method = model_method(model)
    for alpha in (0.0, 0.8):
        bits = method.level(alpha)["bits"]
        level = materialize_level(model, alpha)
        weights = [m for m in level.modules() if isinstance(m, QuantizedWeight)]
        assert weights and all(w.codes.dtype == torch.uint8 for w in weights)
        for weight in weights:
            assert weight.bits == bits
            assert int(weight.codes.max()) <= 2**bits - 1
            values = weight()
            on_grid = values / weight.scale + weight.zero_point.float()
            assert torch.allclose(on_grid, on_grid.round(), atol=1e-3)
        convs = [m for m in level.modules() if isinstance(m, QuantizedConv2d)]
        assert all(isinstance(c.activation, nn.Module) for c in convs)
        assert level_cost(model, alpha, [1, 8, 8])["measured"]["bits"] == bits
    # The stem and classifier stay dense and unquantized.
    assert isinstance(level.stem, nn.Conv2d) and isinstance(level.classifier, nn.Linear)


def test_unstructured_stats_measure_the_sparsity(subspace_checkpoint) -> None:
    model, _ = load_subspace(subspace_checkpoint("unstructured", "line"))
    stats = [level_cost(model, a, [1, 8, 8]) for a in (0.0, 0.5, 0.9)]
    for alpha, stat in zip((0.0, 0.5, 0.9), stats):
        assert stat["measured"]["sparsity"] == pytest.approx(alpha, abs=0.01)
    assert stats[0]["nonzeros"] > stats[1]["nonzeros"] > stats[2]["nonzeros"]
    assert stats[2]["nonzero_flops"] < stats[2]["flops"] == stats[0]["flops"]


def test_alpha_outside_the_trained_range_is_refused(subspace_checkpoint) -> None:
    model, _ = load_subspace(subspace_checkpoint("structured", "line"))
    with pytest.raises(LcsError, match="trained range"):
        materialize_level(model, 0.9)
