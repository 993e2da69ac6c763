"""F-ActT (paper section 4.1.2): FitNets-style transfer of whole activations, each l2-normalised per sample,
through a trainable 1x1 convolution from the student's width to the teacher's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..method import Objective, Scheduled, Step, form, groups, register, schedule

if TYPE_CHECKING:
    from torch import Tensor


def factt_loss(s: Tensor, t: Tensor, form: str = "code") -> Tensor:
    """FitNets-style loss on whole activations, each l2-normalised per sample (same shapes)."""
    import torch.nn.functional as F

    from ..attention import distance, fp32

    return distance(F.normalize(fp32(s).flatten(1), dim=1) - F.normalize(fp32(t).flatten(1), dim=1), form)


@register
@dataclass(frozen=True)
class FActT(Scheduled):
    name: ClassVar[str] = "factt"
    needs_teacher: ClassVar[bool] = True
    compares_groups: ClassVar[bool] = True
    adapters: ClassVar[bool] = True

    # Section 4.1.2: "decay beta in eq. 2 during training as these give better performance"; no schedule is
    # published, so it decays linearly to 0.
    beta_schedule: str = schedule("linear")
    groups: tuple[int, ...] | None = groups()
    form: str = form()

    def sizes_must_match(self) -> bool:
        return True

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        def term(i: int, s: Tensor, t: Tensor) -> Tensor:
            return factt_loss(obj.adapters[i](s), t, self.form)

        return obj.transfer(x, y, "factt", term, self.beta_at(progress))
