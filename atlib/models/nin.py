"""Network-in-Network after the authors' modified NIN (no dropout).

NIN-wide (~1.0M parameters, the authors' widths):
    conv5x5 192, 1x1 160, 1x1 96, maxpool 3/2 | conv5x5 192, 1x1 192, 1x1 192, avgpool 3/2 |
    conv3x3 192, 1x1 192 | classifier 1x1 -> classes, global average pool.
NIN-thin (~0.2M) keeps the layout and scales every width by 0.45 (192 -> 86, 160 -> 72, 96 -> 43).

The three group outputs are the two pooled block outputs and the last 192-wide (or 86-wide)
activation before the classifier. ``relu_before_pool=False`` moves the ReLU of each block's
last conv after its pooling, so the group output is the pooled pre-activation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

WIDE = (192, 160, 96, 192, 192, 192, 192, 192)
THIN_SCALE = 0.45


def _conv(cin: int, cout: int, k: int, batchnorm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    return layers


class NIN(nn.Module):
    def __init__(
        self, widths: tuple[int, ...], in_channels: int, num_classes: int,
        batchnorm: bool = True, relu_before_pool: bool = True,
    ) -> None:
        super().__init__()
        w = widths
        self.relu_before_pool = relu_before_pool
        self.block1 = nn.Sequential(*_conv(in_channels, w[0], 5, batchnorm), nn.ReLU(),
                                    *_conv(w[0], w[1], 1, batchnorm), nn.ReLU(),
                                    *_conv(w[1], w[2], 1, batchnorm))
        self.pool1 = nn.MaxPool2d(3, 2, padding=1)
        self.block2 = nn.Sequential(*_conv(w[2], w[3], 5, batchnorm), nn.ReLU(),
                                    *_conv(w[3], w[4], 1, batchnorm), nn.ReLU(),
                                    *_conv(w[4], w[5], 1, batchnorm))
        self.pool2 = nn.AvgPool2d(3, 2, padding=1)
        self.block3 = nn.Sequential(*_conv(w[5], w[6], 3, batchnorm), nn.ReLU(),
                                    *_conv(w[6], w[7], 1, batchnorm))
        self.classifier = nn.Conv2d(w[7], num_classes, 1)

    def _pooled(self, x: Tensor, pool: nn.Module) -> tuple[Tensor, Tensor]:
        """Returns (group output, input of the next block)."""
        if self.relu_before_pool:
            g = pool(torch.relu(x))
            return g, g
        g = pool(x)
        return g, torch.relu(g)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        g1, x = self._pooled(self.block1(x), self.pool1)
        g2, x = self._pooled(self.block2(x), self.pool2)
        g3 = self.block3(x)
        logits = self.classifier(torch.relu(g3)).mean((2, 3))
        return logits, [g1, g2, g3]


def nin_widths(scale: float) -> tuple[int, ...]:
    return tuple(max(1, round(c * scale)) for c in WIDE)
