"""The symmetry norm (a baseline of gradient AT, Table 3): the student's input gradient is pushed towards being
symmetric under horizontal flips, J(x) - flip(J(flip x)), with no teacher.

Section 3.2: "we propagate horizontally flipped images as well as originals, backpropagate and flip gradient
attention maps back. We then add l2 losses on the obtained attentions and outputs". Equation 6 prints the
attention term alone; the output term, d(f(x) - f(flip x)) on the logits, is weighted by ``output_beta``, which
the paper does not publish (0, the default, leaves equation 6 as printed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..method import Objective, Step, at_least, param, register
from .grad_at import InputGradient

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass(frozen=True)
class Symmetry(InputGradient):
    name: ClassVar[str] = "symmetry"

    output_beta: float = param(0.0, at_least(0), "a number >= 0")

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        """CE + beta * d(J(x) - flip(J(flip x))) + output_beta * d(f(x) - f(flip x)); the flipped pass runs after
        the student's own, as batch norm's running statistics see them in that order."""
        from ..attention import distance

        flipped: list[Tensor] = []

        def difference(js: Tensor) -> Tensor:
            logits, jf = obj.input_gradient(obj.student, x.flip(-1), y, create_graph=True)
            flipped.append(logits)
            return js - jf.flip(-1)

        step = obj.gradient_penalty(x, y, difference, self.beta, self.form)
        if not self.output_beta:
            return step
        outputs = distance(step.logits - flipped[0], self.form)
        return Step(step.loss + self.output_beta * outputs, step.logits, {**step.terms, "outputs": outputs.detach()})
