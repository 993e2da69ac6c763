"""Model registry: a name gives a model returning ``(logits, [group activations])``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..rundir import METRICS, finished, load_state
from ..spec import INITS, KNOWN, OPTIONS, family
from .nin import NIN, THIN_SCALE, nin_widths
from .resnet import ResNet
from .wrn import WRN


def build_model(name: str, in_channels: int, num_classes: int, init: str = "torch", **options: Any) -> nn.Module:
    """The registry's model ``name``, its weights drawn by ``init`` (``torch``: PyTorch's defaults; ``authors``:
    the authors' code, see atlib.models.init) from torch's global generator."""
    fam = family(name)
    unknown = set(options) - OPTIONS[fam]
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {sorted(unknown)}; "
                         f"its options are {sorted(OPTIONS[fam]) or 'none'}")
    if init not in INITS:
        raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")
    model: WRN | NIN | ResNet
    if fam == "wrn":
        _, depth, width = name.split("-")
        model = WRN(int(depth), int(width), in_channels, num_classes)
    elif fam == "nin":
        widths = nin_widths(1.0 if name == "nin-wide" else THIN_SCALE)
        model = NIN(widths, in_channels, num_classes, **options)
    else:
        model = ResNet(name.replace("-", ""), in_channels, num_classes, **options)
    if init == "authors":
        model.authors_init()
    return model


def load_run_model(folder: Path | str, device: Any = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A finished run's model in eval mode on ``device``, and its metrics; FileNotFoundError if it is not there."""
    metrics = finished(folder)
    if metrics is None:
        raise FileNotFoundError(f"{Path(folder) / METRICS}: no finished run there")
    # the weights are model.pt's: a pretrained initialisation file need not exist where the model is loaded
    options = {k: v for k, v in (metrics.get("model_options") or {}).items() if k != "pretrained"}
    model = build_model(metrics["model"], int(metrics["input_shape"][0]), int(metrics["num_classes"]), **options)
    model.load_state_dict(load_state(folder, device))
    return model.to(device).eval(), metrics


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["KNOWN", "build_model", "family", "load_run_model", "num_parameters"]
