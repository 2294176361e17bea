"""VGG19 for small images (CIFAR style): the paper's VGG19.

Sixteen 3x3 conv-norm-relu layers in five stages (64, 128, 256, 512, 512 channels), each stage
ending in a 2x2 max pool, then global average pooling and one linear classifier (the CIFAR
variant drops ImageNet's 4096-wide fully connected layers). The pools round up
(``ceil_mode``), so any input of 1 pixel or more reaches the classifier: 28x28 MNIST too.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]

#: Output channels of each conv, stage by stage (configuration "E" of Simonyan & Zisserman).
VGG19_STAGES = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


class CifarVGG(nn.Module):
    """Conv-norm-relu stages with max pools, global average pool, classifier."""

    def __init__(self, stages: tuple[tuple[int, ...], ...], in_channels: int = 3, num_classes: int = 10,
                 norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        from lcs_train.models.cpreresnet import group_norm

        norm_layer = norm_layer or group_norm
        layers: list[nn.Module] = []
        channels = in_channels
        for widths in stages:
            for width in widths:
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), norm_layer(width), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def cvgg19(in_channels: int = 3, num_classes: int = 10, norm_layer: NormLayer | None = None) -> CifarVGG:
    """VGG19 (16 conv layers) for small images, the paper's VGG19."""
    return CifarVGG(VGG19_STAGES, in_channels, num_classes, norm_layer)
