"""``results/<name>/report.md``: every table, a verdict per paper claim its columns can test, and the figures.

The verdicts read only the long-form table CSVs that ``atlib tables`` writes, so the report says
exactly what the tables say; a claim is judged by the seed-paired differences of its two columns
(``stats``). The figures are linked relative to the report, so the folder can be moved or browsed
on a forge as it is.
"""

from __future__ import annotations

import os
from itertools import combinations
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from tabulate import tabulate

from .plan import Plan, planned_figures
from .rundir import atomic_write_text
from .stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Paired, paired, verdict

TOO_SHORT = "too short to judge"
BASELINES = ("student", "no AT")  # the column that holds the student trained alone
TEACHER = "teacher"
NAMES = {"student": "the student", "teacher": "the teacher", "at": "AT", "kd": "KD", "at+kd": "AT+KD",
         "factt": "F-ActT", "grad-at": "gradient AT", "symmetry": "symmetry norm", "all": "AT in all groups",
         "group1": "AT in group1 only", "group2": "AT in group2 only", "group3": "AT in group3 only"}
MAPPINGS = ("F_sum", "F2_sum", "F4_sum", "F1_max")


class Claim(NamedTuple):
    """The paper's claim that column ``better`` has a lower error than column ``worse``."""

    better: str
    worse: str

    def __str__(self) -> str:
        return f"{NAMES.get(self.better, self.better)} beats {NAMES.get(self.worse, self.worse)}"


# The paper's claims, tested on every table that has both columns; the first one a row has is its headline.
CLAIMS = (
    # Table 1 (and Tables 3-5 for the columns they have)
    Claim("at", "student"), Claim("kd", "student"), Claim("at+kd", "at"), Claim("at+kd", "kd"),
    Claim("at", "factt"),  # full-activation transfer gains less than AT
    # Table 2: every mapping helps; F2_sum, the paper's best, beats the others
    *(Claim(m, "no AT") for m in MAPPINGS), *(Claim("F2_sum", m) for m in MAPPINGS if m != "F2_sum"),
    # the per-group ablation: "each loss provides some additional degree of attention transfer"
    *(Claim("all", g) for g in ("group1", "group2", "group3")),
    # Table 3: every gradient-based method helps; activation AT beats gradient AT
    Claim("min-l2", "student"), Claim("grad-at", "student"), Claim("symmetry", "student"), Claim("at", "grad-at"),
)
WORDS = (f"Each claim pairs seed s of its two columns: gain = error of the column claimed worse minus error of "
         f"the one claimed better (points; positive is the paper's direction), its mean over the pairs with a "
         f"two-sided 95% Student-t interval, and MDE, the smallest mean gain these pairs detect with 80% power. "
         f"*{REPRODUCED}*: the interval lies above 0; *{NOT_REPRODUCED}*: below 0; *{INCONCLUSIVE}*: it "
         f"contains 0. Where the table has a teacher, the other claims are tested only once the teacher is "
         f"clearly better than the student. Where the student's error still fell by D points over its last "
         f"test interval (median over seeds), a gap whose interval does not clear D is *{TOO_SHORT}*: a "
         f"method that only learns faster or slower than the student moves its error that much.")


class Result(NamedTuple):
    claim: Claim
    pairs: Paired
    verdict: str  # a verdict word, or why there is none


def _finished(cells: pd.DataFrame) -> dict[str, pd.Series]:
    """Column -> its line, for the cells with at least one finished run."""
    return {c["column"]: c for _, c in cells.iterrows() if c["n"] > 0 and pd.notna(c["median"])}


def _errors(cell: pd.Series) -> dict[int, float]:
    """Seed -> error of a cell's finished runs, from the CSV's aligned ``seeds`` and ``values``."""
    if pd.isna(cell["seeds"]) or not str(cell["seeds"]).strip():
        return {}
    return dict(zip(map(int, str(cell["seeds"]).split()), map(float, str(cell["values"]).split()), strict=True))


def compare(better: pd.Series, worse: pd.Series) -> Paired:
    """d_s = err_worse(s) - err_better(s) over the seeds both cells finished (positive: ``better`` is)."""
    a, b = _errors(worse), _errors(better)
    # a fixed teacher (one planned run) is the same network for every student seed: pair it with each
    if better["planned"] == 1 and worse["planned"] > 1 and len(b) == 1:
        b = dict.fromkeys(a, *b.values())
    return paired(a, b)


def _gap(p: Paired) -> str:
    if p.interval is not None:
        return f"gap {p.mean:+.2f} [{p.interval[0]:+.2f}, {p.interval[1]:+.2f}]"
    return f"gap {p.mean:+.2f}, one paired seed" if p.n else "no paired seeds"


class Learning(NamedTuple):
    """How much the student still learnt at its end: D, the median over seeds of its error at the test
    before the last minus its final error (0 when it rose), over the epochs ``since`` .. ``until``."""

    drop: float
    since: int | None
    until: int | None

    def __str__(self) -> str:
        span = f" over epochs {self.since}-{self.until}" if self.since is not None and self.until else ""
        return f"the student's error still fell {self.drop:.2f} points{span}"


def still_learning(student: pd.Series) -> Learning | None:
    """The student's ``Learning`` from its cell's ``previous`` and ``values``; None with a single test."""
    if "previous" not in student or pd.isna(student["previous"]) or not str(student["previous"]).strip():
        return None
    before = pd.Series([float(v) for v in str(student["previous"]).split()], dtype=float)
    final = pd.Series([float(v) for v in str(student["values"]).split()], dtype=float)
    drops = (before - final).dropna()
    if drops.empty:
        return None
    at = {k: int(student[k]) if k in student and pd.notna(student[k]) else None for k in ("previous_epoch", "epochs")}
    return Learning(max(0.0, float(drops.median())), at["previous_epoch"], at["epochs"])


def _word(p: Paired, learning: Learning | None = None) -> str:
    if p.interval is None:
        return "one paired seed: no interval" if p.n else "no paired seeds yet"
    word = verdict(p.interval)
    if word == INCONCLUSIVE:
        return f"{word}: only a gain of {p.mde:.2f} points or more was detectable"
    low, high = p.interval
    if learning is not None and (low <= learning.drop if word == REPRODUCED else high >= -learning.drop):
        return f"{TOO_SHORT} ({word} otherwise): {learning}, more than the interval clears"
    return word


def claim_results(cells: pd.DataFrame) -> list[Result]:
    """Every claim the columns of one (row, metric) can test, the teacher's precondition first."""
    got = {c["column"]: c for _, c in cells.iterrows()}
    base = next((b for b in BASELINES if b in got), None)
    results = []
    gate = None
    if base is not None and TEACHER in got:
        teacher = Claim(TEACHER, base)
        p = compare(got[TEACHER], got[base])
        results.append(Result(teacher, p, _word(p)))
        if p.interval is None or verdict(p.interval) != REPRODUCED:
            # a student that learns from a teacher no better than itself tests nothing the paper claims
            gate = f"not testable here: the teacher is not clearly better than the student ({_gap(p)})"
    learning = still_learning(got[base]) if base is not None else None
    for claim in (c for c in CLAIMS if c.better in got and c.worse in got):
        p = compare(got[claim.better], got[claim.worse])
        results.append(Result(claim, p, gate or _word(p, learning)))
    return results


def claims_table(results: list[Result]) -> str:
    """The Markdown table of a row's claims."""
    def line(r: Result) -> list[str]:
        p = r.pairs
        ci = f"[{p.interval[0]:+.2f}, {p.interval[1]:+.2f}]" if p.interval else "–"
        return [str(r.claim), str(p.n), f"{p.mean:+.2f}" if p.n else "–", ci,
                f"{p.mde:.2f}" if p.mde is not None else "–", r.verdict]

    headers = ["claim", "pairs n", "mean gain (points)", "95% interval", "MDE", "verdict"]
    return tabulate([line(r) for r in results], headers=headers, tablefmt="github", disable_numparse=True)


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
    """The headline of one (row, metric) of a table CSV: its first claim and the ordering against the paper."""
    if not _finished(cells):
        return "no finished runs yet"
    results = claim_results(cells)
    head = next((r for r in results if r.claim.better != TEACHER), results[0] if results else None)
    parts = []
    if head is not None:
        gain = f" ({head.pairs.mean:+.2f} points)" if head.pairs.n else ""
        parts.append(f"{head.claim}: {head.verdict}{gain}")
    parts += [v for v in (ordering_verdict(cells),) if v]
    learning = next((still_learning(c) for c in _finished(cells).values() if c["column"] in BASELINES), None)
    if learning is not None and (head is None or str(learning) not in head.verdict):
        parts.append(str(learning))
    if not parts:
        got = _finished(cells)
        best = min(got, key=lambda k: float(got[k]["median"]))
        parts.append(f"best column {best} ({float(got[best]['median']):.2f}%)")
    return "; ".join(parts)


def table_verdicts(csv: pd.DataFrame) -> list[str]:
    """Markdown blocks for one table's long CSV: what the words mean, then per (row, metric) in the table's
    order a headline bullet and the table of its claims."""
    blocks = [WORDS]
    metrics = list(dict.fromkeys(csv["metric"]))
    for row in dict.fromkeys(csv["row"]):
        for metric in metrics:
            cells = csv[(csv["row"] == row) & (csv["metric"] == metric)]
            tag = f" ({metric})" if len(metrics) > 1 else ""
            blocks.append(f"- **{row}**{tag}: {row_verdict(cells)}.")
            results = claim_results(cells)
            if results and _finished(cells):
                blocks.append(claims_table(results))
    return blocks


def _link(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def report_text(plan: Plan, tables_dir: Path, figures_dir: Path, out_dir: Path) -> str:
    figures = planned_figures(plan, figures_dir)
    parts = [f"# {plan.name}: Paying More Attention to Attention, reproduced\n",
             "Test error (%), lower is better. Verdicts are computed from the table CSVs, "
             "pairing the runs of two columns by seed.\n"]
    for table, layout in plan.tables.items():
        md, csv = tables_dir / f"{table}.md", tables_dir / f"{table}.csv"
        parts.append(md.read_text().rstrip() + "\n" if md.is_file()
                     else f"## {layout['title']}\n\n*{md} not written yet.*\n")
        if csv.is_file():
            # "0" stays a list of one seed, not a number
            long = pd.read_csv(csv, dtype={"seeds": str, "values": str, "previous": str})
            parts.append("**Verdict**\n\n" + "\n\n".join(table_verdicts(long)) + "\n")
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
    atomic_write_text(out, text)
    return out


__all__ = ["CLAIMS", "TOO_SHORT", "Claim", "Learning", "Result", "claim_results", "claims_table", "compare",
           "row_verdict", "still_learning", "table_verdicts", "write_report"]
