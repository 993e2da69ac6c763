"""Pre-activation ResNet-18/34 as fb.resnet.torch's ``models/preresnet.lua`` builds it for ImageNet.

The paper's appendix trained its ImageNet networks with fb.resnet.torch, and the authors' released AT ResNet-18
is this network. Where it differs from torchvision's (post-activation) ResNet:

- the stem (7x7 stride-2 convolution, BN, ReLU, 3x3 stride-2 max pool) feeds the first block directly, which
  has no BN-ReLU of its own (``no_preact``);
- every other block starts with BN-ReLU; in the first block of groups 2-4 (``both_preact``) that BN-ReLU is
  shared by the residual branch and the 1x1 stride-2 shortcut, which has no BN;
- a group's output is the raw residual sum (the next group's first block, or the final BN-ReLU before
  pooling, activates it): AT compares these sums, as in the authors' WRN;
- convolutions have no bias (preresnet.lua drops them under cuDNN >= 4), and its initialisation is fb's
  (:func:`atlib.models.init.fb_layers`).

preresnet.lua pools with a fixed 7x7 average, the whole map at 224x224; atlib averages the whole map at any
size, the same there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .init import authors_layers, fb_layers

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # preresnet.lua's cfg: basic blocks per group
WIDTHS = (64, 128, 256, 512)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class Block(nn.Module):
    """preresnet.lua's ``basicblock``: [BN-ReLU] conv3x3-BN-ReLU-conv3x3 plus the shortcut, summed."""

    def __init__(self, cin: int, cout: int, stride: int, preact: bool) -> None:
        super().__init__()
        # preact False: the first block of the first group (no_preact), whose input the stem activated
        self.bn0 = nn.BatchNorm2d(cin) if preact else None
        self.conv0 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv1 = conv3x3(cout, cout)
        # shortcut type B: a 1x1 convolution where the width changes (stride 2 there), else the identity
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        o = torch.relu(self.bn0(x)) if self.bn0 is not None else x
        y = self.conv1(torch.relu(self.bn1(self.conv0(o))))
        # both_preact: the 1x1 shortcut reads the activated input; an identity shortcut the raw one
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class PreResNet(nn.Module):
    """Returns ``(logits, [g0, g1, g2, g3])``, each g the raw residual sum at the end of a group."""

    def __init__(self, depth: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if depth not in BLOCKS:
            raise ValueError(f"pre-activation ResNet depth must be one of {sorted(BLOCKS)}, got {depth}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, WIDTHS[0], 7, 2, 3, bias=False), nn.BatchNorm2d(WIDTHS[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        groups, cin = [], WIDTHS[0]
        for g, (count, width) in enumerate(zip(BLOCKS[depth], WIDTHS, strict=True)):
            blocks = [Block(cin, width, 1 if g == 0 else 2, preact=g > 0)]
            blocks += [Block(width, width, 1, preact=True) for _ in range(count - 1)]
            groups.append(nn.Sequential(*blocks))
            cin = width
        self.groups = nn.ModuleList(groups)
        self.bn = nn.BatchNorm2d(cin)  # the final BN-ReLU before pooling
        self.fc = nn.Linear(cin, num_classes)
        self.new_layers: list[nn.Module] = [self]
        fb_layers(self)  # createModel's ConvInit, BNInit and zero Linear bias

    def authors_init(self) -> None:
        """``init: authors`` is the authors' imagenet.py draw; this network's own is fb's (its constructor)."""
        authors_layers(self)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.stem(x)
        groups = []
        for group in self.groups:
            x = group(x)
            groups.append(x)
        x = torch.relu(self.bn(x)).mean((2, 3))
        return self.fc(x), groups
