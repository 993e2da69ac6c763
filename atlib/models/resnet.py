"""torchvision ResNet-18/34 exposing the outputs of its four stages.

Pretrained weights come only from a local file: a path, or ``imagenet`` for torchvision's
own cache (``torch.hub.get_dir()/checkpoints``). Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

IMAGENET_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth"}


def pretrained_path(arch: str, pretrained: str) -> Path:
    if pretrained != "imagenet":
        return Path(pretrained)
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[arch]


class ResNet(nn.Module):
    def __init__(self, arch: str, in_channels: int, num_classes: int, pretrained: str | None = None) -> None:
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        if pretrained is not None:
            path = pretrained_path(arch, pretrained)
            if not path.is_file():
                raise FileNotFoundError(
                    f"pretrained weights for {arch} not found at {path}; put torchvision's "
                    f"{IMAGENET_FILES[arch]} there (atlib never downloads weights)")
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        if num_classes != net.fc.out_features:
            net.fc = nn.Linear(net.fc.in_features, num_classes)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.groups = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.fc = net.fc

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.stem(x)
        groups = []
        for group in self.groups:
            x = group(x)
            groups.append(x)
        return self.fc(torch.flatten(x.mean((2, 3)), 1)), groups
