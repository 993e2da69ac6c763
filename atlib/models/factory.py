"""A user's own network by import path: ``package.module:factory``.

The factory is called as ``factory(num_classes=N, in_channels=C)`` and returns an ``nn.Module`` whose forward
gives the logits (or a tuple whose first item they are). Its attention groups are the modules its config
names (``options.groups``), or by default the last module at each resolution of a forward at the data's image
size (:func:`atlib.models.tap.default_groups`). The module is imported as Python imports it: from the working
folder (``python -m atlib`` puts it on the path), an installed package, or ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError


def load(name: str) -> Callable[..., Any]:
    """The factory function ``name`` points at; an import path that does not lead to one is one line."""
    module_name, _, function = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"model.name: cannot import {module_name!r} for {name} ({e}); expected an importable "
                          "module (from the working folder, an installed package or PYTHONPATH)") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ConfigError(f"model.name: {module_name} has no function {function!r}; expected "
                          "package.module:factory, a function returning an nn.Module")
    return factory


def build(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """The user's network for ``num_classes`` classes and ``in_channels``-channel images."""
    try:
        net = load(name)(num_classes=num_classes, in_channels=in_channels)
    except ConfigError:
        raise
    except Exception as e:  # the user's code: its error, on one line, with the call that raised it
        raise ConfigError(f"model.name: {name}(num_classes={num_classes}, in_channels={in_channels}) raised "
                          f"{type(e).__name__}: {e}") from e
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model.name: {name} returned {type(net).__name__}; expected an nn.Module")
    return net
