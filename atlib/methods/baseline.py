"""The baseline: the network's own cross-entropy (every teacher is trained so)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..method import Method, Objective, Step, register

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass(frozen=True)
class Baseline(Method):
    name: ClassVar[str] = "baseline"

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        return obj.cross_entropy(x, y)
