"""A user's own network, as the tests reach it by import path: ``tiny_net:build`` (tests/ is on the path)."""

from torch import Tensor, nn


class TinyNet(nn.Module):
    """stem at the input's size, three stages (the last two halve the size), a pooled linear classifier."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.stage1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.head(self.pool(x).flatten(1))


def build(num_classes: int, in_channels: int) -> nn.Module:
    return TinyNet(num_classes, in_channels)


def broken(num_classes: int, in_channels: int) -> nn.Module:
    raise RuntimeError("this factory fails")
