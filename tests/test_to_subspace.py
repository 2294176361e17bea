"""to_subspace turns ordinary torch networks (torchvision's included) into subspaces that train,
materialise (narrower under structured, via the traced channel plan) and export with parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from lcs_train import Line, Point, Quantized, Structured, Unstructured, at_alpha, to_subspace
from lcs_train.channel_plan import derive_channel_plan
from lcs_train.cost import level_cost
from lcs_train.errors import LcsError
from lcs_train.layers import CompressibleConv2d, CompressibleLinear, CompressibleNorm
from lcs_train.materialize import materialize, materialize_level
from lcs_train.subspace import model_method
from targets import get_target
from targets.inputs import Level
from helpers import digits_rgb, train_steps


@pytest.mark.parametrize("settings", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, padding=2, dilation=2, stride=2),
    dict(kernel_size=3, padding=1, groups=4),
    dict(kernel_size=(3, 5), padding="same", bias=True),
    dict(kernel_size=3, padding=1, padding_mode="reflect", bias=True),
    dict(kernel_size=4, padding="same", padding_mode="circular", dilation=2),
])
def test_converted_conv_is_a_drop_in_replacement(settings: dict) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, **settings)
    layer = CompressibleConv2d.from_dense(conv, Unstructured(), Line())
    x = torch.randn(2, 8, 11, 9)
    layer.alpha = 0.0  # nothing pruned: the converted layer computes exactly what conv does
    assert torch.allclose(layer(x), conv(x), atol=1e-6)
    assert torch.equal(layer.weight, layer.weight_end)  # both ends start from the dense weights
    plain = layer.plain(layer.weight, layer.bias)
    assert torch.allclose(plain(x), conv(x), atol=1e-6)
    layer.alpha = 0.5
    assert (layer.compressed_weight(torch.tensor([0.5])) == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def plain_group_norm_resnet18() -> nn.Module:
    return torchvision.models.resnet18(num_classes=10, norm_layer=lambda c: nn.GroupNorm(8, c))


def test_default_rule_keeps_stem_and_classifier_dense_and_filter_fn_overrides_it() -> None:
    model = to_subspace(torchvision.models.resnet18(num_classes=10), Quantized(), Point())
    assert isinstance(model.conv1, CompressibleConv2d) and not model.conv1.method.compresses
    assert isinstance(model.fc, CompressibleLinear) and not model.fc.method.compresses
    assert model.layer1[0].conv1.method == Quantized()
    assert isinstance(model.bn1, CompressibleNorm) and model.bn1.kind == "group"  # BatchNorm -> the method's norm
    assert not any(type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d) for m in model.modules())
    assert model_method(model) == Quantized()
    everything = to_subspace(torchvision.models.resnet18(num_classes=10), Unstructured(), Point(),
                             filter_fn=lambda module, name: True)
    assert everything.conv1.method.compresses and everything.fc.method.compresses
    with pytest.raises(LcsError, match="already a compressible subspace"):
        to_subspace(model, Quantized(), Point())


def test_converted_network_at_alpha_zero_computes_the_original() -> None:
    torch.manual_seed(0)
    plain = plain_group_norm_resnet18().eval()
    x = torch.randn(2, 3, 32, 32)
    expected = plain(x)
    subspace = to_subspace(plain, Unstructured(), Line()).eval()
    with torch.no_grad(), at_alpha(subspace, 0.0):
        assert torch.allclose(subspace(x), expected, atol=1e-4)


@pytest.mark.parametrize("method, levels", [(Unstructured(), [0.0, 0.9]), (Quantized(), [0.0, 0.6])])
def test_torchvision_resnet18_trains_and_exports_to_onnx_with_parity(method, levels, tmp_path: Path) -> None:
    torch.manual_seed(0)
    images, labels = digits_rgb(96)
    model = to_subspace(torchvision.models.resnet18(num_classes=10), method, Line())
    losses = train_steps(model, images[:16], labels[:16], [0.0, levels[-1]], steps=4, lr=0.005)
    assert losses[-2:] < losses[:2] or min(losses[-2:]) < min(losses[:2])  # the loss falls
    held_out = images[64:]
    target = get_target("onnx")
    built = [materialize(model, alpha, [3, 32, 32]) for alpha in levels]
    artifacts = target.export_levels([Level(m.alpha, m.module, m.compression, prunable=m.prunable) for m in built],
                                     held_out[:1], tmp_path, target.parse_options({}))
    for artifact, level in zip(artifacts, built):
        got = target.load(tmp_path, {"path": artifact.path, "kind": artifact.kind, "alphas": artifact.alphas,
                                     "details": artifact.details}).run(held_out.numpy(), level.alpha)
        with torch.no_grad(), at_alpha(model, level.alpha):
            expected = model(held_out).numpy()
        assert float((got.argmax(1) == expected.argmax(1)).mean()) >= 0.97, level.alpha
        if isinstance(method, Unstructured):
            assert float(np.abs(got - expected).max()) <= 1e-3
    cost = [level_cost(model, alpha, [3, 32, 32]) for alpha in levels]
    if isinstance(method, Unstructured):
        assert cost[1]["measured"]["sparsity"] == pytest.approx(0.9, abs=0.01)
        assert cost[1]["nonzero_flops"] < 0.2 * cost[0]["nonzero_flops"]
    else:
        assert (cost[0]["measured"]["bits"], cost[1]["measured"]["bits"]) == (8, 5)
        assert cost[1]["weight_bytes"] < cost[0]["weight_bytes"]


def test_structured_resnet18_level_is_narrower_and_computes_the_same() -> None:
    # 64 px: at 32 px layer4's maps are 1x1, where an InstanceNorm has nothing to normalise.
    torch.manual_seed(0)
    model = to_subspace(torchvision.models.resnet18(num_classes=10), Structured(), Point()).eval()
    x = torch.randn(2, 3, 64, 64)
    plan = derive_channel_plan(model, [3, 64, 64])
    widths = plan.widths(torch.tensor([0.5]))
    assert widths["layer1.0.conv1"] == (32, 32) and widths["fc"] == (256, 10)
    assert widths["conv1"] == (3, 32)  # the stem writes only what bn1 (masked) keeps
    level = materialize_level(model, 0.5, [3, 64, 64])
    assert level.layer3[0].downsample[0].weight.shape[:2] == (128, 64)
    with torch.no_grad(), at_alpha(model, 0.5):
        assert torch.allclose(level(x), model(x), atol=1e-4)
    assert level_cost(model, 0.5, [3, 64, 64])["flops"] < 0.35 * level_cost(model, 0.0, [3, 64, 64])["flops"]


class Concatenating(nn.Module):
    """Two branches joined by torch.cat: their channels cannot be narrowed through it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        joined = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(joined.mean(dim=(2, 3)))


def test_structured_refuses_a_graph_it_cannot_follow_naming_the_layer() -> None:
    model = to_subspace(Concatenating(), Structured(), Point())
    with pytest.raises(LcsError, match=r"layer left .* operation cat"):
        materialize_level(model, 0.5, [3, 8, 8])
    # The same model under unstructured sparsity needs no channel plan.
    sparse = to_subspace(Concatenating(), Unstructured(), Point()).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad(), at_alpha(sparse, 0.5):
        assert torch.allclose(materialize_level(sparse, 0.5)(x), sparse(x), atol=1e-5)
