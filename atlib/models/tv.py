"""torchvision's classifiers by name (``tv:<name>``), with weights only from torch's hub cache.

A name is any of ``torchvision.models.list_models(module=torchvision.models)`` but the transformers whose
features are no (B, C, H, W) maps (:data:`UNSUPPORTED`). The network is torchvision's; atlib changes what
atlib's ``resnet-18`` changes: the classifier gets the dataset's classes and the first convolution its
channels (a 1-channel image: a new 1-channel convolution). ``weights`` names an entry of the model's weights
enum (``IMAGENET1K_V1``, ``DEFAULT``); its file must already be in ``torch.hub.get_dir()/checkpoints`` under
the name in the entry's URL, and its SHA-256 must begin with the digits in that name: atlib never downloads.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from ..errors import ConfigError
from .resnet import check_hash_prefix
from .tap import default_groups, trace

# Transformers: ViT's features are tokens (B, N, C), Swin's channels-last maps (B, H, W, C).
UNSUPPORTED = {"vit_": "its features are tokens (batch, tokens, channels)",
               "swin_": "its features are channels-last maps (batch, height, width, channels)"}
# The size default groups are traced at: ImageNet's, so a family's defaults do not depend on the data.
TRACE_SHAPE = (3, 224, 224)
_STAGES = tuple(f"layer{i}" for i in range(1, 5))
# Every torchvision classifier's default groups (torchvision 0.29), as atlib.models.tap.default_groups traces them
# at 224x224: the outputs before each spatial downsampling (a test traces one model of each line). A name no line
# matches is traced when it is first built. MaxViT is not traced (its attention layers reshape maps into windows,
# 4-D tensors that are no maps): its groups are its four stages, each starting with a stride-2 block.
DEFAULTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"resnet\d+|resnext\d+_\w+|wide_resnet\d+_2", _STAGES),
    (r"regnet_[xy]_\w+", tuple(f"trunk_output.block{i}" for i in range(1, 5))),
    (r"convnext_\w+", ("features.1", "features.3", "features.5", "features.7")),
    (r"densenet\d+", ("features.denseblock1", "features.denseblock2", "features.denseblock3", "features.norm5")),
    (r"efficientnet_b\d|efficientnet_v2_[ml]", ("features.1", "features.2", "features.3", "features.5", "features.8")),
    (r"efficientnet_v2_s", ("features.1", "features.2", "features.3", "features.5", "features.7")),
    (r"mobilenet_v2", ("features.1", "features.3", "features.6", "features.13", "features.18")),
    (r"mobilenet_v3_large", ("features.1", "features.3", "features.6", "features.12", "features.16")),
    (r"mobilenet_v3_small", ("features.1", "features.3", "features.8", "features.12")),
    (r"mnasnet\w+", ("layers.7", "layers.8", "layers.9", "layers.11", "layers.16")),
    (r"shufflenet_v2_\w+", ("stage2", "stage3", "conv5")),
    (r"squeezenet1_0", ("features.5", "features.10", "features.12")),
    (r"squeezenet1_1", ("features.4", "features.7", "features.12")),
    (r"googlenet", ("conv3", "inception3b", "inception4e", "inception5b")),
    (r"inception_v3", ("Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c")),
    (r"alexnet", ("features.4", "features.11")),
    (r"maxvit_t", ("blocks.0", "blocks.1", "blocks.2", "blocks.3")),
    (r"vgg11", ("features.1", "features.4", "features.9", "features.14", "features.19")),
    (r"vgg11_bn", ("features.2", "features.6", "features.13", "features.20", "features.27")),
    (r"vgg13", ("features.3", "features.8", "features.13", "features.18", "features.23")),
    (r"vgg13_bn", ("features.5", "features.12", "features.19", "features.26", "features.33")),
    (r"vgg16", ("features.3", "features.8", "features.15", "features.22", "features.29")),
    (r"vgg16_bn", ("features.5", "features.12", "features.22", "features.32", "features.42")),
    (r"vgg19", ("features.3", "features.8", "features.17", "features.26", "features.35")),
    (r"vgg19_bn", ("features.5", "features.12", "features.25", "features.38", "features.51")),
)
# Builder arguments without weights: GoogLeNet and Inception warn unless told to keep their initialisation.
BUILD_KWARGS = {"googlenet": {"init_weights": True}, "inception_v3": {"init_weights": True}}


@functools.cache
def names() -> tuple[str, ...]:
    """Every torchvision classifier atlib can tap, as ``tv:`` takes it (without the prefix)."""
    found = torchvision.models.list_models(module=torchvision.models)
    return tuple(n for n in found if not n.startswith(tuple(UNSUPPORTED)))


def check_name(name: str) -> None:
    """``name`` (without ``tv:``) is a torchvision classifier atlib can tap; else one line saying why not."""
    for prefix, why in UNSUPPORTED.items():
        if name.startswith(prefix):
            raise ConfigError(f"model.name: tv:{name} has no convolutional groups ({why}); expected a "
                              "convolutional classifier (atlib models lists them)")
    if name not in names():
        near = [f"tv:{n}" for n in names() if n.startswith(name.rstrip("0123456789_"))][:6]
        hint = f"e.g. {', '.join(near)}" if near else "atlib models lists them"
        raise ConfigError(f"model.name: tv:{name} is not a torchvision classifier (torchvision "
                          f"{torchvision.__version__}); expected one of its classification models ({hint})")


def weights_entry(name: str, weights: str) -> torchvision.models.WeightsEnum:
    """The entry ``weights`` of the model's weights enum; else one line listing the entries."""
    check_name(name)
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum[weights]
    except KeyError:
        raise ConfigError(f"model.options.weights: {weights!r} is not a weights entry of tv:{name}; expected one "
                          f"of {', '.join(enum.__members__)}") from None


def weights_file(name: str, weights: str) -> Path:
    """Where the entry's file must be: torch's hub cache, under the name in its URL (as torchvision caches it)."""
    url = weights_entry(name, weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def require_weights_file(name: str, weights: str) -> Path:
    """The entry's file, there and with the SHA-256 its name announces; else one line saying where to put what."""
    path = weights_file(name, weights)
    if not path.is_file():
        raise ConfigError(f"model.options.weights: {weights} of tv:{name} needs torchvision's {path.name} in "
                          f"{path.parent} (from {weights_entry(name, weights).url}); atlib never downloads weights")
    try:
        check_hash_prefix(path)
    except ValueError as e:
        raise ConfigError(f"model.options.weights: {e}") from None
    return path


def _set(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, module)


def _first_conv(net: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The convolution that reads the image: the first 3-channel one in registration order (torchvision builds
    its stems first)."""
    return next(((p, m) for p, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)


def _classifier(net: nn.Module, outputs: int) -> tuple[str, nn.Module]:
    """The layer that gives the logits: the last linear (or 1x1 convolution: SqueezeNet) with ``outputs`` outputs."""
    found = [(p, m) for p, m in net.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == outputs)
             or (isinstance(m, nn.Conv2d) and m.out_channels == outputs)]
    if not found:
        raise ConfigError(f"model.name: found no classifier with {outputs} outputs in {type(net).__name__}")
    return found[-1]


def _drop_aux_heads(net: nn.Module) -> None:
    """GoogLeNet's and Inception's auxiliary classifiers: atlib trains the main one, as torchvision's pretrained
    builders leave them out."""
    if getattr(net, "aux_logits", False):
        net.aux_logits = False
        for attr in ("aux1", "aux2", "AuxLogits"):
            if hasattr(net, attr):
                setattr(net, attr, None)


def build(name: str, in_channels: int, num_classes: int, weights: str | None = None
          ) -> tuple[nn.Module, list[nn.Module]]:
    """torchvision's ``name`` for ``num_classes`` classes and ``in_channels``-channel images, and the layers no
    weight file set (all of it without ``weights``)."""
    check_name(name)
    replaced: list[nn.Module] = []
    if weights is None:
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **BUILD_KWARGS.get(name, {}))
    else:
        entry = weights_entry(name, weights)
        require_weights_file(name, weights)  # so torchvision's loader finds the file and never downloads it
        net = torchvision.models.get_model(name, weights=entry)
        outputs = len(entry.meta["categories"])
        if num_classes != outputs:
            path, old = _classifier(net, outputs)
            new = (nn.Linear(old.in_features, num_classes) if isinstance(old, nn.Linear)
                   else nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding))
            _set(net, path, new)
            replaced.append(new)
    _drop_aux_heads(net)
    if in_channels != 3:
        first = _first_conv(net)
        if first is None:
            raise ConfigError(f"model.name: tv:{name} has no 3-channel first convolution to adapt to "
                              f"{in_channels}-channel images")
        path, old = first
        new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                        old.groups, old.bias is not None, old.padding_mode)
        _set(net, path, new)
        replaced.append(new)
        if hasattr(net, "transform_input"):
            net.transform_input = False  # GoogLeNet/Inception rescale three ImageNet channels
    return net, [net] if weights is None else replaced


def groups_of(name: str) -> tuple[str, ...]:
    """The default groups of ``tv:name``: its line of :data:`DEFAULTS`, else :func:`traced_groups`."""
    check_name(name)
    return next((groups for pattern, groups in DEFAULTS if re.fullmatch(pattern, name)), None) or traced_groups(name)


@functools.cache
def traced_groups(name: str) -> tuple[str, ...]:
    """:func:`atlib.models.tap.default_groups` of ``tv:name`` at 224x224, on the meta device where the network
    builds there (shapes only: no weights in memory, no arithmetic), else on the CPU (RegNet's builder reads
    numbers out of tensors)."""
    # the global generator stays as it was: a run's weights must not depend on whether this was cached
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                net = torchvision.models.get_model(name, weights=None, **BUILD_KWARGS.get(name, {}))
        except NotImplementedError:
            net = torchvision.models.get_model(name, weights=None, **BUILD_KWARGS.get(name, {}))
        _drop_aux_heads(net)
        return default_groups(trace(net, TRACE_SHAPE), TRACE_SHAPE[1:])
