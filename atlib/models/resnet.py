"""torchvision ResNet-18/34 exposing the outputs of its four stages.

Pretrained weights come only from a local file: a path, or ``imagenet`` for torchvision's
own cache (``torch.hub.get_dir()/checkpoints``). Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from .init import authors_layers

IMAGENET_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth"}


def check_hash_prefix(path: Path) -> None:
    """torchvision names its weight files ``<arch>-<first 8 hex digits of the SHA-256>.pth``: a given teacher
    or starting point whose content does not match its name is refused, as torchvision's check_hash does."""
    match = re.fullmatch(r".*-([0-9a-f]{8,})\.pth", path.name)
    if match is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise ValueError(f"pretrained weights {path}: SHA-256 {digest[:12]}... does not match the "
                         f"{match.group(1)} in the file name; the file is corrupt or not torchvision's")


def pretrained_path(arch: str, pretrained: str) -> Path:
    if pretrained != "imagenet":
        return Path(pretrained)
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[arch]


class ResNet(nn.Module):
    def __init__(self, arch: str, in_channels: int, num_classes: int, pretrained: str | None = None) -> None:
        super().__init__()
        # imported here, not on top: a WRN or NIN job then starts 0.2 s sooner (median 3.87 s against 4.07 s for a
        # 3-epoch synthetic job, 2026-11-29; torch's SGD imports torch._dynamo, most of torchvision's cost, anyway)
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        if pretrained is not None:
            path = pretrained_path(arch, pretrained)
            if not path.is_file():
                raise FileNotFoundError(
                    f"pretrained weights for {arch} not found at {path}; put torchvision's "
                    f"{IMAGENET_FILES[arch]} there (atlib never downloads weights)")
            check_hash_prefix(path)
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        replaced: list[nn.Module] = []
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            replaced.append(net.conv1)
        if num_classes != net.fc.out_features:
            net.fc = nn.Linear(net.fc.in_features, num_classes)
            replaced.append(net.fc)
        # the layers no weight file sets: all of them, or those replaced for other inputs or classes
        self.new_layers = [net] if pretrained is None else replaced
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.groups = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.fc = net.fc

    def authors_init(self) -> None:
        """The authors' imagenet.py student: convolutions and the classifier kaiming normal (fan in), the classifier's
        bias 0, batch-norm weights U(0, 1). Pretrained weights stay: only the layers no weight file set are drawn."""
        for module in self.new_layers:
            authors_layers(module)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.stem(x)
        groups = []
        for group in self.groups:
            x = group(x)
            groups.append(x)
        return self.fc(torch.flatten(x.mean((2, 3)), 1)), groups
