"""Drawing attention maps: the grid of Figure 6, for the report's figures and the maps a training run
logs to MLflow. Depends on atlib.attention and matplotlib only, so the training loop can draw maps
without importing the report's plan-driven figures.

Only the object-oriented matplotlib API with the Agg canvas is used (never pyplot): no display is
needed, and a caller that renders many figures (e.g. the training loop logging attention maps to
MLflow every epoch) leaks no global figure state. Sizes are binary fractions of an inch at 100 dpi,
so a figure's pixel size is exactly ``figsize * DPI`` (matplotlib truncates fractional pixels).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from .attention import fp32, resize_to, spatial_map

DPI = 100
PANEL = 1.5  # inches per attention panel
HEADER = 0.5  # inches above the grid for the figure title
MIN_COLUMNS = 4  # an attention figure is at least this many panels wide, so its title stays readable
HEATMAP = "jet"  # the paper's Figure 6 colouring


# --- figure plumbing --------------------------------------------------------------------------

def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas; constrained layout keeps titles inside without changing the size."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out_path: Path | str) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # no bbox_inches="tight": the pixel size must stay figsize * DPI, which the tests and the report rely on
    fig.savefig(out, dpi=DPI, format="png")
    return out


def rgba(fig: Figure) -> np.ndarray:
    """The figure's pixels, (height, width, 4) uint8, as ``save`` would write them."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def suptitle(fig: Figure, text: str, fontsize: float = 9) -> None:
    """A figure title wrapped to the figure's width: a narrow figure would otherwise cut it off."""
    chars = max(20, int(fig.get_figwidth() * 130 / fontsize))  # ~0.55 em per character
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in text.splitlines()), fontsize=fontsize)


# --- attention maps ---------------------------------------------------------------------------

def network_maps(model: nn.Module, x: Tensor, groups: Sequence[int] | None = None) -> tuple[Tensor, dict[int, Tensor]]:
    """(predicted classes, {group: F^2_sum map upsampled to the input size}) on the CPU.

    The model is put in eval mode (BatchNorm running statistics, as at test time) and restored to
    its previous mode afterwards, so the training loop can call this mid-epoch.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits, acts = model(x)
            chosen = range(len(acts)) if groups is None else groups
            size = (int(x.shape[-2]), int(x.shape[-1]))
            maps = {g: resize_to(spatial_map(fp32(acts[g]), "sum", 2.0), size).float().cpu() for g in chosen}
            return logits.argmax(1).cpu(), maps
    finally:
        model.train(was_training)


def _display_image(image: Tensor) -> tuple[np.ndarray, str | None]:
    """A normalised (C, H, W) image stretched to [0, 1] for display, and the colour map it needs."""
    img = image.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)
    if img.shape[0] == 1:
        return img[0].numpy(), "gray"
    return img[:3].permute(1, 2, 0).numpy(), None


def attention_grid(images: Tensor, maps_by_network: Mapping[str, Mapping[int, Tensor]],
                   labels: Mapping[str, Sequence[str]], truth: Sequence[str] | None = None,
                   title: str = "") -> Figure:
    """One row per image: the input, then every group's heat map of each network in order.

    ``maps_by_network``: network name -> {group index: (B, H, W) maps at the input size}.
    ``labels``: network name -> predicted class text per image (shown above each of its panels,
    green when it equals ``truth``, red otherwise).
    """
    n = len(images)
    panels = [(net, g) for net, maps in maps_by_network.items() for g in maps]
    fig = new_figure(PANEL * max(1 + len(panels), MIN_COLUMNS), PANEL * n + HEADER)
    axes = fig.subplots(n, 1 + len(panels), squeeze=False)
    for i in range(n):
        img, cmap = _display_image(images[i])
        ax = axes[i, 0]
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(("input\n" if i == 0 else "") + (f"label: {truth[i]}" if truth else ""), fontsize=7)
        for j, (net, g) in enumerate(panels, start=1):
            ax = axes[i, j]
            heat = maps_by_network[net][g][i].numpy()
            # per-panel colour scale, as in the paper: maps of different networks differ in magnitude
            ax.imshow(heat, cmap=HEATMAP, interpolation="bilinear")
            ax.set_gid(f"{net}/g{g}/{i}")
            pred = labels[net][i]
            colour = "black" if not truth else ("green" if pred == truth[i] else "red")
            ax.set_title(("" if i else f"{net} g{g}\n") + f"pred: {pred}", fontsize=7, color=colour)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        suptitle(fig, title)
    return fig


def snapshot_figure(student: nn.Module, teacher: nn.Module | None, x: Tensor, groups: Sequence[int] | None = None,
                    y: Tensor | None = None) -> Figure:
    """The attention grid of a fixed batch ``x`` for a student and (optionally) its teacher."""
    networks = {"teacher": teacher, "student": student}
    maps: dict[str, dict[int, Tensor]] = {}
    labels: dict[str, list[str]] = {}
    for name, model in networks.items():
        if model is None:
            continue
        pred, maps[name] = network_maps(model, x, groups)
        labels[name] = [str(int(p)) for p in pred]
    truth = [str(int(t)) for t in y] if y is not None else None
    return attention_grid(x, maps, labels, truth, title="F²_sum attention maps")


def attention_snapshot(student: nn.Module, teacher: nn.Module | None, x: Tensor, groups: Sequence[int] | None = None,
                       *, y: Tensor | None = None) -> np.ndarray:
    """The pixels of :func:`snapshot_figure`: what the training loop logs to MLflow on a fixed batch. Pixels,
    not PNG bytes: MLflow encodes the image once, where PNG bytes were encoded here and decoded there
    (WRN-16-1/16-2, 8 images: 1.03-1.07 s instead of 1.31-1.52 s per snapshot, pixel-identical, 2026-11-26)."""
    return rgba(snapshot_figure(student, teacher, x, groups, y))
