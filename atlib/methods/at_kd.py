"""AT and KD together (Table 1's AT+KD): KD's loss + beta * the AT terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..method import Objective, Step, register, schedule
from .at import AT
from .kd import KD

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass(frozen=True)
class ATKD(AT, KD):
    name: ClassVar[str] = "at+kd"

    # The paper decays beta for AT+KD (and F-ActT), publishing no schedule: it decays linearly to 0.
    beta_schedule: str = schedule("linear")

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        return obj.transfer(x, y, "at", self.at_term, self.beta_at(progress), kd=self.kd_term)
