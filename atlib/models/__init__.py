"""Model registry: a name gives a model returning ``(logits, [group activations])``."""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from .nin import NIN, THIN_SCALE, nin_widths
from .resnet import ResNet
from .wrn import WRN

KNOWN = ("wrn-<depth>-<width> (depth = 6n+4, e.g. wrn-16-1, wrn-16-2, wrn-40-1, wrn-40-2)",
         "nin-wide", "nin-thin", "resnet-18", "resnet-34")
OPTIONS = {"wrn": set(), "nin": {"batchnorm", "relu_before_pool"}, "resnet": {"pretrained"}}


def family(name: str) -> str:
    """The model family of a registry name, or a ValueError listing the known names."""
    if re.fullmatch(r"wrn-\d+-\d+", name):
        depth = int(name.split("-")[1])
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"unknown model {name!r}: WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...)")
        return "wrn"
    if name in ("nin-wide", "nin-thin"):
        return "nin"
    if name in ("resnet-18", "resnet-34"):
        return "resnet"
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(KNOWN)}")


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
