"""The objective: a method's total loss from a batch, and the shapes of loss the methods compose.

Every built-in method is one module of ``atlib.methods`` (its parameters, whether it needs a teacher or adapters,
and its loss). :class:`Objective` (an ``nn.Module``) owns the networks and the method's trainable parts (F-ActT's
1x1 adapters), checks the compared groups, and offers the methods what ``atlib.method.Objective`` declares: the plain
cross-entropy, a transfer term summed over groups (:func:`_transfer`) and an input-gradient penalty
(:func:`_gradient`). Neither the engine nor the objective branches on the method name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import distance
from .errors import ConfigError
from .method import Method, Step

# (position in the compared groups, student's activation, what the method reads of the teacher's) -> loss
Term = Callable[[int, Tensor, Tensor], Tensor]


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
    """(logits, J) with J = d CE(W, x) / dx, CE summed over the batch so J_b does not scale with B."""
    x = x.detach().requires_grad_(True)
    logits, _ = model(x)
    (j,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x, create_graph=create_graph)
    return logits, j


# --- composition ------------------------------------------------------------------------------

def _probe(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> list[torch.Size]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, groups = model(torch.zeros((2, *shape), device=device, dtype=next(model.parameters()).dtype))
    model.train(was_training)
    return [g.shape[1:] for g in groups]


class Objective(nn.Module):
    """Turns a batch into the method's total loss (``method.loss``). Holds F-ActT's trainable 1x1 adapters."""

    def __init__(self, method: Method, student: nn.Module, teacher: nn.Module | None,
                 input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        super().__init__()
        device = torch.device(device)
        if method.needs_teacher and teacher is None:
            raise ConfigError(f"method {method.name!r} needs a teacher, and none is configured")
        self.method = method
        self.student = student
        self.teacher = teacher
        self.adapters = nn.ModuleList()
        self.groups: tuple[int, ...] = ()
        self._given: dict[str, Tensor] | None = None  # the batch's teacher targets, when the step looked them up
        if method.compares_groups:
            s_shapes = _probe(student, input_shape, device)
            t_shapes = _probe(teacher, input_shape, device)
            self.groups = _compared_groups(method, s_shapes, t_shapes)
            for g in self.groups:
                (cs, *hs), (ct, *ht) = s_shapes[g], t_shapes[g]
                if hs != ht and method.sizes_must_match():
                    raise ConfigError(f"method.groups: group {g} is {hs} in the student and {ht} in "
                                      f"the teacher; {method.name} needs equal sizes{method.size_hint}")
                if method.adapters:
                    self.adapters.append(nn.Conv2d(cs, ct, 1, bias=False) if cs != ct else nn.Identity())
            self.adapters.to(device)

    def teacher_outputs(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The frozen teacher's logits and groups, with no autograd record."""
        assert self.teacher is not None
        with torch.inference_mode():
            return self.teacher(x)

    def taught(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """What the method reads of the teacher for this batch (``method.teacher_targets``): the rows the step was
        given, computed once per input before training (atlib.teacher_cache), or else the live teacher's."""
        if self._given is not None:
            return self._given
        return self.method.teacher_targets(self, x, y)

    def forward(self, x: Tensor, y: Tensor, progress: float, transfer: bool = True,
                taught: dict[str, Tensor] | None = None) -> Step:
        """The loss of one batch at ``progress`` in [0, 1) of training; ``transfer=False`` (before the
        method's start epoch) is the student's plain cross-entropy, without running the teacher. ``taught``:
        the batch's teacher targets, looked up instead of running the teacher."""
        if not transfer:
            return self.cross_entropy(x, y)
        self._given = taught
        try:
            return self.method.loss(self, x, y, progress)
        finally:
            self._given = None

    # --- the shapes of loss a method composes (atlib.methods) -----------------------------------

    def cross_entropy(self, x: Tensor, y: Tensor) -> Step:
        """The student's own cross-entropy."""
        logits, _ = self.student(x)
        ce = F.cross_entropy(logits, y)
        return Step(ce, logits, {"ce": ce.detach()})

    def transfer(self, x: Tensor, y: Tensor, name: str, term: Term | None, weight: float,
                 kd: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None) -> Step:
        return _transfer(self, x, y, name, term, weight, kd)

    def gradient_penalty(self, x: Tensor, y: Tensor, difference: Callable[[Tensor], Tensor], weight: float,
                         form: str) -> Step:
        return _gradient(self, x, y, difference, weight, form)

    input_gradient = staticmethod(input_gradient)


def _compared_groups(method: Method, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> tuple[int, ...]:
    """The method's ``groups`` as indices from 0 (-1 is the last); every group for None, or without the parameter."""
    n = len(s_shapes)
    if n != len(t_shapes):
        raise ConfigError(f"method.groups: student has {n} groups, teacher has {len(t_shapes)}")
    return method.group_indices(n)


def _transfer(obj: Objective, x: Tensor, y: Tensor, name: str, term: Term | None, weight: float,
              kd: Callable[[Tensor, Tensor, Tensor], Tensor] | None) -> Step:
    """CE (or ``kd``'s loss of the student's and teacher's logits) + weight * the sum over the compared groups of
    ``term``, logged per group as ``name/g<index>``."""
    logits, gs = obj.student(x)
    ce = F.cross_entropy(logits, y)
    terms = {"ce": ce.detach()}
    taught = obj.taught(x, y)
    loss = ce
    if kd is not None:
        loss = kd(logits, taught["logits"], y)
        terms["kd"] = loss.detach()
    for i, g in enumerate(obj.groups):
        assert term is not None, "a method that compares groups gives their term"
        value = term(i, gs[g], taught[f"g{g}"])
        terms[f"{name}/g{g}"] = value.detach()
        loss = loss + weight * value
    return Step(loss, logits, terms)


def _gradient(obj: Objective, x: Tensor, y: Tensor, difference: Callable[[Tensor], Tensor], weight: float,
              form: str) -> Step:
    """CE + weight * d(difference(J_S)), J_S = dCE/dx of the student, kept in the graph (double backprop)."""
    logits, js = input_gradient(obj.student, x, y, create_graph=True)
    ce = F.cross_entropy(logits, y)
    penalty = distance(difference(js).flatten(1), form)
    return Step(ce + weight * penalty, logits, {"ce": ce.detach(), "grad": penalty.detach()})
