"""Small classifier definitions used by the tests, the digits example and the benchmark.

torchvision does not work on this machine, so the ResNet-18 and MobileNet shapes are written out
here. Each builder seeds torch so that a test gets the same weights every run.
"""
from __future__ import annotations

import torch
from torch import nn


def small_cnn(channels: int = 1, size: int = 28, classes: int = 10, seed: int = 0) -> nn.Module:
    """The seed's Keras-tutorial CNN: Conv32-Pool-Conv64-Pool-Conv64-Flatten-Dense64-Dense10.

    28x28x1 is the MNIST shape, 32x32x3 the CIFAR-10 one; valid (unpadded) 3x3 convolutions.
    """
    torch.manual_seed(seed)
    side = ((size - 2) // 2 - 2) // 2 - 2  # 28 -> 3, 32 -> 4
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * side * side, 64), nn.ReLU(),
        nn.Linear(64, classes),
    ).eval()


class _Basic(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1-strided shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """ResNet-18 layout (stem 7x7/2 + maxpool, 4 stages of 2 basic blocks, global pool, fc).

    `width` scales the channels (64 is the real network); tests use a narrow one.
    """

    def __init__(self, classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        w = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 7, 2, 3, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = w[0]
        for i, c in enumerate(w):
            stride = 1 if i == 0 else 2
            blocks += [_Basic(cin, c, stride), _Basic(c, c, 1)]
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, BN everywhere, ReLU6."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNet(nn.Module):
    """A MobileNetV2-style network: depthwise-separable inverted residuals with batch norm."""

    def __init__(self, classes: int = 10, width: int = 16) -> None:
        super().__init__()
        cfg = [(width, 1, 1), (width * 3 // 2, 2, 4), (width * 3 // 2, 1, 4), (width * 2, 2, 4), (width * 4, 2, 4)]
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6()]
        cin = width
        for cout, stride, expand in cfg:
            layers.append(_InvertedResidual(cin, cout, stride, expand))
            cin = cout
        layers += [nn.Conv2d(cin, cin * 4, 1, bias=False), nn.BatchNorm2d(cin * 4), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN layers non-trivial running statistics, as a trained network has.

    A freshly initialized BN (mean 0, var 1, weight 1, bias 0) is an identity that hides bugs in
    how the exporter folds it; random statistics make the parity tests see the folding.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def resnet18(classes: int = 1000, width: int = 64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(ResNet18(classes, width), seed)


def mobilenet(classes: int = 10, width: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(MobileNet(classes, width), seed)

