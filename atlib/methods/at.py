"""Activation-based attention transfer (paper section 3.1): CE + beta * sum over groups of the distance of the
student's and the teacher's normalised attention maps (atlib.attention.at_loss)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..method import Objective, Scheduled, Step, above, boolean, form, groups, one_of, param, register

if TYPE_CHECKING:
    from torch import Tensor

MAPPINGS: tuple[str, ...] = ("sum", "max")  # F^p_sum, F^p_max (atlib.attention.MappingName)
NORMS: tuple[str, ...] = ("l2", "l1")


@register
@dataclass(frozen=True)
class AT(Scheduled):
    name: ClassVar[str] = "at"
    needs_teacher: ClassVar[bool] = True
    compares_groups: ClassVar[bool] = True
    size_hint: ClassVar[str] = " (set resize: true)"

    mapping: str = param("sum", one_of(*MAPPINGS), f"one of {', '.join(MAPPINGS)}")
    p: float = param(2.0, above(0), "a number > 0")
    norm: str = param("l2", one_of(*NORMS), f"one of {', '.join(NORMS)}")
    groups: tuple[int, ...] | None = groups()
    form: str = form()
    resize: bool = param(True, boolean, "true or false")  # maps of different sizes: bilinear to the larger

    def sizes_must_match(self) -> bool:
        return not self.resize

    def teacher_group(self, i: int, t: Tensor) -> Tensor:
        """The teacher's unnormalised map F(A_T): all the AT term reads of the teacher."""
        from ..attention import fp32, spatial_map

        return spatial_map(fp32(t), self.mapping, self.p)

    def at_term(self, i: int, s: Tensor, qt: Tensor) -> Tensor:
        from ..attention import at_loss_to_map

        return at_loss_to_map(s, qt, self.mapping, self.p, self.norm, self.form, self.resize)

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        return obj.transfer(x, y, "at", self.at_term, self.beta_at(progress))
