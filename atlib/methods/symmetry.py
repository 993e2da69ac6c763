"""The symmetry norm (a baseline of gradient AT, Table 3): the student's input gradient is pushed towards being
symmetric under horizontal flips, J(x) - flip(J(flip x)), with no teacher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..method import Objective, register
from .grad_at import InputGradient

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass(frozen=True)
class Symmetry(InputGradient):
    name: ClassVar[str] = "symmetry"

    def difference(self, obj: Objective, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
        """J(x) - flip(J(flip x)); the flipped pass runs after the student's own, as batch norm's running
        statistics see them in that order."""
        return lambda js: js - obj.input_gradient(obj.student, x.flip(-1), y, create_graph=True)[1].flip(-1)
