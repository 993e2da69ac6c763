"""``results/<name>/report.md``: every table, a verdict per row computed from its CSV, and the figures.

The verdicts read only the long-form table CSVs that ``atlib tables`` writes, so the report says
exactly what the tables say; the figures are linked relative to the report, so the folder can be
moved or browsed on a forge as it is.
"""

from __future__ import annotations

import argparse
import os
from itertools import combinations
from pathlib import Path

import pandas as pd

from .engine import atomic_write_bytes
from .plan import Plan, planned_figures

BASELINES = ("student", "no AT")  # the column that holds the student trained alone
AT_COLUMN = "at"


def _finished(cells: pd.DataFrame) -> dict[str, pd.Series]:
    """Column -> its line, for the cells with at least one finished run."""
    return {c["column"]: c for _, c in cells.iterrows() if c["n"] > 0 and pd.notna(c["median"])}


def at_verdict(cells: pd.DataFrame) -> str | None:
    """Whether AT beats the baseline student by more than the seed spread (None: no such pair of cells)."""
    got = _finished(cells)
    base = next((got[b] for b in BASELINES if b in got), None)
    at = got.get(AT_COLUMN)
    if base is None or at is None:
        return None
    gain = float(base["median"]) - float(at["median"])
    if min(base["n"], at["n"]) < 2:
        word = "beats" if gain > 0 else "does not beat"
        return f"AT {word} the baseline ({gain:+.2f} points; a single seed, so no spread to compare with)"
    # the spread of a cell is its min-max range over seeds; the wider of the two is the bar to clear
    spread = max(float(base["max"]) - float(base["min"]), float(at["max"]) - float(at["min"]))
    if gain > spread:
        return f"AT beats the baseline by {gain:.2f} points, more than the seed spread ({spread:.2f})"
    if gain > 0:
        return (f"AT is {gain:.2f} points better than the baseline, within the seed spread ({spread:.2f}): "
                "not conclusive")
    return f"AT does not beat the baseline ({-gain:.2f} points worse; seed spread {spread:.2f})"


def ordering_verdict(cells: pd.DataFrame) -> str | None:
    """Our ordering of the columns (best first) against the paper's, over the columns that have both numbers."""
    got = {k: c for k, c in _finished(cells).items() if pd.notna(c["paper"])}
    if len(got) < 2:
        return None
    ours = sorted(got, key=lambda k: float(got[k]["median"]))
    paper = sorted(got, key=lambda k: float(got[k]["paper"]))
    if ours == paper:
        return f"ordering {' < '.join(ours)}, the same as the paper's"
    pairs = list(combinations(got, 2))
    agree = sum((float(got[a]["median"]) - float(got[b]["median"])) * (float(got[a]["paper"]) - float(got[b]["paper"]))
                > 0 for a, b in pairs)
    return f"ordering {' < '.join(ours)}; the paper's is {' < '.join(paper)} ({agree}/{len(pairs)} pairs agree)"


def row_verdict(cells: pd.DataFrame) -> str:
    """One line for one (row, metric) of a table CSV."""
    if not _finished(cells):
        return "no finished runs yet"
    parts = [v for v in (at_verdict(cells), ordering_verdict(cells)) if v]
    if not parts:
        got = _finished(cells)
        best = min(got, key=lambda k: float(got[k]["median"]))
        parts.append(f"best column {best} ({float(got[best]['median']):.2f}%)")
    return "; ".join(parts)


def table_verdicts(csv: pd.DataFrame) -> list[str]:
    """A Markdown bullet per (row, metric) of one table's long CSV, in the table's order."""
    lines = []
    metrics = list(dict.fromkeys(csv["metric"]))
    for row in dict.fromkeys(csv["row"]):
        for metric in metrics:
            cells = csv[(csv["row"] == row) & (csv["metric"] == metric)]
            tag = f" ({metric})" if len(metrics) > 1 else ""
            lines.append(f"- **{row}**{tag}: {row_verdict(cells)}.")
    return lines


def _link(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def report_text(plan: Plan, tables_dir: Path, figures_dir: Path, out_dir: Path) -> str:
    figures = planned_figures(plan, figures_dir)
    parts = [f"# {plan.name}: Paying More Attention to Attention, reproduced\n",
             "Test error (%), lower is better. Verdicts are computed from the table CSVs; "
             "the seed spread is a cell's min-max range.\n"]
    for table, layout in plan.tables.items():
        md, csv = tables_dir / f"{table}.md", tables_dir / f"{table}.csv"
        parts.append(md.read_text().rstrip() + "\n" if md.is_file()
                     else f"## {layout['title']}\n\n*{md} not written yet.*\n")
        if csv.is_file():
            parts.append("**Verdict**\n\n" + "\n".join(table_verdicts(pd.read_csv(csv))) + "\n")
        for f in (f for f in figures if f.table == table):
            caption = {"attention": f"Attention maps, {f.row}", "curves": f"Training curves, {f.row}",
                       "errors": f"{layout['title']}: every seed against the paper"}[f.kind]
            link = _link(f.path, out_dir)
            parts.append(f"![{caption}]({link})\n" if f.path.is_file() else f"*{caption}: {link} not rendered.*\n")
    return "\n".join(parts)


def write_report(plan: Plan, tables_dir: Path | str, figures_dir: Path | str, out_path: Path | str) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = report_text(plan, Path(tables_dir), Path(figures_dir), out.parent)
    atomic_write_bytes(out, lambda f: f.write(text.encode()))
    return out


def cmd_report(args: argparse.Namespace) -> int:
    """``atlib report CONFIG [--out FILE]``: results/<name>/report.md from its tables/ and figures/."""
    from .cli import load_plan

    plan = load_plan(args.config)
    base = Path(f"{plan.results}/{plan.name}")
    out = write_report(plan, base / "tables", base / "figures", Path(getattr(args, "out", None) or base / "report.md"))
    print(f"Report: {out}")
    return 0


__all__ = ["cmd_report", "row_verdict", "table_verdicts", "write_report"]
