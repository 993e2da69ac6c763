"""min-l2 (Drucker & LeCun's double backpropagation, a baseline of gradient AT in Table 3): the student's input
gradient J itself is made small, with no teacher."""

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
class MinL2(InputGradient):
    name: ClassVar[str] = "min-l2"

    def difference(self, obj: Objective, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
        """J itself."""
        return lambda js: js
