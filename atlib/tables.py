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
from .stats import MEDIAN_MIN_N, median_interval

SUMMARY_COLUMNS = ["run_id", "dataset", "model", "method", "variant", "seed", "teacher_run",
                   "final_test_error", "final_test_error_top5", "best_test_error", "best_test_error_top5", "epochs",
                   "previous_test_error", "previous_test_error_top5", "previous_epoch",
                   "train_seconds", "startup_seconds", "images_per_second", "mlflow_run_id", "slurm_job_id"]
BEST = " best"  # a metric at a run's best epoch: "top1 best" (the recipe's ``reported: best``)
METRIC_FIELD = {"top1": "final_test_error", "top5": "final_test_error_top5",
                f"top1{BEST}": "best_test_error", f"top5{BEST}": "best_test_error_top5"}
# the same error at the test before the last one: how much a run still learnt at its end
PREVIOUS_FIELD = {"top1": "previous_test_error", "top5": "previous_test_error_top5"}


def shown_metrics(plan: Plan, table: str) -> list[str]:
    """The metrics a table shows: its configured ones at the last epoch, and, where a run of the table follows a
    recipe whose ``reported`` is ``best`` (the paper reported its best epoch), each one at the best epoch too."""
    metrics = list(plan.tables[table]["metrics"])
    runs = [r for c in plan.cells if c.table == table for r in c.runs]
    if any(plan.runs[r]["recipe"].get("reported") == "best" for r in runs):
        metrics += [f"{m}{BEST}" for m in metrics]
    return metrics


def agreement(paper: float | None, values: list[float]) -> dict[str, object]:
    """Whether the paper's number lies within our seeds' [min, max] (two seeds or more) and, with
    :data:`atlib.stats.MEDIAN_MIN_N` or more, within the order-statistic interval of the median; None where
    there is no paper number or too few seeds to judge."""
    judged = paper is not None and len(values) >= 2
    ci = median_interval(values) if paper is not None else None
    return {"in_range": (min(values) <= paper <= max(values)) if judged else None,
            "median_ci_low": ci[0] if ci else None, "median_ci_high": ci[1] if ci else None,
            "median_ci_level": ci[2] if ci else None,
            "in_median_ci": (ci[0] <= paper <= ci[1]) if ci else None}


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
            "best_test_error": m.get("best_test_error"), "best_test_error_top5": m.get("best_test_error_top5"),
            "epochs": m.get("epochs"),
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
        for metric in shown_metrics(plan, cell.table):
            field = METRIC_FIELD[metric]
            done = [r for r in cell.runs if r in by_run.index and field in by_run and pd.notna(by_run.at[r, field])]
            seeds = [int(by_run.at[r, "seed"]) for r in done]
            values = [float(by_run.at[r, field]) for r in done]
            field = PREVIOUS_FIELD.get(metric, "")  # a best epoch has no "test before it"
            previous = [float(by_run.at[r, field]) if field in by_run and pd.notna(by_run.at[r, field]) else math.nan
                        for r in done]
            # every run of a cell follows one recipe, so any run that has the value places it for all
            at = {k: next((by_run.at[r, k] for r in done if pd.notna(by_run.at[r, k])), None) if k in by_run else None
                  for k in ("previous_epoch", "epochs")}
            s = pd.Series(values, dtype=float)
            # the paper's number is one per metric, whichever epoch it came from
            paper = paper_value(layout["paper"], paper_row, cell.column, metric.removesuffix(BEST))
            median = float(s.median()) if values else None
            diff = median - paper.value if values and paper is not None and paper.value is not None else None
            out.append({
                "table": cell.table, "row": cell.row, "column": cell.column, "metric": metric,
                "median": median, "n": len(values), "planned": len(cell.runs),
                "min": float(s.min()) if values else None, "max": float(s.max()) if values else None,
                "paper": paper.value if paper else None, "paper_text": paper.show() if paper else "",
                "paper_confirmed": paper.confirmed if paper else None, "diff": diff,
                **agreement(paper.value if paper else None, values),
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


def known(c: pd.Series, key: str) -> bool | None:
    """A yes/no column of the long table, as written or as read back from its CSV (None: not judged)."""
    v = c.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v if isinstance(v, bool) else str(v) == "True"


def agrees(c: pd.Series) -> str:
    """The agreement marker of a cell: whether the paper's number lies in our [min, max], and, with five seeds or
    more, in the interval of our median; – where there is no paper number or fewer than two seeds."""
    in_range = known(c, "in_range")
    if in_range is None:
        return "–"
    text = f"range {'yes' if in_range else 'no'}"
    in_ci = known(c, "in_median_ci")
    if in_ci is not None:
        text += f", median CI {round(100 * float(c['median_ci_level']))}% {'yes' if in_ci else 'no'}"
    return text


AGREES = "paper in ours"  # the label of the agreement line


def wide(long: pd.DataFrame, plan: Plan, table: str) -> list[list[str]]:
    """Rows of the Markdown table: per paper row, one line of ours, one of the paper, one of the difference and
    one saying whether the paper's number lies within our seeds' spread (:func:`agrees`)."""
    layout = plan.tables[table]
    sub = long[long.table == table]
    metrics = shown_metrics(plan, table)
    lines = []
    for row in layout["rows"]:
        for metric in metrics:
            tag = "" if len(metrics) == 1 else f" {metric}"
            got = {c["column"]: c for _, c in sub[(sub.row == row) & (sub.metric == metric)].iterrows()}
            lines.append([f"{row}{tag}", "ours"] + [_ours(got[c]) for c in layout["columns"]])
            if layout["paper"]:
                lines.append(["", "paper"] + [got[c]["paper_text"] or "–" for c in layout["columns"]])
                lines.append(["", "Δ"] + [f"{got[c]['diff']:+.2f}" if pd.notna(got[c]["diff"]) else "–"
                                          for c in layout["columns"]])
                lines.append(["", AGREES] + [agrees(got[c]) for c in layout["columns"]])
    return lines


def legend(lines: list[list[str]]) -> str:
    """What the table's cells mean: the median always, each mark only where a cell of ``lines`` carries it."""
    kinds = {kind: [cell for line in lines if line[1] == kind for cell in line[2:]]
             for kind in ("ours", "paper", AGREES)}
    parts = ["Test error (%): median over seeds [min–max] and the number of runs"]
    if any(line[0].endswith(BEST) for line in lines):
        parts.append("a metric marked best is each run's error at its best epoch (lowest top-1, and the top-5 of "
                     "that epoch), as the paper reported; unmarked, at its last")
    if any(cell != "–" for cell in kinds[AGREES]):
        parts.append(f"{AGREES}: whether the paper's number lies within our seeds' [min, max] (range) and, with "
                     f"{MEDIAN_MIN_N} or more seeds, within the order-statistic confidence interval of our median "
                     "(median CI, its coverage in %; five seeds: [min, max] at 94%)")
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
