"""Figures in the style of the paper, drawn from the pipeline's own runs.

- attention maps (Figure 6): per test image, the F^2_sum map of every group of the teacher, the
  baseline student and the AT student, each with its predicted class;
- training curves (Figure 7): test (solid) and training (dashed) error against epoch per method,
  median over seeds with a min-max band;
- per table, every seed's error as a dot, our median, and the paper's number;
- where rows give their students N images per class, each method's gain over the student against N.

The drawing of attention grids and the figure plumbing (Agg canvas, exact pixel sizes) live in
``atlib.maps``, which the training loop uses too.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from .data import Source, load
from .errors import ConfigError
from .maps import HEADER, MIN_COLUMNS, PANEL, attention_grid, network_maps, new_figure, save, suptitle
from .models import load_run_model
from .paper import paper_value
from .plan import Plan, gain_points, planned_figures
from .rundir import finished
from .runkey import RunKey
from .spec import DataConfig, DataError
from .stats import paired
from .tables import METRIC_FIELD

CURVES_SIZE = (6.0, 4.0)
DOTS_PANEL = (4.0, 3.0)
DOTS_PER_LINE = 3  # table rows per line of the dots figure
ATTENTION_NETWORKS = (("teacher", "teacher"), ("student", "student"), ("at", "AT"))  # (column, panel label)
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "fashion-mnist": ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "boot"),
}


def class_name(dataset: str, index: int) -> str:
    names = CLASS_NAMES.get(dataset, ())
    return names[index] if 0 <= index < len(names) else str(index)


# --- runs of a row ----------------------------------------------------------------------------

def _seed_of(run_id: str) -> int:
    return RunKey.parse(run_id).seed


def row_runs(plan: Plan, table: str, row: str, seed: int) -> dict[str, str | None]:
    """Column -> the run id of seed ``seed`` in that cell of the row (None where the cell has none)."""
    out: dict[str, str | None] = {}
    for cell in plan.cells:
        if cell.table == table and cell.row == row:
            out[cell.column] = next((r for r in cell.runs if _seed_of(r) == seed), None)
    if out.get("at") in plan.teacher_of:
        # the teacher the AT student actually learnt from: with a fixed teacher_seed its seed differs
        out["teacher"] = plan.teacher_of[out["at"]]
    return out


def row_cells(plan: Plan, table: str, row: str) -> dict[str, list[str]]:
    """Column -> every run id of that cell of the row."""
    return {c.column: c.runs for c in plan.cells if c.table == table and c.row == row}


def fixed_test_images(source: Source, n: int) -> tuple[Tensor, Tensor]:
    """The first test image of each class in test order, then the next ones: the same images every time."""
    x, y = next(iter(source.test_batches(max(n, 10 * n))))
    first: list[int] = []
    seen: set[int] = set()
    for i, label in enumerate(y.tolist()):
        if label not in seen:
            seen.add(label)
            first.append(i)
    chosen = (first + [i for i in range(len(y)) if i not in first])[:n]
    index = torch.tensor(sorted(chosen))
    return x[index], y[index]


def build_attention_figure(plan: Plan, table: str, row: str, images: int = 4, seed: int = 0) -> Figure:
    """The Figure-6 grid of a row; missing runs (or data) are left out and named in the title."""
    runs = row_runs(plan, table, row, seed)
    any_run = next((r for rs in row_cells(plan, table, row).values() for r in rs), None)
    if any_run is None:
        raise ValueError(f"table {table!r} has no row {row!r}")
    dataset = plan.runs[any_run]["dataset"]
    title = f"{plan.tables[table]['title']} · {row} · seed {seed}: F²_sum attention"
    try:
        source = load(DataConfig.from_config(dataset))
    except (DataError, ConfigError, OSError) as e:
        fig = new_figure(PANEL * MIN_COLUMNS, PANEL + HEADER)
        suptitle(fig, f"{title}\nno test images: {e}", fontsize=8)
        return fig
    x, y = fixed_test_images(source, images)
    name = dataset["name"]
    maps: dict[str, dict[int, Tensor]] = {}
    labels: dict[str, list[str]] = {}
    missing = []
    for column, label in ATTENTION_NETWORKS:
        run = runs.get(column)
        try:
            if run is None:
                raise FileNotFoundError(f"no {column} run of seed {seed}")
            model, _ = load_run_model(plan.run_dir(run))
        except (OSError, ValueError, KeyError, RuntimeError):
            missing.append(label)  # a missing or unreadable run is a note, never a crash
            continue
        pred, maps[label] = network_maps(model, x)
        labels[label] = [class_name(name, int(p)) for p in pred]
    if missing:
        title += f"\nmissing: {', '.join(missing)}"
    return attention_grid(x, maps, labels, [class_name(name, int(t)) for t in y], title)


def attention_figure(plan: Plan, table: str, row: str, out_path: Path | str, images: int = 4, seed: int = 0) -> Path:
    return save(build_attention_figure(plan, table, row, images, seed), out_path)


# --- training curves --------------------------------------------------------------------------

def histories(plan: Plan, runs: Sequence[str]) -> pd.DataFrame:
    """One line per (finished run, epoch): run, epoch, test_error, train_error."""
    rows = []
    for run in runs:
        m = finished(plan.run_dir(run))
        for h in (m or {}).get("history") or []:
            rows.append({"run": run, "epoch": h["epoch"], "test_error": h.get("test_error", np.nan),
                         "train_error": h["train_error"]})
    return pd.DataFrame(rows, columns=["run", "epoch", "test_error", "train_error"])


def final_errors(plan: Plan, runs: Sequence[str], metric: str = "top1") -> list[float]:
    """The final test errors of the finished runs among ``runs``."""
    values = []
    for run in runs:
        m = finished(plan.run_dir(run))
        if m is not None and m.get(METRIC_FIELD[metric]) is not None:
            values.append(float(m[METRIC_FIELD[metric]]))
    return values


def column_colour(plan: Plan, table: str, column: str) -> str:
    """The same colour for a column in every figure of a table."""
    return f"C{plan.tables[table]['columns'].index(column) % 10}"


def build_curves_figure(plan: Plan, table: str, row: str) -> Figure:
    """Figure-7 style: test (solid) and training (dashed) error per epoch, median over seeds, min-max band."""
    fig = new_figure(*CURVES_SIZE)
    ax = fig.subplots()
    cells = row_cells(plan, table, row)
    drawn = 0
    for column, runs in cells.items():
        if column == "teacher":
            continue
        h = histories(plan, runs)
        if h.empty:
            continue
        colour = column_colour(plan, table, column)
        n = h.run.nunique()
        for key, style in (("test_error", "-"), ("train_error", "--")):
            # a recipe with eval_every > 1 tests only some epochs: draw the line through those
            stats = h.dropna(subset=[key]).groupby("epoch")[key].agg(["median", "min", "max"])
            kind = key.split("_")[0]
            line, = ax.plot(stats.index, stats["median"], style, color=colour,
                            label=f"{column} {kind} (n={n})" if kind == "test" else None)
            line.set_gid(f"{column}/{kind}")
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colour,
                            alpha=0.2 if kind == "test" else 0.1, linewidth=0)
        drawn += 1
    teacher = final_errors(plan, cells.get("teacher", []))
    if teacher:
        line = ax.axhline(float(np.median(teacher)), color="grey", linestyle=":",
                          label=f"teacher final test (n={len(teacher)})")
        line.set_gid("teacher/final")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("error (%)")
    # wrapped to the axes' width (~0.55 em per character at 9 pt): a long table title would be cut off
    title = textwrap.fill(f"{plan.tables[table]['title']} · {row}", int(CURVES_SIZE[0] * 130 / 9))
    ax.set_title(f"{title}\ntest (solid) and train (dashed), median and min-max", fontsize=9)
    if drawn or teacher:
        handles, texts = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="black", linestyle="--"))
        texts.append("train error")
        ax.legend(handles, texts, fontsize=7)
    else:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
    return fig


def curves_figure(plan: Plan, table: str, row: str, out_path: Path | str) -> Path:
    return save(build_curves_figure(plan, table, row), out_path)


# --- every seed against the paper -------------------------------------------------------------

def _jitter(k: int, width: float = 0.3) -> np.ndarray:
    """Evenly spread horizontal offsets: deterministic, so a figure rebuilt from the same runs is identical."""
    return np.zeros(1) if k == 1 else np.linspace(-width / 2, width / 2, k)


def build_dots_figure(plan: Plan, table: str) -> Figure:
    """One panel per (row, metric): every seed as a dot, our median as a bar, the paper's number as a diamond
    (filled when confirmed from a readable copy, hollow when not)."""
    layout = plan.tables[table]
    panels = [(row, paper_row, metric) for row, paper_row in zip(layout["rows"], layout["paper_rows"], strict=True)
              for metric in layout["metrics"]]
    per_line = min(DOTS_PER_LINE, len(panels))
    lines = math.ceil(len(panels) / per_line)
    fig = new_figure(DOTS_PANEL[0] * per_line, DOTS_PANEL[1] * lines + HEADER)
    axes = fig.subplots(lines, per_line, squeeze=False)
    for ax, (row, paper_row, metric) in zip(axes.flat, panels, strict=False):
        cells = row_cells(plan, table, row)
        for x, column in enumerate(layout["columns"]):
            colour = column_colour(plan, table, column)
            values = final_errors(plan, cells.get(column, []), metric)
            if values:
                dots = ax.scatter(x + _jitter(len(values)), values, s=14, color=colour, alpha=0.8, zorder=3)
                dots.set_gid(f"{column}/runs")
                bar, = ax.plot([x - 0.3, x + 0.3], [float(np.median(values))] * 2, color="black", linewidth=1.5)
                bar.set_gid(f"{column}/median")
            paper = paper_value(layout["paper"], paper_row, column, metric)
            if paper is not None and paper.value is not None:
                mark, = ax.plot([x], [paper.value], "D", markersize=7, markeredgecolor="red",
                                markerfacecolor="red" if paper.confirmed else "none", zorder=4)
                mark.set_gid(f"{column}/paper")
        ax.set_xticks(range(len(layout["columns"])), layout["columns"], rotation=30, fontsize=8)
        ax.set_xlim(-0.6, len(layout["columns"]) - 0.4)
        ax.set_ylabel(f"test error (%) {metric}", fontsize=8)
        ax.set_title(row, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    legend = [Line2D([], [], marker="o", linestyle="", color="grey", label="one seed"),
              Line2D([], [], color="black", linewidth=1.5, label="our median"),
              Line2D([], [], marker="D", linestyle="", color="red", label="paper"),
              Line2D([], [], marker="D", linestyle="", markeredgecolor="red", markerfacecolor="none",
                     label="paper (unconfirmed)")]
    axes.flat[0].legend(handles=legend, fontsize=7)
    suptitle(fig, f"{layout['title']}\nevery seed, our median and the paper")
    return fig


def dots_figure(plan: Plan, table: str, out_path: Path | str) -> Path:
    return save(build_dots_figure(plan, table), out_path)


# --- each method's gain over the student against the student's data ------------------------------

GAINS_SIZE = (6.0, 4.0)


def seed_errors(plan: Plan, runs: Sequence[str], metric: str = "top1") -> dict[int, float]:
    """Seed -> final test error of the finished runs among ``runs``."""
    out = {}
    for run in runs:
        m = finished(plan.run_dir(run))
        if m is not None and m.get(METRIC_FIELD[metric]) is not None:
            out[_seed_of(run)] = float(m[METRIC_FIELD[metric]])
    return out


def gains(plan: Plan) -> pd.DataFrame:
    """One line per (method column, images per class): the paired gains d_s = error(student) - error(method),
    their median and mean with the two-sided 95% Student-t interval of the mean (``atlib.stats``)."""
    lines = []
    for per_class, table, row in gain_points(plan):
        cells = row_cells(plan, table, row)
        student = seed_errors(plan, cells.get("student", []))
        for column in plan.tables[table]["columns"]:
            if column in ("student", "teacher"):
                continue
            p = paired(student, seed_errors(plan, cells.get(column, [])))
            if p.n:
                low, high = p.interval or (math.nan, math.nan)
                lines.append({"column": column, "per_class": per_class, "n": p.n, "median": float(np.median(p.d)),
                              "mean": p.mean, "low": low, "high": high})
    return pd.DataFrame(lines, columns=["column", "per_class", "n", "median", "mean", "low", "high"])


def _span(n: pd.Series) -> str:
    """The pairs per point: "5", or "3-5" where budgets differ."""
    low, high = int(n.min()), int(n.max())
    return str(low) if low == high else f"{low}-{high}"


def build_gains_figure(plan: Plan) -> Figure:
    """Each method's gain over the student (points, positive: the method's error is lower) against the
    student's images per class: the median over seeds as a marker, the paired 95% interval of the mean as a bar."""
    fig = new_figure(*GAINS_SIZE)
    ax = fig.subplots()
    data = gains(plan)
    columns = list(dict.fromkeys(data["column"]))
    for k, column in enumerate(columns):
        d = data[data["column"] == column].sort_values("per_class")
        x = d["per_class"].to_numpy(float) * (1 + 0.04 * (k - (len(columns) - 1) / 2))  # side by side on a log axis
        bars = ax.errorbar(x, d["median"], yerr=[d["mean"] - d["low"], d["high"] - d["mean"]], fmt="o-",
                           capsize=3, color=f"C{k % 10}", label=f"{column} (n={_span(d['n'])})")
        bars.lines[0].set_gid(f"{column}/median")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ticks = sorted(set(data["per_class"]))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("student's training images per class")
    ax.set_ylabel("gain over the student (points)")
    ax.grid(alpha=0.3)
    if columns:
        ax.legend(fontsize=8)
    suptitle(fig, f"{plan.name}: each method's gain over the student\nmedian over seeds, paired 95% interval "
                  f"of the mean")
    return fig


def gains_figure(plan: Plan, out_path: Path | str) -> Path:
    return save(build_gains_figure(plan), out_path)


# --- every figure of a plan -------------------------------------------------------------------

def first_seed(plan: Plan, table: str, row: str) -> int:
    """The seed the attention figure shows: the first of the row's AT cell."""
    runs = row_cells(plan, table, row).get("at") or [r for rs in row_cells(plan, table, row).values() for r in rs]
    return _seed_of(runs[0]) if runs else 0


def write_figures(plan: Plan, out_dir: Path | str) -> list[Path]:
    written = []
    for f in planned_figures(plan, out_dir):
        if f.kind == "attention":
            assert f.row is not None
            written.append(attention_figure(plan, f.table, f.row, f.path, seed=first_seed(plan, f.table, f.row)))
        elif f.kind == "curves":
            assert f.row is not None
            written.append(curves_figure(plan, f.table, f.row, f.path))
        elif f.kind == "gains":
            written.append(gains_figure(plan, f.path))
        else:
            written.append(dots_figure(plan, f.table, f.path))
    return written


__all__ = ["attention_figure", "curves_figure", "dots_figure", "gains", "gains_figure", "write_figures"]
