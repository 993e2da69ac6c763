"""Distillation losses and the composition of a method's total loss.

Every method is one :class:`Method` (a validated, frozen config), one entry of the registry
(``atlib.methods``) naming its loss below, and one :class:`Objective` (an ``nn.Module`` that owns the
method's trainable parts, e.g. F-ActT's 1x1 adapters, and turns a batch into a loss by the entry's
loss). Neither the engine nor the objective branches on the method name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import Form, at_loss, distance, fp32
from .spec import ConfigError, Method

# --- formulas ---------------------------------------------------------------------------------

def kd_loss(ys: Tensor, yt: Tensor, y: Tensor, T: float, alpha: float) -> Tensor:
    """alpha * T^2 * KL(softmax(yt/T) || softmax(ys/T)) [batch mean] + (1 - alpha) * CE(ys, y)."""
    kl = F.kl_div(F.log_softmax(ys / T, 1), F.softmax(yt / T, 1), reduction="batchmean")
    return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(ys, y)


def factt_loss(s: Tensor, t: Tensor, form: Form = "code") -> Tensor:
    """FitNets-style loss on whole activations, each l2-normalised per sample (same shapes)."""
    return distance(F.normalize(fp32(s).flatten(1), dim=1) - F.normalize(fp32(t).flatten(1), dim=1), form)


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
    """(logits, J) with J = d CE(W, x) / dx, CE summed over the batch so J_b does not scale with B."""
    x = x.detach().requires_grad_(True)
    logits, _ = model(x)
    (j,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x, create_graph=create_graph)
    return logits, j


def hflip(x: Tensor) -> Tensor:
    return x.flip(-1)


# --- composition ------------------------------------------------------------------------------

class Step(NamedTuple):
    loss: Tensor
    logits: Tensor
    terms: dict[str, Tensor]  # detached scalars, for logging


def _probe(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> list[torch.Size]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, groups = model(torch.zeros((2, *shape), device=device, dtype=next(model.parameters()).dtype))
    model.train(was_training)
    return [g.shape[1:] for g in groups]


class Objective(nn.Module):
    """Turns a batch into the method's total loss (its registry entry's loss). Holds F-ActT's trainable
    1x1 adapters."""

    def __init__(self, method: Method, student: nn.Module, teacher: nn.Module | None,
                 input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        super().__init__()
        device = torch.device(device)
        if method.needs_teacher and teacher is None:
            raise ConfigError(f"method {method.name!r} needs a teacher, and none is configured")
        entry = method.definition
        self.method = method
        self.student = student
        self.teacher = teacher
        self.loss_function = entry.loss_function()
        self.adapters = nn.ModuleList()
        self.groups: tuple[int, ...] = ()
        if entry.groups:
            s_shapes = _probe(student, input_shape, device)
            t_shapes = _probe(teacher, input_shape, device)
            if len(s_shapes) != len(t_shapes):
                raise ConfigError(f"method.groups: student has {len(s_shapes)} groups, "
                                  f"teacher has {len(t_shapes)}")
            self.groups = method.groups if method.groups is not None else tuple(range(len(s_shapes)))
            if max(self.groups) >= len(s_shapes):
                raise ConfigError(f"method.groups: {list(self.groups)} out of range for "
                                  f"{len(s_shapes)} groups (indices start at 0)")
            for g in self.groups:
                (cs, *hs), (ct, *ht) = s_shapes[g], t_shapes[g]
                if hs != ht and (entry.adapters or not method.resize):
                    raise ConfigError(f"method.groups: group {g} is {hs} in the student and {ht} in "
                                      f"the teacher; {method.name} needs equal sizes"
                                      + ("" if entry.adapters else " (set resize: true)"))
                if entry.adapters:
                    self.adapters.append(nn.Conv2d(cs, ct, 1, bias=False) if cs != ct else nn.Identity())
            self.adapters.to(device)

    def teacher_outputs(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The frozen teacher's logits and groups, with no autograd record."""
        assert self.teacher is not None
        with torch.inference_mode():
            return self.teacher(x)

    def forward(self, x: Tensor, y: Tensor, progress: float, transfer: bool = True) -> Step:
        """The loss of one batch at ``progress`` in [0, 1) of training; ``transfer=False`` (before the
        method's start epoch) is the student's plain cross-entropy, without running the teacher."""
        return self.loss_function(self, x, y, progress) if transfer else baseline_step(self, x, y, progress)


# --- the losses of the registered methods (atlib.methods) --------------------------------------

def baseline_step(obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
    logits, _ = obj.student(x)
    ce = F.cross_entropy(logits, y)
    return Step(ce, logits, {"ce": ce.detach()})


def _transfer(obj: Objective, x: Tensor, y: Tensor, progress: float, kd: bool, term: str) -> Step:
    """CE (or KD) + beta(progress) * the sum over groups of the AT (or F-ActT) term."""
    m = obj.method
    logits, gs = obj.student(x)
    ce = F.cross_entropy(logits, y)
    terms = {"ce": ce.detach()}
    yt, gt = obj.teacher_outputs(x)
    loss = ce
    if kd:
        loss = kd_loss(logits, yt, y, m.T, m.alpha)
        terms["kd"] = loss.detach()
    beta = m.beta_at(progress)
    for i, g in enumerate(obj.groups):
        if term == "factt":
            value = factt_loss(obj.adapters[i](gs[g]), gt[g], m.form)
        else:
            value = at_loss(gs[g], gt[g], m.mapping, m.p, m.norm, m.form, m.resize)
        terms[f"{term}/g{g}"] = value.detach()
        loss = loss + beta * value
    return Step(loss, logits, terms)


def at_step(obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
    return _transfer(obj, x, y, progress, kd=False, term="at")


def factt_step(obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
    return _transfer(obj, x, y, progress, kd=False, term="factt")


def kd_step(obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
    return _transfer(obj, x, y, progress, kd=True, term="at")  # no groups: KD alone


def at_kd_step(obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
    return _transfer(obj, x, y, progress, kd=True, term="at")


def _gradient(obj: Objective, x: Tensor, y: Tensor, difference: Callable[[Tensor], Tensor]) -> Step:
    """CE + beta * d(difference(J_S)), J_S = dCE/dx of the student, kept in the graph (double backprop)."""
    logits, js = input_gradient(obj.student, x, y, create_graph=True)
    ce = F.cross_entropy(logits, y)
    penalty = distance(difference(js).flatten(1), obj.method.form)
    return Step(ce + obj.method.beta * penalty, logits, {"ce": ce.detach(), "grad": penalty.detach()})


def grad_at_step(obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
    """Gradient AT: J_S - J_T."""
    assert obj.teacher is not None
    with torch.enable_grad():
        _, jt = input_gradient(obj.teacher, x, y, create_graph=False)
    return _gradient(obj, x, y, lambda js: js - jt)


def symmetry_step(obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
    """Symmetry norm: J(x) - flip(J(flip x))."""
    return _gradient(obj, x, y, lambda js: js - hflip(input_gradient(obj.student, hflip(x), y, create_graph=True)[1]))


def min_l2_step(obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
    """min-l2 (Drucker & LeCun's double backpropagation): J itself."""
    return _gradient(obj, x, y, lambda js: js)
