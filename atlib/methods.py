"""The method registry: every training method, its parameters and their defaults, whether it learns from
a teacher, and its loss.

``atlib.spec`` validates a method's parameters against its entry, the config schema's enums must equal
:func:`names` (a test checks it), and ``atlib.losses.Objective`` calls the entry's loss. Adding a method is
one :func:`register` call plus its formula. This module imports no torch: a loss is named as
``"module:function"`` and imported when a run is built (or given as the function itself).

A loss is ``loss(objective, x, y, progress) -> atlib.losses.Step``, where ``objective`` gives the method
(``objective.method``), the networks, the compared groups and F-ActT's adapters.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

AT = frozenset({"beta", "mapping", "p", "norm", "groups", "form", "resize", "beta_schedule", "start_epoch"})
KD = frozenset({"T", "alpha", "start_epoch"})
GRADIENT = frozenset({"beta", "form", "start_epoch"})


@dataclass(frozen=True)
class MethodDef:
    name: str
    parameters: frozenset[str]
    needs_teacher: bool
    loss: str | Callable[..., Any]  # "module:function", or the function
    defaults: Mapping[str, Any] = field(default_factory=dict)  # where they differ from atlib.spec.Method's
    groups: bool = False  # compares group activations: the objective checks the student's and teacher's shapes
    adapters: bool = False  # a trainable 1x1 convolution maps each student group to the teacher's width

    def loss_function(self) -> Callable[..., Any]:
        if callable(self.loss):
            return self.loss
        module, name = self.loss.split(":")
        return getattr(importlib.import_module(module), name)


REGISTRY: dict[str, MethodDef] = {}


def register(method: MethodDef) -> MethodDef:
    REGISTRY[method.name] = method
    return method


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: Any) -> MethodDef | None:
    return REGISTRY.get(name) if isinstance(name, str) else None


# The paper decays beta for F-ActT (section 4.1.2: "decay beta in eq. 2 during training as these give
# better performance") and for AT+KD, publishing no schedule for either: both decay linearly to 0.
DECAY = {"beta_schedule": "linear"}

register(MethodDef("baseline", frozenset(), False, "atlib.losses:baseline_step"))
register(MethodDef("at", AT, True, "atlib.losses:at_step", groups=True))
register(MethodDef("factt", frozenset({"beta", "groups", "form", "beta_schedule", "start_epoch"}), True,
                   "atlib.losses:factt_step", DECAY, groups=True, adapters=True))
register(MethodDef("kd", KD, True, "atlib.losses:kd_step"))
register(MethodDef("at+kd", AT | KD, True, "atlib.losses:at_kd_step", DECAY, groups=True))
register(MethodDef("grad-at", GRADIENT, True, "atlib.losses:grad_at_step"))
register(MethodDef("symmetry", GRADIENT, False, "atlib.losses:symmetry_step"))
register(MethodDef("min-l2", GRADIENT, False, "atlib.losses:min_l2_step"))
