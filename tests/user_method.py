"""A method of a user's own, outside the package, named in a config by its import path
``user_method:LogitMatch`` (this folder is on the path when the tests run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from atlib.method import Method, Objective, Step, at_least, param


@dataclass(frozen=True)
class LogitMatch(Method):
    """CE plus beta times the mean squared distance of the student's logits to the teacher's."""

    needs_teacher: ClassVar[bool] = True
    beta: float = param(1.0, at_least(0), "a number >= 0")

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        logits, _ = obj.student(x)
        yt, _ = obj.teacher_outputs(x)
        ce = F.cross_entropy(logits, y)
        match = (logits - yt).pow(2).mean()
        return Step(ce + self.beta * match, logits, {"ce": ce.detach(), "match": match.detach()})


def not_a_method() -> None:
    """A function, where a config names a method class."""


@dataclass(frozen=True)
class NoLoss(Method):
    """A method class that forgot its loss."""


@dataclass(frozen=True)
class Misnamed(LogitMatch):
    """A path names a method: a name of its own would make two."""

    name: ClassVar[str] = "logit-match"
