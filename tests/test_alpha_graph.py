"""Alpha-input graphs compute the subspace at any alpha; the switch-once pair does too."""

from __future__ import annotations

import pytest
import torch

from lcs_train.alpha_graph import (
    AlphaInputModule,
    AlphaWeightsModule,
    alpha_predict_module,
)
from lcs_train.data import load_dataset
from lcs_train.layers import CompressibleNorm
from lcs_train.restore import load_subspace
from lcs_train.subspace import at_alpha, model_method

#: One xdist worker runs this module, so its module-scoped exports are built once.
pytestmark = pytest.mark.xdist_group("alpha_graph")

CASES = (("unstructured", "line"), ("structured", "line"), ("quantized", "line"))


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    images, _ = load_dataset("digits").held_out()
    return images


def alphas_between(model: torch.nn.Module) -> list[float]:
    top = model_method(model).max_alpha
    return [0.0, 0.3 * top, 0.55 * top, top]


def reference(model: torch.nn.Module, images: torch.Tensor, alpha: float) -> torch.Tensor:
    top = model_method(model).max_alpha
    with torch.no_grad(), at_alpha(model, min(max(alpha, 0.0), top)):
        return model(images)


def assert_close(got: torch.Tensor, expected: torch.Tensor, quantized: bool) -> None:
    agreement = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    if quantized:
        # Explicit multiply-add rounding can move one activation across a code boundary.
        assert agreement >= 0.99
    else:
        assert agreement == 1.0
        assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize(("method", "shape"), CASES)
def test_alpha_input_module_matches_subspace_and_clamps(subspace_checkpoint, held_out, method, shape) -> None:
    model, _ = load_subspace(subspace_checkpoint(method, shape))
    graph = AlphaInputModule(model)
    top = model_method(model).max_alpha
    for alpha in [*alphas_between(model), -0.5, top + 0.2]:
        with torch.no_grad():
            got = graph(held_out, torch.tensor([alpha], dtype=torch.float32))
        assert_close(got, reference(model, held_out, alpha), quantized=False)
    # The caller's model is left as it was.
    assert not any(m.explicit_affine for m in model.modules() if isinstance(m, CompressibleNorm))


@pytest.mark.parametrize(("method", "shape"), CASES)
def test_switch_once_pair_matches_subspace(subspace_checkpoint, held_out, method, shape) -> None:
    model, _ = load_subspace(subspace_checkpoint(method, shape))
    weights = AlphaWeightsModule(model)
    predict = alpha_predict_module(model)
    buffers = dict(predict.named_buffers())
    assert len(set(weights.constant_names)) == len(weights.constant_names)
    assert set(weights.constant_names) <= set(buffers)
    with torch.no_grad():
        assert_close(predict(held_out), reference(model, held_out, 0.0), method == "quantized")
        for alpha in [*alphas_between(model), 2.0]:
            constants = weights.constants(alpha)
            assert all(constants[n].shape == buffers[n].shape for n in weights.constant_names)
            for name, value in constants.items():  # a host's level switch: into the named buffers
                buffers[name].copy_(value)
            assert_close(predict(held_out), reference(model, held_out, alpha), method == "quantized")
