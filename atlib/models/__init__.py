"""Model registry: a name gives a model returning ``(logits, [group activations])``: the paper's networks, any
torchvision classifier (``tv:NAME``, atlib.models.tv) and a user's network (``package.module:factory``,
atlib.models.factory), the last two with groups named by module path (atlib.models.tap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..rundir import METRICS, finished, load_state
from ..spec import INITS, KNOWN, OPTIONS, family
from . import factory
from .init import fb_layers
from .nin import NIN, THIN_SCALE, nin_widths
from .preresnet import PreResNet
from .resnet import ResNet
from .tap import Tapped, default_groups, trace
from .wrn import WRN

# Options that name a weight file read when the network is built: a finished run's model.pt holds its weights,
# so loading a run (a teacher, a figure's model) needs no such file on the machine.
WEIGHT_OPTIONS = ("pretrained", "weights")


def without_weight_files(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in WEIGHT_OPTIONS}


def build_model(name: str, in_channels: int, num_classes: int, init: str = "torch",
                image_size: tuple[int, int] | None = None, **options: Any) -> nn.Module:
    """The registry's model ``name``, its weights drawn by ``init`` (``torch``: PyTorch's defaults, or the
    network's own where its constructor draws them; ``authors``: the authors' code; ``fb``: fb.resnet.torch's;
    see atlib.models.init) from torch's global generator; a pretrained network keeps its weights either way.
    ``image_size`` (height, width) is the data's: a user's network whose config names no groups has them traced
    at it."""
    fam = family(name)
    unknown = set(options) - OPTIONS[fam]
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {sorted(unknown)}; "
                         f"its options are {sorted(OPTIONS[fam]) or 'none'}")
    if init not in INITS:
        raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")
    model: WRN | NIN | ResNet | PreResNet | Tapped
    if fam == "wrn":
        _, depth, width = name.split("-")
        model = WRN(int(depth), int(width), in_channels, num_classes)
    elif fam == "nin":
        widths = nin_widths(1.0 if name == "nin-wide" else THIN_SCALE)
        model = NIN(widths, in_channels, num_classes, **options)
    elif fam == "resnet":
        model = ResNet(name.replace("-", ""), in_channels, num_classes, **options)
    elif fam == "preresnet":
        model = PreResNet(int(name.split("-")[1]), in_channels, num_classes)
    else:
        model = tapped(name, in_channels, num_classes, image_size, **options)
    if init == "authors":
        model.authors_init()
    elif init == "fb":
        for module in getattr(model, "new_layers", [model]):  # the layers no weight file set
            fb_layers(module)
    return model


def tapped(name: str, in_channels: int, num_classes: int, image_size: tuple[int, int] | None = None,
           groups: list[str] | None = None, weights: str | None = None) -> Tapped:
    """A torchvision classifier (``tv:NAME``) or a user's network (``package.module:factory``) returning the
    outputs of the modules ``groups`` names, or of its default groups (:func:`default_groups_of`)."""
    if family(name) == "tv":
        from . import tv  # imports torchvision: see ResNet.__init__

        net, new = tv.build(name.removeprefix("tv:"), in_channels, num_classes, weights)
    else:
        net = factory.build(name, in_channels, num_classes)
        new = [net]
    if groups is None:
        groups = list(default_groups_of(name, net, (in_channels, *image_size) if image_size else None))
    return Tapped(net, groups, new, name)


def default_groups_of(name: str, net: nn.Module | None = None,
                      input_shape: tuple[int, int, int] | None = None) -> tuple[str, ...]:
    """A tapped model's groups when its config names none: torchvision's fixed per family (atlib.models.tv.DEFAULTS,
    found at 224x224 whatever the data), a user's network ``net`` traced at the data's ``input_shape``."""
    if family(name) == "tv":
        from . import tv

        return tv.groups_of(name.removeprefix("tv:"))
    if net is None or input_shape is None:
        raise ConfigError(f"model.options.groups: {name} names none, and its defaults are traced at the data's "
                          "image size, which is not known here; name its groups")
    found = default_groups(trace(net, input_shape), input_shape[1:])
    if not found:
        raise ConfigError(f"model.options.groups: found no feature maps larger than 1x1 in {name} at "
                          f"{input_shape[1]}x{input_shape[2]}; name its groups")
    return found


def load_run_model(folder: Path | str, device: Any = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A finished run's model in eval mode on ``device``, and its metrics; FileNotFoundError if it is not there."""
    metrics = finished(folder)
    if metrics is None:
        raise FileNotFoundError(f"{Path(folder) / METRICS}: no finished run there")
    # the weights are model.pt's: a pretrained initialisation file need not exist where the model is loaded
    options = without_weight_files(metrics.get("model_options") or {})
    channels, *size = (int(n) for n in metrics["input_shape"])
    model = build_model(metrics["model"], channels, int(metrics["num_classes"]), image_size=(size[0], size[1]),
                        **options)
    model.load_state_dict(load_state(folder, device))
    return model.to(device).eval(), metrics


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["KNOWN", "Tapped", "build_model", "default_groups_of", "family", "load_run_model", "num_parameters",
           "without_weight_files"]
