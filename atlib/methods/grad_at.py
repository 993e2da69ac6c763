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

    def difference(self, obj: Objective, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
        """J_S - J_T."""
        import torch

        assert obj.teacher is not None
        with torch.enable_grad():
            _, jt = obj.input_gradient(obj.teacher, x, y, create_graph=False)
        return lambda js: js - jt
