"""Attention maps and the attention-transfer loss (paper section 3.1).

A map is computed from a group's raw activation ``A`` of shape (B, C, H, W):

    F_sum(A)    = sum_c |A_c|
    F^p_sum(A)  = sum_c |A_c|^p
    F^p_max(A)  = max_c |A_c|^p

The channel sum is taken as a channel mean: after the per-sample normalisation
the two are identical, and the mean stays in range under bf16.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

MappingName = Literal["sum", "max"]
NormName = Literal["l2", "l1"]
Form = Literal["code", "paper"]
MAPPINGS, FORMS = get_args(MappingName), get_args(Form)  # the methods' parameter checks name the same (a test)


def _abs_pow(a: Tensor, p: float) -> Tensor:
    # |a|^2 is a*a: skipping abs and the general pow halves the elementwise passes (and their backward)
    # over the whole activation, which made an AT step ~20% dearer than a KD step on CPU.
    return a * a if p == 2 else a.abs().pow(p)


def f_sum(a: Tensor, p: float = 1.0) -> Tensor:
    """F^p_sum: (B, C, H, W) -> (B, H, W)."""
    return _abs_pow(a, p).mean(1)


def f_max(a: Tensor, p: float = 1.0) -> Tensor:
    """F^p_max: (B, C, H, W) -> (B, H, W)."""
    return _abs_pow(a, p).amax(1)


def spatial_map(a: Tensor, mapping: MappingName = "sum", p: float = 2.0) -> Tensor:
    """The unnormalised attention map of ``a``: (B, H, W)."""
    if mapping == "sum":
        return f_sum(a, p)
    if mapping == "max":
        return f_max(a, p)
    raise ValueError(f"unknown attention mapping {mapping!r}; expected one of {MAPPINGS}")


def normalize(q: Tensor, norm: NormName = "l2") -> Tensor:
    """Flatten each sample's map and divide it by its l2 (or l1) norm: (B, ...) -> (B, N)."""
    return F.normalize(q.flatten(1), p=2.0 if norm == "l2" else 1.0, dim=1)


def resize_to(q: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, H, W) maps to ``size``."""
    if tuple(q.shape[-2:]) == tuple(size):
        return q
    return F.interpolate(q.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def fp32(a: Tensor) -> Tensor:
    """Upcast bf16/fp16 activations so maps and norms are computed in at least float32."""
    return a if a.dtype in (torch.float32, torch.float64) else a.float()


def distance(d: Tensor, form: Form = "code") -> Tensor:
    """Distance between two batches of normalised vectors, given their difference ``d`` (B, N).

    ``code``  (authors' code): mean over batch and positions of d^2.
    ``paper`` (equation 2):   1/2 * sum_b ||d_b||_2, divided by batch * positions, which is the
                              paper's beta = 1e3 / (elements in attention map * batch size).
    """
    if form == "code":
        return d.pow(2).mean()
    if form == "paper":
        return 0.5 * d.flatten(1).norm(dim=1).sum() / d.numel()
    raise ValueError(f"unknown loss form {form!r}; expected one of {FORMS}")


def attention(
    a: Tensor, mapping: MappingName = "sum", p: float = 2.0, norm: NormName = "l2",
    size: tuple[int, int] | None = None,
) -> Tensor:
    """Q = normalize(F(A)), optionally resized to ``size`` first: (B, C, H, W) -> (B, H*W)."""
    q = spatial_map(fp32(a), mapping, p)
    return normalize(q if size is None else resize_to(q, size), norm)


def at_loss(
    s: Tensor, t: Tensor, mapping: MappingName = "sum", p: float = 2.0, norm: NormName = "l2",
    form: Form = "code", resize: bool = True,
) -> Tensor:
    """Attention-transfer loss between a student and a teacher activation of one group.

    Maps of different spatial size are brought to the larger of the two by bilinear
    interpolation when ``resize`` is set (no information of the finer map is thrown away);
    otherwise a size mismatch is an error.
    """
    return at_loss_to_map(s, spatial_map(fp32(t), mapping, p), mapping, p, norm, form, resize)


def at_loss_to_map(
    s: Tensor, qt: Tensor, mapping: MappingName = "sum", p: float = 2.0, norm: NormName = "l2",
    form: Form = "code", resize: bool = True,
) -> Tensor:
    """:func:`at_loss` given the teacher's unnormalised map ``qt`` = F(A_T) (B, H, W) instead of its activation: all
    that the loss reads of the teacher, so a run can compute it once per input (atlib.teacher_cache)."""
    hs, ht = tuple(s.shape[-2:]), tuple(qt.shape[-2:])
    size = None
    if hs != ht:
        if not resize:
            raise ValueError(f"student map {hs} and teacher map {ht} differ and resize is off")
        size = max(hs, ht, key=lambda hw: hw[0] * hw[1])
    qs = attention(s, mapping, p, norm, size)
    return distance(qs - normalize(qt if size is None else resize_to(qt, size), norm), form)
