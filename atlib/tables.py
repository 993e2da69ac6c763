"""Aggregation of run metrics and the paper tables built from them.

``metrics.json`` files are the only input: tables are rebuilt from files, never from a database
that a concurrent writer could race.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .paper import paper_value
from .plan import Plan
from .rundir import finished

SUMMARY_COLUMNS = ["run_id", "dataset", "model", "method", "variant", "seed", "teacher_run",
                   "final_test_error", "final_test_error_top5", "best_test_error", "epochs",
                   "previous_test_error", "previous_test_error_top5", "previous_epoch",
                   "train_seconds", "startup_seconds", "images_per_second", "mlflow_run_id", "slurm_job_id"]
METRIC_FIELD = {"top1": "final_test_error", "top5": "final_test_error_top5"}
# the same error at the test before the last one: how much a run still learnt at its end
PREVIOUS_FIELD = {"top1": "previous_test_error", "top5": "previous_test_error_top5"}


def previous_test(history: list[dict]) -> dict:
    """The epoch and errors of the test before the last one in a run's history (empty with one test)."""
    tests = [h for h in history if h.get("test_error") is not None]
    if len(tests) < 2:
        return {}
    before = tests[-2]
    return {"previous_test_error": before["test_error"], "previous_test_error_top5": before.get("test_error_top5"),
            "previous_epoch": before.get("epoch")}


def aggregate(plan: Plan) -> pd.DataFrame:
    """One row per planned run that has finished (summary.csv)."""
    rows = []
    for run_id, spec in plan.runs.items():
        m = finished(plan.run_dir(run_id))
        if m is None:
            continue
        history = m.get("history") or [{}]
        rows.append({
            "run_id": run_id, "dataset": spec["dataset"]["name"], "model": m["model"], "method": m["method"],
            "variant": spec["tracking"]["tags"]["variant"], "seed": m["seed"],
            "teacher_run": plan.teacher_of.get(run_id, ""),
            "final_test_error": m["final_test_error"], "final_test_error_top5": m.get("final_test_error_top5"),
            "best_test_error": m.get("best_test_error"), "epochs": m.get("epochs"),
            "train_seconds": m.get("train_seconds"), "startup_seconds": m.get("startup_seconds"),
            "images_per_second": history[-1].get("images_per_second"),
            "mlflow_run_id": m.get("mlflow_run_id"), "slurm_job_id": (m.get("environment") or {}).get("slurm_job_id"),
            **previous_test(m.get("history") or []),
            **({"final_validation_error": m["final_validation_error"]} if "final_validation_error" in m else {}),
        })
    # a config with a validation split has its column; the others' summaries keep their columns
    held = any("final_validation_error" in r for r in rows)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS + (["final_validation_error"] if held else []))


def cells(plan: Plan, summary: pd.DataFrame) -> pd.DataFrame:
    """Long table: one line per (table, row, column, metric) with our median, spread, n and the paper.

    ``seeds`` and ``values`` list each finished run's seed and error, aligned, in the table's seed
    order, so that a report can pair seed s of one column with seed s of another; ``previous`` lists,
    aligned too, each run's error at its test before the last (``nan`` where it had one test), which
    ``previous_epoch`` and ``epochs`` place in its schedule, so that a report can tell a run still learning.
    """
    by_run = summary.set_index("run_id")
    out = []
    for cell in plan.cells:
        layout = plan.tables[cell.table]
        paper_row = layout["paper_rows"][layout["rows"].index(cell.row)]
        for metric in layout["metrics"]:
            done = [r for r in cell.runs if r in by_run.index and pd.notna(by_run.at[r, METRIC_FIELD[metric]])]
            seeds = [int(by_run.at[r, "seed"]) for r in done]
            values = [float(by_run.at[r, METRIC_FIELD[metric]]) for r in done]
            field = PREVIOUS_FIELD[metric]
            previous = [float(by_run.at[r, field]) if field in by_run and pd.notna(by_run.at[r, field]) else math.nan
                        for r in done]
            # every run of a cell follows one recipe, so any run that has the value places it for all
            at = {k: next((by_run.at[r, k] for r in done if pd.notna(by_run.at[r, k])), None) if k in by_run else None
                  for k in ("previous_epoch", "epochs")}
            s = pd.Series(values, dtype=float)
            paper = paper_value(layout["paper"], paper_row, cell.column, metric)
            median = float(s.median()) if values else None
            diff = median - paper.value if values and paper is not None and paper.value is not None else None
            out.append({
                "table": cell.table, "row": cell.row, "column": cell.column, "metric": metric,
                "median": median, "n": len(values), "planned": len(cell.runs),
                "min": float(s.min()) if values else None, "max": float(s.max()) if values else None,
                "paper": paper.value if paper else None, "paper_text": paper.show() if paper else "",
                "paper_confirmed": paper.confirmed if paper else None, "diff": diff,
                "runs": " ".join(cell.runs),
                "seeds": " ".join(map(str, seeds)), "values": " ".join(map(str, values)),
                "previous": " ".join(map(str, previous)),
                "previous_epoch": None if at["previous_epoch"] is None else int(at["previous_epoch"]),
                "epochs": None if at["epochs"] is None else int(at["epochs"]),
            })
    return pd.DataFrame(out)


def cell_tags(plan: Plan, summary: pd.DataFrame) -> dict[str, dict[str, str]]:
    """MLflow run id -> {"table.<table>": "<row> / <column>; ..."}: every cell each finished run fills."""
    mlflow_ids = summary.set_index("run_id")["mlflow_run_id"].dropna().to_dict()
    tags: dict[str, dict[str, list[str]]] = {}
    for cell in plan.cells:
        for run in cell.runs:
            if run in mlflow_ids:
                tags.setdefault(mlflow_ids[run], {}).setdefault(f"table.{cell.table}", []).append(
                    f"{cell.row} / {cell.column}")
    return {rid: {k: "; ".join(v) for k, v in t.items()} for rid, t in tags.items()}


def _ours(c: pd.Series) -> str:
    if c["n"] == 0:
        return "–"
    spread = f" [{c['min']:.2f}–{c['max']:.2f}]" if c["n"] > 1 else ""
    missing = f"/{c['planned']}" if c["n"] < c["planned"] else ""
    return f"{c['median']:.2f}{spread} n={c['n']}{missing}"


def wide(long: pd.DataFrame, plan: Plan, table: str) -> list[list[str]]:
    """Rows of the Markdown table: per paper row, one line of ours, one of the paper, one of the difference."""
    layout = plan.tables[table]
    sub = long[long.table == table]
    lines = []
    for row in layout["rows"]:
        for metric in layout["metrics"]:
            tag = "" if len(layout["metrics"]) == 1 else f" {metric}"
            got = {c["column"]: c for _, c in sub[(sub.row == row) & (sub.metric == metric)].iterrows()}
            lines.append([f"{row}{tag}", "ours"] + [_ours(got[c]) for c in layout["columns"]])
            if layout["paper"]:
                lines.append(["", "paper"] + [got[c]["paper_text"] or "–" for c in layout["columns"]])
                lines.append(["", "Δ"] + [f"{got[c]['diff']:+.2f}" if pd.notna(got[c]["diff"]) else "–"
                                          for c in layout["columns"]])
    return lines


def legend(lines: list[list[str]]) -> str:
    """What the table's cells mean: the median always, each mark only where a cell of ``lines`` carries it."""
    kinds = {kind: [cell for line in lines if line[1] == kind for cell in line[2:]] for kind in ("ours", "paper")}
    parts = ["Test error (%): median over seeds [min–max] and the number of runs"]
    if any(re.search(r"n=\d+/\d+$", cell) for cell in kinds["ours"]):
        parts.append("n=k/N: k of the N planned runs finished")
    if "–" in kinds["ours"]:
        parts.append("– in ours: no run of the cell finished yet")
    if "–" in kinds["paper"]:
        parts.append("– in paper: the paper gives no number for the cell")
    text = "; ".join(parts) + "."
    if any("†" in cell for cell in kinds["paper"]):
        text += " † marks a paper number not confirmed from a readable copy."
    return text


def write_tables(plan: Plan, summary: pd.DataFrame, out_dir: Path) -> dict[str, str]:
    """Write ``<table>.md`` and ``<table>.csv`` per table; returns the Markdown text of each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    long = cells(plan, summary)
    texts = {}
    for table, layout in plan.tables.items():
        headers = ["row", ""] + layout["columns"]
        lines = wide(long, plan, table)
        body = tabulate(lines, headers=headers, tablefmt="github")
        text = f"## {layout['title']}\n\n{body}\n\n{legend(lines)}\n"
        (out_dir / f"{table}.md").write_text(text)
        long[long.table == table].to_csv(out_dir / f"{table}.csv", index=False)
        texts[table] = text
    return texts
