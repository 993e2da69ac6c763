"""Gradient-based attention transfer (paper section 3.2): CE + beta * d(J_S - J_T), J = dCE/dx, kept in the
graph (double backpropagation). Its two teacher-free baselines (symmetry, min-l2) take the same parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..method import Objective, Step, Weighted, form, register

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class InputGradient(Weighted):
    """CE + beta * d(difference(J_S)): a penalty on the student's input gradient J_S."""

    form: str = form()

    def difference(self, obj: Objective, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
        raise NotImplementedError

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        return obj.gradient_penalty(x, y, self.difference(obj, x, y), self.beta, self.form)


@register
@dataclass(frozen=True)
class GradientAT(InputGradient):
    name: ClassVar[str] = "grad-at"
    needs_teacher: ClassVar[bool] = True

    def teacher_targets(self, obj: Objective, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """J_T of each image: the cross-entropy is summed over the batch, so row b depends on image b alone."""
        import torch

        assert obj.teacher is not None
        with torch.enable_grad():
            _, jt = obj.input_gradient(obj.teacher, x, y, create_graph=False)
        return {"grad": jt}

    def difference(self, obj: Objective, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
        """J_S - J_T."""
        jt = obj.taught(x, y)["grad"]
        return lambda js: js - jt
