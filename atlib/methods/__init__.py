"""The built-in training methods, one module of this package each, registered in ``atlib.method``'s registry.

A method is a frozen dataclass registered with ``@register``: its fields are its parameters (a default and a
check each, :func:`param`), its class attributes say whether it needs a teacher, compares the networks' groups
or needs F-ActT's adapters, and :meth:`Method.loss` is its loss. Every module of this package is imported
here (and ``import atlib`` imports this package), so adding a method is adding its file; the config schema's
method names (``atlib.plan.schema``) and the spec's validation come from the registry.

A loss is ``method.loss(objective, x, y, progress) -> atlib.method.Step``: ``objective`` (``atlib.method.Objective``,
which ``atlib.losses.Objective`` provides) holds the networks, the compared groups and the adapters, and composes
the common shapes of a loss (``cross_entropy``, ``transfer`` over groups, ``gradient_penalty``). The plan validates
every method's parameters without torch, so a method module imports torch and atlib's formulas inside its loss,
never at the top.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..method import REGISTRY, Method, lookup, names, param, register

__all__ = ["REGISTRY", "Method", "lookup", "names", "param", "register"]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
