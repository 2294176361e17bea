"""cPreResNet: the CIFAR-style pre-activation ResNet with bottleneck blocks used by LCS.

Depth 20 gives two bottleneck blocks per stage (16, 32, 64 planes, expansion 4). Works on any
square input of 8 pixels or more (32x32 RGB, 28x28 or 8x8 grey). Layers come from a
``LayerKinds`` object, so the same code serves every compression method and the plain
baseline.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

EXPANSION = 4


def zero_weights_(layer: nn.Module) -> None:
    """Zero every weight tensor of ``layer`` (both ends of a line, if it has two)."""
    for name, parameter in layer.named_parameters(recurse=False):
        if name.startswith("weight"):
            nn.init.zeros_(parameter)


class PreActBottleneck(nn.Module):
    """norm-relu-conv1x1, norm-relu-conv3x3, norm-relu-conv1x1, plus the shortcut.

    A projection shortcut reads the pre-activated input (He et al., 2016), so every conv in
    the block sees a normalised, and under structured sparsity channel-masked, input.
    """

    def __init__(self, kinds: Any, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        out_planes = planes * EXPANSION
        self.norm1 = kinds.norm(in_planes)
        self.conv1 = kinds.conv(in_planes, planes, 1)
        self.norm2 = kinds.norm(planes)
        self.conv2 = kinds.conv(planes, planes, 3, stride=stride)
        self.norm3 = kinds.norm(planes)
        self.conv3 = kinds.conv(planes, out_planes, 1)
        self.relu = nn.ReLU()
        self.shortcut = (
            kinds.conv(in_planes, out_planes, 1, stride=stride)
            if stride != 1 or in_planes != out_planes
            else None
        )
        # Each residual branch starts as the identity: with GroupNorm instead of BatchNorm
        # this is what makes the network converge in a few epochs (Goyal et al., 2017).
        zero_weights_(self.conv3)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.norm2(out)))
        out = self.conv3(self.relu(self.norm3(out)))
        return out + residual


class CPreResNet(nn.Module):
    """Stem conv, three stages of bottlenecks, final norm, global average pool, classifier."""

    def __init__(self, kinds: Any, depth: int = 20, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 9 != 0:
            raise ValueError(f"cPreResNet depth must be 9n + 2, got {depth}")
        blocks = (depth - 2) // 9
        self.stem = kinds.first_conv(in_channels, 16, 3)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(blocks):
                stages.append(PreActBottleneck(kinds, in_planes, planes, stride if index == 0 else 1))
                in_planes = planes * EXPANSION
        self.stages = nn.Sequential(*stages)
        self.final_norm = kinds.norm(in_planes)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = kinds.classifier(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.stem(x))
        out = self.pool(self.relu(self.final_norm(out))).flatten(1)
        return self.classifier(out)


def cpreresnet20(kinds: Any, in_channels: int = 3, num_classes: int = 10) -> CPreResNet:
    """cPreResNet20 (depth 20, bottleneck), the network of the paper's CIFAR-10 runs."""
    return CPreResNet(kinds, depth=20, in_channels=in_channels, num_classes=num_classes)


def cpreresnet11(kinds: Any, in_channels: int = 3, num_classes: int = 10) -> CPreResNet:
    """cPreResNet11 (one bottleneck per stage): a small sibling for tests and quick trials."""
    return CPreResNet(kinds, depth=11, in_channels=in_channels, num_classes=num_classes)
