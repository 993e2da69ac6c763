"""Any classifier as an atlib model: its attention groups are the outputs of modules named by path.

:class:`Tapped` wraps a network whose forward gives logits and returns ``(logits, [group outputs])`` as atlib's
own networks do; a group is named as ``net.named_modules()`` names it (``layer2``, ``features.3``), as
torchdistill names the features it compares. The outputs are caught by forward hooks rather than by
``torchvision.models.feature_extraction.create_feature_extractor`` (an FX graph): on this project's CPU (1
thread, batch 16 of 32x32, CPU time) a forward and backward took the same time either way (ResNet-18 118 ms
with hooks, 117 ms with FX; MobileNetV3-small 59.7 and 62.7 ms), while FX's tracing cost 53 and 36 ms at every
build against under 1 ms for the hooks. Hooks are also simpler: the network stays as it is (its state_dict
keys, a classifier replaced in place) and any Python forward works, where FX needs a traceable one.

:func:`default_groups` finds a network's groups when a config names none (see its docstring for the rule).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .init import authors_layers


def _record(store: dict[str, list[Tensor]], path: str, module: nn.Module, args: tuple, output: object) -> None:
    store.setdefault(path, []).append(output)


class Tapped(nn.Module):
    """``net`` returning ``(logits, [the output of each module in paths])``.

    ``new_layers`` are the modules no weight file set (the whole network without weights): the recipe's
    ``init: authors`` draws those. A group module must run once per forward and give a (B, C, H, W) map.
    """

    def __init__(self, net: nn.Module, paths: Sequence[str], new_layers: Sequence[nn.Module], name: str) -> None:
        super().__init__()
        self.net = net
        self.paths = tuple(paths)
        self.model_name = name
        check_paths(net, self.paths, name)
        self.new_layers = list(new_layers)
        self._taps: dict[str, list[Tensor]] = {}  # filled by the hooks during one forward
        modules = dict(net.named_modules())
        for path in self.paths:
            modules[path].register_forward_hook(partial(_record, self._taps, path))

    @property
    def groups(self) -> list[nn.Module]:
        """The group modules, in order (recipe ``freeze_groups`` freezes some); a plain list, so the modules
        are not registered twice and the state_dict keeps ``net``'s keys only."""
        modules = dict(self.net.named_modules())
        return [modules[p] for p in self.paths]

    def authors_init(self) -> None:
        for module in self.new_layers:
            authors_layers(module)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        self._taps.clear()
        try:
            out = self.net(x)
            taps = {p: self._taps.get(p, []) for p in self.paths}
        finally:
            self._taps.clear()  # no activation outlives the forward
        # torchvision's GoogLeNet/Inception in training with aux heads, or a user's (logits, extra): logits first
        logits = out if isinstance(out, Tensor) else out[0]
        groups = []
        for path, outputs in taps.items():
            if len(outputs) != 1:
                raise ConfigError(f"model.options.groups: module {path!r} of {self.model_name} ran {len(outputs)} "
                                  "times in one forward; expected a module that runs once (e.g. the block around it)")
            (g,) = outputs
            if not isinstance(g, Tensor) or g.dim() != 4:
                got = f"shape {tuple(g.shape)}" if isinstance(g, Tensor) else type(g).__name__
                raise ConfigError(f"model.options.groups: module {path!r} of {self.model_name} gives {got}; expected a "
                                  "(batch, channels, height, width) feature map")
            groups.append(g)
        return logits, groups


def check_paths(net: nn.Module, paths: Sequence[str], name: str) -> None:
    """Every path names a module of ``net``, once; else one line naming the bad path and the nearest ones."""
    if not paths:
        raise ConfigError(f"model.options.groups: {name} has no groups; expected module paths (atlib models {name} "
                          "lists its defaults)")
    modules = [p for p, _ in net.named_modules() if p]
    for path in paths:
        if path not in modules:
            near = set(difflib.get_close_matches(path, modules, n=4, cutoff=0.5))
            near = [p for p in modules if p in near]  # in the network's order
            top = [p for p in modules if "." not in p]
            hint = f"did you mean {', '.join(near)}?" if near else f"its top-level modules: {', '.join(top)}"
            raise ConfigError(f"model.options.groups: {path!r} is not a module of {name}; expected module paths as "
                              f"named_modules() names them ({hint})")
    if len(set(paths)) != len(paths):
        raise ConfigError(f"model.options.groups: {list(paths)} names a module twice; expected each group once")


# --- default groups: the last module at each resolution ------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One module call of a traced forward: where it started and ended (a shared clock, so calls nest), the
    spatial size of its input and output ((H, W) of a 4-D tensor, None for anything else)."""

    path: str
    start: int
    end: int
    size_in: tuple[int, int] | None
    size_out: tuple[int, int] | None
    has_parameters: bool
    is_conv: bool


def _size(t: object) -> tuple[int, int] | None:
    return (int(t.shape[-2]), int(t.shape[-1])) if isinstance(t, Tensor) and t.dim() == 4 else None


def trace(net: nn.Module, input_shape: Sequence[int]) -> list[Call]:
    """Every module call of one forward of a (1, *input_shape) zero batch on ``net``'s device (``meta``: shapes
    only, no arithmetic), in the order the calls end. ``net`` is put in eval mode for it and back after."""
    calls: list[Call] = []
    starts: list[int] = []
    clock = [0]
    handles = []

    def before(module: nn.Module, args: tuple) -> None:
        clock[0] += 1
        starts.append(clock[0])

    def after(path: str, module: nn.Module, args: tuple, output: object) -> None:
        clock[0] += 1
        calls.append(Call(path, starts.pop(), clock[0], _size(args[0]) if args else None, _size(output),
                          any(True for _ in module.parameters()), isinstance(module, nn.Conv2d)))

    for path, module in net.named_modules():
        if path:
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(partial(after, path))]
    was_training = net.training
    device = next(net.parameters()).device
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros((1, *input_shape), device=device))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return calls


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def levels(sizes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Each spatial size's resolution level, 0 the largest: a size starts a new level when its area is under half
    the area of its level's first size. A stride-2 step quarters the area; the border an unpadded 3x3
    convolution loses (Inception's 111 -> 109) does not make a new level."""
    found: dict[tuple[int, int], int] = {}
    first, level = (0, 0), -1
    for size in sorted(set(sizes), key=_area, reverse=True):
        if level < 0 or 2 * _area(size) < _area(first):
            first, level = size, level + 1
        found[size] = level
    return found


def default_groups(calls: Sequence[Call], input_size: tuple[int, int]) -> tuple[str, ...]:
    """The outputs before each spatial downsampling: for each resolution level of the traced forward
    (:func:`levels`), from the largest, the last module to finish at it, where

    - a module counts when its input and output are feature maps and it keeps the level or lowers it by one
      (ResNet's ``layer2``: 56 -> 28), so a whole trunk (MobileNet's ``features``) does not;
    - a module inside a counting one whose output is at another level does not count: it is inside a
      downsampling block (the expansion before an inverted residual's strided convolution) or a side branch
      (squeeze-and-excitation's pooled path);
    - of modules that end together, the enclosing one ends last (``layer1`` rather than its last block);
    - a level has no group when no module with parameters works at it (VGG's last pooling), when its maps are
      1x1 (a map of one pixel carries no attention), or when the network's first convolution already lowered
      the input's level to it and no other counting convolution works at it (a stem such as ResNet's
      conv-BN-ReLU: the paper's groups start after it).

    ResNet-18 gives layer1..layer4, MobileNetV3-small features.1, .3, .8 and .12, EfficientNet-B0 features.1,
    .2, .3, .5 and .8 (its first block works at the stem's resolution).
    """
    level = levels([s for c in calls for s in (c.size_in, c.size_out) if s is not None] + [input_size])
    steps = [c for c in calls if c.size_in is not None and c.size_out is not None
             and 0 <= level[c.size_out] - level[c.size_in] <= 1]
    inner = [c for c in steps if not any(a.start < c.start and a.end > c.end and level[a.size_out] != level[c.size_out]
                                         for a in steps)]
    candidates = [c for c in inner if _area(c.size_out) > 1]
    first = next((c for c in calls if c.is_conv and c.size_out is not None), None)
    stem = level[first.size_out] if first is not None and level[first.size_out] != level[input_size] else None
    groups = []
    for k in sorted(set(level.values())):
        at = [c for c in candidates if level[c.size_out] == k]
        if not at or not any(c.has_parameters for c in at):
            continue
        if k == stem and sum(c.is_conv and level[c.size_out] == k for c in inner) <= 1:
            continue
        groups.append(at[-1].path)
    return tuple(groups)
