"""Distillation losses and the composition of a method's total loss.

Every method is one :class:`Method` (a validated, frozen config) and one :class:`Objective`
(an ``nn.Module`` that owns the method's trainable parts, e.g. F-ActT's 1x1 adapters, and turns a
batch into a loss). The engine never branches on the method name.
"""

from __future__ import annotations

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
    """Turns a batch into the method's total loss. Holds F-ActT's trainable 1x1 adapters."""

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
        if method.name in ("at", "at+kd", "factt"):
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
                if hs != ht and (method.name == "factt" or not method.resize):
                    raise ConfigError(f"method.groups: group {g} is {hs} in the student and {ht} in "
                                      f"the teacher; {method.name} needs equal sizes"
                                      + (" (set resize: true)" if method.name != "factt" else ""))
                if method.name == "factt":
                    self.adapters.append(nn.Conv2d(cs, ct, 1, bias=False) if cs != ct else nn.Identity())
            self.adapters.to(device)

    def _teacher(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        assert self.teacher is not None
        with torch.inference_mode():
            return self.teacher(x)

    def forward(self, x: Tensor, y: Tensor, progress: float, transfer: bool = True) -> Step:
        """The loss of one batch at ``progress`` in [0, 1) of training; ``transfer=False`` (before the
        method's start epoch) is the student's plain cross-entropy, without running the teacher."""
        m = self.method
        terms: dict[str, Tensor] = {}
        if not transfer:
            logits, _ = self.student(x)
            ce = F.cross_entropy(logits, y)
            return Step(ce, logits, {"ce": ce.detach()})
        if m.name in ("grad-at", "symmetry", "min-l2"):
            logits, js = input_gradient(self.student, x, y, create_graph=True)
            if m.name == "grad-at":
                with torch.enable_grad():
                    _, jt = input_gradient(self.teacher, x, y, create_graph=False)
                d = js - jt
            elif m.name == "symmetry":
                d = js - hflip(input_gradient(self.student, hflip(x), y, create_graph=True)[1])
            else:
                d = js
            ce = F.cross_entropy(logits, y)
            penalty = distance(d.flatten(1), m.form)
            terms["ce"], terms["grad"] = ce.detach(), penalty.detach()
            return Step(ce + m.beta * penalty, logits, terms)

        logits, gs = self.student(x)
        ce = F.cross_entropy(logits, y)
        terms["ce"] = ce.detach()
        if m.name == "baseline":
            return Step(ce, logits, terms)
        yt, gt = self._teacher(x)
        if m.name in ("kd", "at+kd"):
            loss = kd_loss(logits, yt, y, m.T, m.alpha)
            terms["kd"] = loss.detach()
        else:
            loss = ce
        beta = m.beta_at(progress)
        for i, g in enumerate(self.groups):
            if m.name == "factt":
                term = factt_loss(self.adapters[i](gs[g]), gt[g], m.form)
            else:
                term = at_loss(gs[g], gt[g], m.mapping, m.p, m.norm, m.form, m.resize)
            terms[f"{'factt' if m.name == 'factt' else 'at'}/g{g}"] = term.detach()
            loss = loss + beta * term
        return Step(loss, logits, terms)
