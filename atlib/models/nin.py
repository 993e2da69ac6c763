"""Network-in-Network after the authors' modified NIN (no dropout; wide-residual-networks, models/nin.lua).

NIN-wide (1,005,642 parameters with batch norm, 1,004,042 without; the authors' widths):
    conv5x5 192, 1x1 160, 1x1 96, maxpool 3/2 | conv5x5 192, 1x1 192, 1x1 192, avgpool 3/2 |
    conv3x3 192, 1x1 192, 1x1 192 | classifier 1x1 -> classes, global average pool.
Both pools are nin.lua's ``:ceil()`` pools without padding: a side of n becomes ceil((n - 3) / 2) + 1
(32 -> 16 -> 8), and a window that runs past the border averages only the pixels inside it.
The authors average-pool and then apply a linear layer; a 1x1 conv followed by the average is the same
function with the same parameters. NIN-thin (206,640 parameters with batch norm, 205,923 without) keeps
the layout and scales every width by 0.45 (192 -> 86, 160 -> 72, 96 -> 43).

Group outputs (``group_outputs``): ``"pool"`` gives the two pooled block outputs and the output of the
last conv before the classifier; ``"conv"`` gives each block's last conv output (after its batch norm,
before ReLU and pooling): Table 3's "AT losses on outputs of convolutional layers". Either way the
logits are the same. ``relu_before_pool=False`` moves the ReLU of each block's last conv after its
pooling, so the pooled group output is the pooled pre-activation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .init import msr_conv, uniform_bn

WIDE = (192, 160, 96, 192, 192, 192, 192, 192, 192)
THIN_SCALE = 0.45
GROUP_OUTPUTS = ("pool", "conv")


def _conv(cin: int, cout: int, k: int, batchnorm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    return layers


def _block(cin: int, widths: tuple[int, int, int], k: int, batchnorm: bool) -> nn.Sequential:
    """A kxk conv and two 1x1 convs, ReLU between them; the last conv's ReLU is left to the caller,
    which decides whether it comes before or after pooling."""
    first, second, third = widths
    return nn.Sequential(*_conv(cin, first, k, batchnorm), nn.ReLU(),
                         *_conv(first, second, 1, batchnorm), nn.ReLU(),
                         *_conv(second, third, 1, batchnorm))


class NIN(nn.Module):
    def __init__(
        self, widths: tuple[int, ...], in_channels: int, num_classes: int,
        batchnorm: bool = True, relu_before_pool: bool = True, group_outputs: str = "pool",
    ) -> None:
        super().__init__()
        if group_outputs not in GROUP_OUTPUTS:
            raise ValueError(f"group_outputs: expected one of {', '.join(GROUP_OUTPUTS)}, "
                             f"got {group_outputs!r}")
        w = widths
        self.relu_before_pool = relu_before_pool
        self.group_outputs = group_outputs
        self.block1 = _block(in_channels, (w[0], w[1], w[2]), 5, batchnorm)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.block2 = _block(w[2], (w[3], w[4], w[5]), 5, batchnorm)
        self.pool2 = nn.AvgPool2d(3, 2, ceil_mode=True)
        self.block3 = _block(w[5], (w[6], w[7], w[8]), 3, batchnorm)
        self.classifier = nn.Conv2d(w[8], num_classes, 1)

    def authors_init(self) -> None:
        """nin.lua's MSRinit after Torch's reset: each block's convolutions N(0, sqrt(2/n)) with zero bias,
        batch-norm weights U(0, 1). The classifier stands for nin.lua's nn.Linear, which MSRinit leaves at
        Torch's reset, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias: PyTorch's default for it already."""
        for block in (self.block1, self.block2, self.block3):
            for m in block.modules():
                if isinstance(m, nn.Conv2d):
                    msr_conv(m)
        uniform_bn(self)

    def _pooled(self, x: Tensor, pool: nn.Module) -> tuple[Tensor, Tensor]:
        """Returns (pooled group output, input of the next block)."""
        if self.relu_before_pool:
            g = pool(torch.relu(x))
            return g, g
        g = pool(x)
        return g, torch.relu(g)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        conv1 = self.block1(x)
        pooled1, x = self._pooled(conv1, self.pool1)
        conv2 = self.block2(x)
        pooled2, x = self._pooled(conv2, self.pool2)
        conv3 = self.block3(x)
        logits = self.classifier(torch.relu(conv3)).mean((2, 3))
        if self.group_outputs == "conv":
            return logits, [conv1, conv2, conv3]
        return logits, [pooled1, pooled2, conv3]


def nin_widths(scale: float) -> tuple[int, ...]:
    return tuple(max(1, round(c * scale)) for c in WIDE)
