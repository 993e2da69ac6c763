"""Knowledge distillation (Hinton et al., 2015): the student's softened outputs follow the teacher's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..method import Delayed, Objective, Step, above, at_least, param, register

if TYPE_CHECKING:
    from torch import Tensor


def kd_loss(ys: Tensor, yt: Tensor, y: Tensor, T: float, alpha: float) -> Tensor:
    """alpha * T^2 * KL(softmax(yt/T) || softmax(ys/T)) [batch mean] + (1 - alpha) * CE(ys, y)."""
    import torch.nn.functional as F

    kl = F.kl_div(F.log_softmax(ys / T, 1), F.softmax(yt / T, 1), reduction="batchmean")
    return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(ys, y)


@register
@dataclass(frozen=True)
class KD(Delayed):
    name: ClassVar[str] = "kd"
    needs_teacher: ClassVar[bool] = True
    reads_logits: ClassVar[bool] = True

    T: float = param(4.0, above(0), "a temperature > 0")
    alpha: float = param(0.9, lambda v: at_least(0)(v) and v <= 1, "a weight in [0, 1]")

    def kd_term(self, ys: Tensor, yt: Tensor, y: Tensor) -> Tensor:
        return kd_loss(ys, yt, y, self.T, self.alpha)

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        return obj.transfer(x, y, "kd", None, 0.0, kd=self.kd_term)  # no groups: KD alone
