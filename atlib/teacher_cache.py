"""The teacher's outputs computed once per input, where a run's inputs are finite.

A distilled step runs the frozen teacher forward on its batch: on a CPU about as much work again as the student's
whole step. When the augmentation gives each training image a finite set of views (none: one; flips: two), the
teacher sees the same few inputs every epoch, so everything the method reads of it (``Method.teacher_targets``:
logits, attention maps, activations, input gradients) is computed once before training, in eval mode, kept on the
run's device, and looked up by view in each step. Random crops, image folders, a bound exceeded or
``recipe.teacher_cache: false`` leave the live teacher in place; the run records which path it took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .data import Source
from .method import Objective  # what losses.Objective provides: this module sits beside it, not above


@dataclass
class TeacherCache:
    """The teacher targets of every view, row v for view v (``Source.all_views`` order)."""

    targets: dict[str, Tensor]

    def rows(self, views: Tensor) -> dict[str, Tensor]:
        return {k: v[views] for k, v in self.targets.items()}

    @property
    def bytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.targets.values())


def row_bytes(objective: Objective, source: Source, amp: Any) -> int:
    """Bytes of the teacher targets of one input, from a probe batch of the source's first two views."""
    x, y = next(source.all_views(2))
    with torch.no_grad(), amp():
        targets = objective.method.teacher_targets(objective, x, y)
    return sum(v[0].numel() * v.element_size() for v in targets.values())


def plan(objective: Objective, source: Source, enabled: bool, bound_mb: float, amp: Any) -> tuple[bool, str]:
    """(whether to build the cache, why): the reason names what stops it, or its size against the bound."""
    if not enabled:
        return False, "recipe.teacher_cache is false"
    views = source.views_per_image
    if views is None:
        return False, "the augmentation's inputs are not finite (random crops)"
    n = source.train_size * views
    mb = n * row_bytes(objective, source, amp) / 2**20
    if mb > bound_mb:
        return False, (f"{n} inputs would need {mb:.1f} MB, above recipe.teacher_cache_mb = {bound_mb:g}")
    return True, f"{n} inputs, {mb:.1f} MB"


def build(objective: Objective, source: Source, batch_size: int, amp: Any) -> TeacherCache:
    """The teacher targets of every view of ``source``, computed in eval mode, ``batch_size`` views at a time."""
    device = next(objective.student.parameters()).device
    parts: dict[str, list[Tensor]] = {}
    with torch.no_grad(), amp():  # no_grad, not inference_mode: GradientAT's targets take a gradient
        for x, y in source.all_views(batch_size):
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            for k, v in objective.method.teacher_targets(objective, x, y).items():
                parts.setdefault(k, []).append(v.detach())
    return TeacherCache({k: torch.cat(v) for k, v in parts.items()})


def prepare(objective: Objective, source: Source, recipe: Any, amp: Any) -> tuple[TeacherCache | None, dict[str, Any]]:
    """The run's cache, or None for the live teacher, and the record of which path it took (metrics.json)."""
    if objective.teacher is None or not objective.method.needs_teacher:
        return None, {"path": "none"}
    use, why = plan(objective, source, recipe.teacher_cache, recipe.teacher_cache_mb, amp)
    if not use:
        return None, {"path": "live", "reason": why}
    t0 = time.perf_counter()
    cache = build(objective, source, recipe.batch_size, amp)
    return cache, {"path": "cached", "inputs": int(next(iter(cache.targets.values())).shape[0]),
                   "megabytes": round(cache.bytes / 2**20, 2), "seconds": round(time.perf_counter() - t0, 3)}
