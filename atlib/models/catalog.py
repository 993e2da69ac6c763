"""What ``atlib models`` prints: every model name a config can use, and its default attention groups."""

from __future__ import annotations

import torchvision

from ..spec import ModelSpec
from . import tv
from .check import describe

PAPER = (
    ("wrn-D-K", "D = 6n+4 layers, K the width (wrn-16-1, wrn-16-2, wrn-40-1, ...)",
     "its 3 groups of residual blocks"),
    ("nin-wide, nin-thin", "options: batchnorm, relu_before_pool, group_outputs",
     "3: the two pooled blocks and the last convolution (group_outputs: conv, each block's last convolution)"),
    ("resnet-18, resnet-34", "options: pretrained (imagenet: torchvision's cache file, or a path)",
     "layer1, layer2, layer3, layer4"),
    ("preresnet-18, preresnet-34", "fb.resnet.torch's pre-activation ResNet (preresnet.lua), fb's initialisation",
     "its 4 groups of residual blocks, each group's raw residual sum"),
)


def listing() -> str:
    """Every name: the paper's networks, torchvision's classifiers by their default groups, a user's factory."""
    lines = ["The paper's networks (their groups are fixed):"]
    width = max(len(name) for name, _, _ in PAPER)
    lines += [f"  {name:<{width}} {what}\n  {'':<{width}} groups: {groups}" for name, what, groups in PAPER]
    by_groups: dict[tuple[str, ...], list[str]] = {}
    for name in tv.names():
        by_groups.setdefault(tv.groups_of(name), []).append(f"tv:{name}")
    lines += ["", f"torchvision's classifiers (torchvision {torchvision.__version__}), tv:NAME with options weights "
              "(an entry of its weights enum, e.g. IMAGENET1K_V1, read from torch's hub cache) and groups (module "
              "paths); by their default groups:"]
    for groups, names in sorted(by_groups.items(), key=lambda item: item[1][0]):
        lines += [f"  {', '.join(groups)}", f"      {' '.join(names)}"]
    lines += [f"  not tapped: {', '.join(f'tv:{p}*' for p in tv.UNSUPPORTED)} (no convolutional feature maps)",
              "", "Your own network: package.module:factory, called as factory(num_classes=N, in_channels=C); option "
              "groups (module paths), by default the last module at each resolution of a forward at the data's "
              "image size.", "", "atlib models NAME [--input C,H,W] [--groups a,b,c] shows a network's groups and "
              "their sizes on such images."]
    return "\n".join(lines)


def groups_text(name: str, input_shape: tuple[int, int, int], groups: list[str] | None = None) -> str:
    """A network's groups (its defaults, or ``groups``) and each one's channels and size on ``input_shape`` images."""
    cfg = {"name": name, "options": {"groups": groups}} if groups else name
    model = ModelSpec.from_config(cfg)
    found = describe(model, input_shape, 10)
    c, h, w = input_shape
    width = max(len(n) for n in found.names)
    lines = [f"{name}: {len(found.names)} groups on {c}x{h}x{w} images (channels x height x width)"]
    lines += [f"  {n:<{width}}  {k} x {s[0]} x {s[1]}" for n, s, k in zip(found.names, found.sizes, found.channels,
                                                                         strict=True)]
    return "\n".join(lines)
