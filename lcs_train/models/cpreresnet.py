"""cPreResNet: the CIFAR-style pre-activation ResNet with bottleneck blocks used by LCS.

Depth 20 gives two bottleneck blocks per stage (16, 32, 64 planes, expansion 4). Works on any
square input of 8 pixels or more (32x32 RGB, 28x28 or 8x8 grey). An ordinary torch network
(``nn.Conv2d``, a norm layer, ``nn.Linear``), like torchvision's models: it becomes a
subspace through ``lcs_train.transform.to_subspace``, and serves as the plain baseline as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

EXPANSION = 4

NormLayer = Callable[[int], nn.Module]


def group_norm(channels: int) -> nn.Module:
    """GroupNorm with 32 groups, capped by the channels (the paper's choice)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def instance_norm(channels: int) -> nn.Module:
    """Per-channel InstanceNorm with affine (structured subspaces: channel counts vary)."""
    return nn.InstanceNorm2d(channels, affine=True)


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free conv with 'same' padding for odd kernels."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)


class PreActBottleneck(nn.Module):
    """norm-relu-conv1x1, norm-relu-conv3x3, norm-relu-conv1x1, plus the shortcut.

    A projection shortcut reads the pre-activated input (He et al., 2016), so every conv in
    the block sees a normalised, and under structured sparsity channel-masked, input.
    """

    def __init__(self, norm_layer: NormLayer, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        out_planes = planes * EXPANSION
        self.norm1 = norm_layer(in_planes)
        self.conv1 = conv(in_planes, planes, 1)
        self.norm2 = norm_layer(planes)
        self.conv2 = conv(planes, planes, 3, stride=stride)
        self.norm3 = norm_layer(planes)
        self.conv3 = conv(planes, out_planes, 1)
        self.relu = nn.ReLU()
        self.shortcut = conv(in_planes, out_planes, 1, stride=stride) if stride != 1 or in_planes != out_planes else None
        # Each residual branch starts as the identity: with GroupNorm instead of BatchNorm
        # this is what makes the network converge in a few epochs (Goyal et al., 2017).
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.norm2(out)))
        out = self.conv3(self.relu(self.norm3(out)))
        return out + residual


class CPreResNet(nn.Module):
    """Stem conv, three stages of bottlenecks, final norm, global average pool, classifier."""

    def __init__(self, depth: int = 20, in_channels: int = 3, num_classes: int = 10,
                 norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        norm_layer = norm_layer or group_norm
        if (depth - 2) % 9 != 0:
            raise ValueError(f"cPreResNet depth must be 9n + 2, got {depth}")
        blocks = (depth - 2) // 9
        self.stem = conv(in_channels, 16, 3)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(blocks):
                stages.append(PreActBottleneck(norm_layer, in_planes, planes, stride if index == 0 else 1))
                in_planes = planes * EXPANSION
        self.stages = nn.Sequential(*stages)
        self.final_norm = norm_layer(in_planes)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.stem(x))
        out = self.pool(self.relu(self.final_norm(out))).flatten(1)
        return self.classifier(out)


def cpreresnet20(in_channels: int = 3, num_classes: int = 10, norm_layer: NormLayer | None = None) -> CPreResNet:
    """cPreResNet20 (depth 20, bottleneck), the network of the paper's CIFAR-10 runs."""
    return CPreResNet(20, in_channels, num_classes, norm_layer)


def cpreresnet11(in_channels: int = 3, num_classes: int = 10, norm_layer: NormLayer | None = None) -> CPreResNet:
    """cPreResNet11 (one bottleneck per stage): a small sibling for tests and quick trials."""
    return CPreResNet(11, in_channels, num_classes, norm_layer)
