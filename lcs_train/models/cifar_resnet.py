"""ResNet18 with a CIFAR stem: the paper's ResNet18 for small images.

A 3x3 stride-1 stem conv and no max pool (the ImageNet stem's 7x7 stride-2 conv and pool would
shrink a 32x32 image to 8x8 before the first block), then torchvision's four stages of two
basic blocks (64, 128, 256, 512 channels). Works on any square input of 8 pixels or more. A
plain torch network taking its norm layer from the compression method, like torchvision's.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 3x3 conv with padding 1."""
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    """conv-norm-relu, conv-norm, plus the shortcut (a 1x1 conv and norm where the shape changes)."""

    def __init__(self, norm_layer: NormLayer, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.norm1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes)
        self.norm2 = norm_layer(planes)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), norm_layer(planes))
        # Each residual branch starts as the identity: GroupNorm networks converge in a short
        # budget only this way (Goyal et al., 2017), as in cPreResNet.
        nn.init.zeros_(self.norm2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class CifarResNet(nn.Module):
    """3x3 stem, four stages of basic blocks, global average pool, classifier."""

    def __init__(self, blocks: tuple[int, ...], in_channels: int = 3, num_classes: int = 10,
                 norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        from lcs_train.models.cpreresnet import group_norm

        norm_layer = norm_layer or group_norm
        self.stem = conv3x3(in_channels, 64)
        self.stem_norm = norm_layer(64)
        self.relu = nn.ReLU()
        stages, in_planes = [], 64
        for planes, count, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
            for index in range(count):
                stages.append(BasicBlock(norm_layer, in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.relu(self.stem_norm(self.stem(x))))
        return self.classifier(self.pool(out).flatten(1))


def cresnet18(in_channels: int = 3, num_classes: int = 10, norm_layer: NormLayer | None = None) -> CifarResNet:
    """ResNet18 with a CIFAR stem (two basic blocks per stage), the paper's ResNet18."""
    return CifarResNet((2, 2, 2, 2), in_channels, num_classes, norm_layer)
