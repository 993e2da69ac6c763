"""Model registry: a name gives a model returning ``(logits, [group activations])``."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..spec import KNOWN, OPTIONS, family
from .nin import NIN, THIN_SCALE, nin_widths
from .resnet import ResNet
from .wrn import WRN


def build_model(name: str, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    fam = family(name)
    unknown = set(options) - OPTIONS[fam]
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {sorted(unknown)}; "
                         f"its options are {sorted(OPTIONS[fam]) or 'none'}")
    if fam == "wrn":
        _, depth, width = name.split("-")
        return WRN(int(depth), int(width), in_channels, num_classes)
    if fam == "nin":
        widths = nin_widths(1.0 if name == "nin-wide" else THIN_SCALE)
        return NIN(widths, in_channels, num_classes, **options)
    return ResNet(name.replace("-", ""), in_channels, num_classes, **options)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["KNOWN", "build_model", "family", "num_parameters"]
