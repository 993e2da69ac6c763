"""Similarity-preserving distillation (Tung & Mori, ICCV 2019): the student keeps the teacher's pairwise
similarities of the batch's images. For a group's activations Q (the batch flattened to b x chw),
G = Q Q^T with each row divided by its l2 norm; the loss is 1/b^2 ||G_T - G_S||_F^2, summed over the chosen
groups and added to the cross-entropy with weight gamma. A Gram matrix is b x b whatever the group's widths
and sizes, so student and teacher groups of any shapes compare, with no adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..method import Method, Objective, Step, at_least, groups, param, register

if TYPE_CHECKING:
    from torch import Tensor


def similarity(a: Tensor) -> Tensor:
    """G: Q Q^T of the batch's activations Q (b x chw), each row divided by its l2 norm."""
    import torch

    from ..attention import fp32

    q = fp32(a).flatten(1)
    with torch.autocast(q.device.type, enabled=False):  # bf16 would keep 3 digits of each image pair's product
        g = q @ q.T
    return g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)  # as F.normalize: an all-zero row stays zero


def sp_loss(s: Tensor, t: Tensor) -> Tensor:
    """1/b^2 ||G_T - G_S||_F^2 of one student group ``s`` and teacher group ``t`` (b images each)."""
    b = s.shape[0]
    return (similarity(t) - similarity(s)).pow(2).sum() / (b * b)


@register
@dataclass(frozen=True)
class SP(Method):
    name: ClassVar[str] = "sp"
    needs_teacher: ClassVar[bool] = True
    compares_groups: ClassVar[bool] = True

    # the paper's CIFAR-10 weight; it compares the output of the last group of a WRN (-1 counts from the end)
    gamma: float = param(3000.0, at_least(0), "a number >= 0")
    groups: tuple[int, ...] | None = groups((-1,))

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        return obj.transfer(x, y, "sp", lambda i, s, t: sp_loss(s, t), self.gamma)
