"""WRN-d-k as in the authors' code: pre-activation blocks, 1x1 shortcut on the pre-activated input."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .init import uniform_bn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        o = torch.relu(self.bn0(x))
        y = self.conv1(torch.relu(self.bn1(self.conv0(o))))
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WRN(nn.Module):
    """Returns ``(logits, [g0, g1, g2])``, each g the raw residual sum at the end of a group."""

    def __init__(self, depth: int, width: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.conv0 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.groups = nn.ModuleList(
            nn.Sequential(*[Block(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                  (1 if g == 0 else 2) if i == 0 else 1) for i in range(n)])
            for g in range(3)
        )
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in")
                nn.init.zeros_(m.bias)

    @property
    def stem(self) -> nn.Module:
        """The first convolution, before the groups (recipe ``freeze_stem``)."""
        return self.conv0

    def authors_init(self) -> None:
        """The authors' utils.py: batch-norm weights U(0, 1) (``bnparams``); the convolutions and the classifier
        are drawn as theirs already (kaiming normal on the fan in, zero classifier bias)."""
        uniform_bn(self)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.conv0(x)
        groups = []
        for group in self.groups:
            x = group(x)
            groups.append(x)
        x = torch.relu(self.bn(x)).mean((2, 3))
        return self.fc(x), groups
