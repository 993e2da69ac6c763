"""``results/<name>/report.md``: every table, a verdict per paper claim its columns can test, and the figures.

The verdicts read only the long-form table CSVs that ``atlib tables`` writes, so the report says
exactly what the tables say; a claim is judged by the seed-paired differences of its two columns
(``stats``). The figures are linked relative to the report, so the folder can be moved or browsed
on a forge as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from itertools import combinations
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from tabulate import tabulate

from .plan import ClaimRef, Convergence, Plan, TrendRef, planned_figures
from .rundir import atomic_write_text
from .runkey import RunKey
from .stats import INCONCLUSIVE, MEDIAN_MIN_N, NOT_REPRODUCED, REPRODUCED, Paired, holm, paired
from .tables import known

TOO_SHORT = "too short to judge"
NOT_CONVERGED = "not converged"
LEVEL = 0.05  # a config without a claims section judges each comparison at this level
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
         f"the one claimed better (points; positive is the claim's direction), its mean over the pairs with a "
         f"two-sided 95% Student-t interval, the paired t test's two-sided p, the exact sign-flip (permutation) "
         f"test's two-sided p as a check that needs no normality (p perm.), and MDE, the smallest mean gain these "
         f"pairs detect with 80% power. *{REPRODUCED}*: p below the level and a positive mean; *{NOT_REPRODUCED}*: "
         f"p below the level and a negative mean; *{INCONCLUSIVE}*: otherwise, with what its interval rules out. "
         f"A *confirmatory* claim was "
         f"registered in the config before its runs; it is judged on its p adjusted over all of them (Holm, "
         f"shown as p adj.). Every other claim is *exploratory*, judged on its own p at the level, with no "
         f"correction: a finding to confirm, not a result. The *precondition* (the teacher beats the student) is "
         f"not a paper claim: until it holds, a distillation claim is not testable. Too short to judge: where "
         f"either compared column's error still fell over its last test interval (median over seeds), D is the "
         f"larger of the two falls, and a gain whose 95% interval does not clear D (low end above D, or high end "
         f"below -D) is *{TOO_SHORT}*: a method that only learns faster or slower than the other moves its "
         f"error that much (a config with a convergence rule replaces this with *{NOT_CONVERGED}*, below). Gains "
         f"that are all identical have no spread, hence no interval: no verdict. Seeds planned but not finished in "
         f"both columns are named.")

PRECONDITION, CONFIRMATORY, EXPLORATORY = "precondition", "confirmatory", "exploratory"


class Result(NamedTuple):
    claim: Claim
    pairs: Paired
    verdict: str  # a verdict word, or why there is none
    kind: str = EXPLORATORY  # precondition | confirmatory | exploratory
    p_adjusted: float | None = None  # a confirmatory claim's p after the config's correction


def _finished(cells: pd.DataFrame) -> dict[str, pd.Series]:
    """Column -> its line, for the cells with at least one finished run."""
    return {c["column"]: c for _, c in cells.iterrows() if c["n"] > 0 and pd.notna(c["median"])}


def _words(cell: pd.Series, key: str) -> list[str]:
    return [] if key not in cell or pd.isna(cell[key]) else str(cell[key]).split()


def _errors(cell: pd.Series) -> dict[int, float]:
    """Seed -> error of a cell's finished runs, from the CSV's aligned ``seeds`` and ``values``."""
    return dict(zip(map(int, _words(cell, "seeds")), map(float, _words(cell, "values")), strict=True))


def _planned_seeds(cell: pd.Series) -> list[int]:
    """The seeds of a cell's planned runs, from their ids."""
    return [RunKey.parse(r).seed for r in _words(cell, "runs")]


def compare(better: pd.Series, worse: pd.Series) -> Paired:
    """d_s = err_worse(s) - err_better(s) over the seeds both cells finished (positive: ``better`` is)."""
    a, b = _errors(worse), _errors(better)
    # a fixed teacher (one planned run) is the same network for every student seed: pair it with each
    if better["planned"] == 1 and worse["planned"] > 1 and len(b) == 1:
        b = dict.fromkeys(a, *b.values())
    return paired(a, b)


def missing(better: pd.Series, worse: pd.Series, p: Paired) -> str:
    """The planned seeds a column has not finished (so the pairs leave them out): '' when none."""
    parts = []
    for cell in (worse, better):
        if cell["planned"] == 1 and worse["planned"] > 1:
            continue  # a fixed teacher pairs with every seed
        gone = [s for s in _planned_seeds(cell) if s not in _errors(cell)]
        if gone:
            name = NAMES.get(cell["column"], cell["column"])
            parts.append(f"seed{'s' if len(gone) > 1 else ''} {', '.join(map(str, gone))} of {name}")
    return f"missing: {'; '.join(parts)}" if parts else ""


def _gap(p: Paired) -> str:
    if p.interval is not None:
        return f"gap {p.mean:+.2f} [{p.interval[0]:+.2f}, {p.interval[1]:+.2f}]"
    return f"gap {p.mean:+.2f}, one paired seed" if p.n else "no paired seeds"


class Learning(NamedTuple):
    """How much a column still learnt at its end: D, the median over seeds of its error at the test before
    the last minus its final error (0 when it rose), over the epochs ``since`` .. ``until``."""

    drop: float
    since: int | None
    until: int | None
    column: str = "student"

    def __str__(self) -> str:
        span = f" over epochs {self.since}-{self.until}" if self.since is not None and self.until else ""
        return f"{NAMES.get(self.column, self.column)}'s error still fell {self.drop:.2f} points{span}"


def still_learning(cell: pd.Series) -> Learning | None:
    """A column's ``Learning`` from its cell's ``previous`` and ``values``; None with a single test."""
    before = pd.Series([float(v) for v in _words(cell, "previous")], dtype=float)
    final = pd.Series([float(v) for v in _words(cell, "values")], dtype=float)
    if before.empty or len(before) != len(final):
        return None
    drops = (before - final).dropna()
    if drops.empty:
        return None
    at = {k: int(cell[k]) if k in cell and pd.notna(cell[k]) else None for k in ("previous_epoch", "epochs")}
    return Learning(max(0.0, float(drops.median())), at["previous_epoch"], at["epochs"], str(cell["column"]))


def learning_gap(better: pd.Series, worse: pd.Series) -> Learning | None:
    """D of the too-short rule: the larger of the two compared columns' last-interval falls."""
    found = [x for x in (still_learning(worse), still_learning(better)) if x is not None]
    return max(found, key=lambda x: x.drop) if found else None


def judge(p: Paired, level: float = LEVEL, decision_p: float | None = None, learning: Learning | None = None) -> str:
    """The verdict of one claim: on ``decision_p`` (a confirmatory claim's adjusted p) or else its own p."""
    if p.n == 0:
        return "no paired seeds yet"
    if p.n == 1:
        return "one paired seed: no interval"
    if p.p is None:
        return f"no verdict: every pair gains exactly {p.mean:+.2f} points (no spread, so no t interval)"
    if (p.p if decision_p is None else decision_p) >= level:
        return inconclusive(p)
    word = REPRODUCED if p.mean > 0 else NOT_REPRODUCED
    low, high = p.interval
    if learning is not None and (low <= learning.drop if word == REPRODUCED else high >= -learning.drop):
        return f"{TOO_SHORT} ({word} otherwise): {learning}, more than the interval clears"
    return word


def inconclusive(p: Paired) -> str:
    """An inconclusive verdict with what its 95% interval still rules out."""
    low, high = p.interval
    if low <= 0 <= high:
        return f"{INCONCLUSIVE}: its interval rules out a gain above {high:.2f} points and a loss above {-low:.2f}"
    return f"{INCONCLUSIVE} after the correction: its own interval [{low:+.2f}, {high:+.2f}] excludes 0"


Adjusted = Mapping[tuple[str, str], float]  # (better, worse) -> a confirmatory claim's adjusted p


def claim_results(cells: pd.DataFrame, confirmatory: Adjusted | None = None, level: float = LEVEL,
                  unconverged: str | None = None, too_short: bool = True) -> list[Result]:
    """Every claim the columns of one (row, metric) can test: the teacher's precondition first, then the row's
    confirmatory claims (``confirmatory``: their adjusted p), then the paper's other claims, exploratory.
    ``unconverged``: why the row failed its config's convergence rule (its claims then get no verdict);
    ``too_short``: whether the too-short rule applies (not under a convergence rule)."""
    confirmatory = confirmatory or {}
    got = {c["column"]: c for _, c in cells.iterrows()}
    base = next((b for b in BASELINES if b in got), None)
    results = []
    gate = None
    if base is not None and TEACHER in got:
        p = compare(got[TEACHER], got[base])
        results.append(Result(Claim(TEACHER, base), p, _with_missing(judge(p, level), got[TEACHER], got[base], p),
                              PRECONDITION))
        if p.interval is None or p.p is None or p.p >= level or p.mean <= 0:
            # a student that learns from a teacher no better than itself tests nothing the paper claims
            gate = f"not testable here: the teacher is not clearly better than the student ({_gap(p)})"
    if unconverged is not None:
        gate = f"{NOT_CONVERGED}: {unconverged}"
    claims = [Claim(*k) for k in confirmatory if k[0] in got and k[1] in got]
    claims += [c for c in CLAIMS if c.better in got and c.worse in got and c not in claims]
    for claim in claims:
        better, worse = got[claim.better], got[claim.worse]
        p = compare(better, worse)
        adjusted = confirmatory.get((claim.better, claim.worse))
        kind = CONFIRMATORY if (claim.better, claim.worse) in confirmatory else EXPLORATORY
        word = gate or judge(p, level, adjusted if kind == CONFIRMATORY else None,
                             learning_gap(better, worse) if too_short else None)
        results.append(Result(claim, p, _with_missing(word, better, worse, p), kind, adjusted))
    return results


def _with_missing(word: str, better: pd.Series, worse: pd.Series, p: Paired) -> str:
    gone = missing(better, worse, p)
    return f"{word} ({gone})" if gone else word


def _p(x: float | None) -> str:
    return "–" if x is None else ("<0.001" if x < 0.001 else f"{x:.3f}")


def claims_table(results: list[Result]) -> str:
    """The Markdown table of a row's claims."""
    def line(r: Result) -> list[str]:
        p = r.pairs
        ci = f"[{p.interval[0]:+.2f}, {p.interval[1]:+.2f}]" if p.interval else "–"
        return [str(r.claim), r.kind, str(p.n), f"{p.mean:+.2f}" if p.n else "–", ci, _p(p.p), _p(r.p_adjusted),
                _p(p.p_sign_flip), f"{p.mde:.2f}" if p.mde is not None else "–", r.verdict]

    headers = ["claim", "kind", "pairs n", "mean gain (points)", "95% interval", "p", "p adj.", "p perm.", "MDE",
               "verdict"]
    return tabulate([line(r) for r in results], headers=headers, tablefmt="github", disable_numparse=True)


def ordering_verdict(cells: pd.DataFrame) -> str | None:
    """Our ordering of the method columns (best first) against the paper's, over the columns that have both
    numbers; the teacher is left out (it is better than every student in both, a pair that says nothing)."""
    got = {k: c for k, c in _finished(cells).items() if pd.notna(c["paper"]) and k != TEACHER}
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


def row_verdict(cells: pd.DataFrame, confirmatory: Adjusted | None = None, level: float = LEVEL,
                unconverged: str | None = None, too_short: bool = True) -> str:
    """The headline of one (row, metric) of a table CSV: its first claim and the ordering against the paper."""
    if not _finished(cells):
        return "no finished runs yet"
    results = claim_results(cells, confirmatory, level, unconverged, too_short)
    head = next((r for r in results if r.kind != PRECONDITION), results[0] if results else None)
    parts = []
    if head is not None:
        gain = f" ({head.pairs.mean:+.2f} points)" if head.pairs.n else ""
        parts.append(f"{head.claim} ({head.kind}): {head.verdict}{gain}")
    parts += [v for v in (ordering_verdict(cells),) if v]
    if not parts:
        got = _finished(cells)
        best = min(got, key=lambda k: float(got[k]["median"]))
        parts.append(f"best column {best} ({float(got[best]['median']):.2f}%)")
    return "; ".join(parts)


def _row_cells(csv: pd.DataFrame, row: str, metric: str) -> pd.DataFrame:
    return csv[(csv["row"] == row) & (csv["metric"] == metric)]


def table_verdicts(csv: pd.DataFrame, family: Mapping[tuple[str, str], Adjusted] | None = None,
                   level: float = LEVEL, unconverged: Mapping[str, str] | None = None,
                   too_short: bool = True) -> list[str]:
    """Markdown blocks for one table's long CSV: per (row, metric) in the table's order a headline bullet and
    the table of its claims; ``family`` gives each row's confirmatory claims and their adjusted p, ``unconverged``
    each row that failed the convergence rule and why."""
    blocks = []
    metrics = list(dict.fromkeys(csv["metric"]))
    for row in dict.fromkeys(csv["row"]):
        for metric in metrics:
            cells = _row_cells(csv, row, metric)
            tag = f" ({metric})" if len(metrics) > 1 else ""
            conf = (family or {}).get((row, metric))
            why = (unconverged or {}).get(row)
            blocks.append(f"- **{row}**{tag}: {row_verdict(cells, conf, level, why, too_short)}.")
            results = claim_results(cells, conf, level, why, too_short)
            if results and _finished(cells):
                blocks.append(claims_table(results))
    return blocks


def _read_csv(path: Path) -> pd.DataFrame:
    # "0" stays a list of one seed, not a number
    return pd.read_csv(path, dtype={"seeds": str, "values": str, "previous": str, "runs": str})


Ref = ClaimRef | TrendRef


def _cells_of(plan: Plan, tables_dir: Path, table: str, row: str | None = None) -> dict[str, pd.Series]:
    """Column -> line of a table's row (its only one by default) in the first metric, from the table CSV."""
    path = tables_dir / f"{table}.csv"
    if not path.is_file():
        return {}
    row = row if row is not None else plan.tables[table]["rows"][0]
    cells = _row_cells(_read_csv(path), row, plan.tables[table]["metrics"][0])
    return {c["column"]: c for _, c in cells.iterrows()}


def trend_pairs(plan: Plan, tables_dir: Path, ref: TrendRef) -> Paired:
    """Per seed, the gain of ``ref.column`` over ``ref.over`` in ``larger_in`` less the same gain in ``than_in``."""
    gains = []
    for table in (ref.larger_in, ref.than_in):
        got = _cells_of(plan, tables_dir, table)
        if ref.column not in got or ref.over not in got:
            return Paired((), ())
        g = compare(got[ref.column], got[ref.over])
        gains.append(dict(zip(g.seeds, g.d, strict=True)))
    return paired(*gains)


def trend_text(ref: TrendRef) -> str:
    return (f"{NAMES.get(ref.column, ref.column)}'s gain over {NAMES.get(ref.over, ref.over)} is larger in "
            f"{ref.larger_in} than in {ref.than_in}")


def _family_pairs(plan: Plan, tables_dir: Path) -> dict[Ref, Paired]:
    out: dict[Ref, Paired] = {}
    for ref in plan.claims.confirmatory:
        got = _cells_of(plan, tables_dir, ref.table, ref.row)
        out[ref] = compare(got[ref.better], got[ref.worse]) if ref.better in got and ref.worse in got \
            else Paired((), ())
    for trend in plan.claims.trends:
        out[trend] = trend_pairs(plan, tables_dir, trend)
    return out


def _adjust(plan: Plan, raw: Mapping[Ref, float | None]) -> dict[Ref, float]:
    # a claim with no p yet, or no spread, counts as p = 1: it cannot lower the bar for the others
    values = [1.0 if p is None else p for p in raw.values()]
    return dict(zip(raw, holm(values) if plan.claims.correction == "holm" else values, strict=True))


def adjusted_family(plan: Plan, tables_dir: Path) -> dict[Ref, float]:
    """Each confirmatory claim's (and trend's) t-test p after the config's correction over all of them."""
    return _adjust(plan, {ref: p.p for ref, p in _family_pairs(plan, tables_dir).items()})


def sign_flip_family(plan: Plan, tables_dir: Path) -> dict[Ref, float]:
    """The same for the exact sign-flip p: reported beside the t test's, never the verdict."""
    return _adjust(plan, {ref: p.p_sign_flip for ref, p in _family_pairs(plan, tables_dir).items()})


class ConvergenceCheck(NamedTuple):
    """One table row under its config's convergence rule: per column (not the teacher), the median final
    validation error of the rule's seeds at the planned length and trained ``factor`` times as long."""

    table: str
    row: str
    columns: list[tuple[str, float | None, float | None]]
    rule: Convergence

    @property
    def converged(self) -> bool | None:
        """True when every column moved less than the tolerance; None while a run is missing."""
        if any(a is None or b is None for _, a, b in self.columns):
            return None
        return all(abs(b - a) < self.rule.tolerance for _, a, b in self.columns)

    def why(self) -> str:
        if self.converged is None:
            return "its longer runs have not all finished"
        moved = [(c, b - a) for c, a, b in self.columns if abs(b - a) >= self.rule.tolerance]
        said = ", ".join(f"{NAMES.get(c, c)} {d:+.2f}" for c, d in moved)
        return (f"trained {self.rule.factor}x as long, the median validation error moved {said} points "
                f"(tolerance {self.rule.tolerance:g})")


def convergence_checks(plan: Plan, summary: pd.DataFrame) -> list[ConvergenceCheck]:
    """The convergence rule's verdict per table row, from summary.csv's final validation errors."""
    rule = plan.convergence
    if rule is None:
        return []
    errors = {} if "final_validation_error" not in summary else \
        dict(zip(summary["run_id"], summary["final_validation_error"], strict=True))

    def median(runs: list[str]) -> float | None:
        got = [errors.get(r) for r in runs]
        return None if any(v is None or pd.isna(v) for v in got) else float(pd.Series(got).median())

    rows: dict[tuple[str, str], list[tuple[str, float | None, float | None]]] = {}
    for (table, row, column), pairs in rule.runs.items():
        rows.setdefault((table, row), []).append(
            (column, median([a for _, a, _ in pairs]), median([b for _, _, b in pairs])))
    return [ConvergenceCheck(t, r, cols, rule) for (t, r), cols in rows.items()]


def convergence_section(checks: list[ConvergenceCheck]) -> str:
    """Per table row, each column's median validation error at the planned length and longer, and the verdict."""
    if not checks:
        return ""
    rule = checks[0].rule
    lines = []
    for c in checks:
        for column, a, b in c.columns:
            moved = "–" if a is None or b is None else f"{b - a:+.2f}"
            lines.append([c.table, NAMES.get(column, column), "–" if a is None else f"{a:.2f}",
                          "–" if b is None else f"{b:.2f}", moved])
        word = {True: "converged", False: NOT_CONVERGED, None: "not judged yet"}[c.converged]
        lines.append([c.table, f"**{word}**", "", "", ""])
    held = sum(c.converged is True for c in checks)
    head = (f"**Convergence** (the config's rule, stated before its runs: seeds {', '.join(map(str, rule.seeds))} "
            f"of every column trained {rule.factor}x as long; a row is converged when every column's median "
            f"validation error moves less than {rule.tolerance:g} points; the claims of a row that is not get no "
            f"verdict): {held} of {len(checks)} rows converged.\n")
    headers = ["table", "column", "median validation error (%)", f"trained {rule.factor}x as long", "moved"]
    return head + "\n" + tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True) + "\n"


def confirmatory_section(plan: Plan, tables_dir: Path, family: Mapping[Ref, float],
                         unconverged: Mapping[tuple[str, str], str] | None = None,
                         flips: Mapping[Ref, float] | None = None) -> str:
    """The preregistered claims, each with its raw and adjusted p (t test and sign flip) and verdict, before any
    table; ``unconverged``: (table, row) -> why it failed the convergence rule."""
    c = plan.claims
    unconverged = unconverged or {}
    flips = flips or {}
    if not c.confirmatory and not c.trends:
        return ("**Claims.** This config registers no confirmatory claims: every verdict below is exploratory, "
                f"judged at {c.level:g} each with no correction for the number of comparisons.\n")
    lines = []
    too_short = plan.convergence is None

    def line(table: str, claim: str, p: Paired, verdict: str, ref: Ref) -> list[str]:
        ci = f"[{p.interval[0]:+.2f}, {p.interval[1]:+.2f}]" if p.interval else "–"
        return [table, claim, str(p.n), f"{p.mean:+.2f}" if p.n else "–", ci, _p(p.p), _p(family.get(ref)),
                _p(p.p_sign_flip), _p(flips.get(ref)), f"{p.mde:.2f}" if p.mde is not None else "–", verdict]

    for ref in c.confirmatory:
        csv_path = tables_dir / f"{ref.table}.csv"
        metric = plan.tables[ref.table]["metrics"][0]
        cells = _row_cells(_read_csv(csv_path), ref.row, metric) if csv_path.is_file() else None
        conf = {(r.better, r.worse): family[r] for r in c.confirmatory if (r.table, r.row) == (ref.table, ref.row)}
        why = unconverged.get((ref.table, ref.row))
        found = [r for r in claim_results(cells, conf, c.level, why, too_short)
                 if (r.claim.better, r.claim.worse) == (ref.better, ref.worse)] if cells is not None else []
        if found:
            lines.append(line(ref.table, str(found[0].claim), found[0].pairs, found[0].verdict, ref))
        else:
            lines.append([ref.table, str(Claim(ref.better, ref.worse)), "0", "–", "–", "–", "–", "–", "–", "–",
                          "no finished runs yet"])
    for trend in c.trends:
        p = trend_pairs(plan, tables_dir, trend)
        why = next((unconverged[k] for k in unconverged if k[0] in (trend.larger_in, trend.than_in)), None)
        verdict = f"{NOT_CONVERGED}: {why}" if why else judge(p, c.level, family.get(trend))
        lines.append(line(f"{trend.larger_in} vs {trend.than_in}", trend_text(trend), p, verdict, trend))
    held = sum(line[-1] == REPRODUCED for line in lines)
    correction = "Holm's correction" if c.correction == "holm" else "no correction"
    head = (f"**Confirmatory claims** (registered in the config before its runs; family-wise level {c.level:g} "
            f"with {correction} over the {len(lines)}, judged on the t test's adjusted p; the sign-flip p and its "
            f"adjusted value are shown beside it): {held} of {len(lines)} hold.\n")
    headers = ["table", "claim", "pairs n", "mean gain (points)", "95% interval", "p", "p adj.", "p perm.",
               "p perm. adj.", "MDE", "verdict"]
    return head + "\n" + tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True) + "\n"


class Agreement(NamedTuple):
    """How many cells put the paper's number within our seeds' [min, max] (of those judged: a paper number and
    two seeds or more), and within the interval of our median (of those with five seeds or more)."""

    in_range: int = 0
    range_judged: int = 0
    in_ci: int = 0
    ci_judged: int = 0

    def __add__(self, other: tuple) -> Agreement:  # type: ignore[override]
        return Agreement(*(a + b for a, b in zip(self, other, strict=True)))

    def __str__(self) -> str:
        if not self.range_judged:
            return ("**Agreement with the paper**: no cell has both a paper number and two finished seeds yet.")
        text = (f"**Agreement with the paper**: the paper's number lies within our seeds' [min, max] in "
                f"{self.in_range} of {self.range_judged} cells (those with a paper number and two or more seeds)")
        if self.ci_judged:
            text += (f", and within the confidence interval of our median in {self.in_ci} of {self.ci_judged} "
                     f"(those with {MEDIAN_MIN_N} or more seeds)")
        return text + "."


def agreement(csv: pd.DataFrame) -> Agreement:
    """The counts of one table's long CSV (its ``in_range`` and ``in_median_ci`` columns)."""
    found = [(known(c, "in_range"), known(c, "in_median_ci")) for _, c in csv.iterrows()]
    return Agreement(sum(r is True for r, _ in found), sum(r is not None for r, _ in found),
                     sum(m is True for _, m in found), sum(m is not None for _, m in found))


def _link(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def report_text(plan: Plan, tables_dir: Path, figures_dir: Path, out_dir: Path) -> str:
    figures = planned_figures(plan, figures_dir)
    family = adjusted_family(plan, tables_dir)
    summary_path = tables_dir.parent / "summary.csv"
    checks = convergence_checks(plan, pd.read_csv(summary_path)) if plan.convergence and summary_path.is_file() \
        else []
    unconverged = {(c.table, c.row): c.why() for c in checks if c.converged is not True}
    too_short = plan.convergence is None
    csvs = {t: _read_csv(tables_dir / f"{t}.csv") for t in plan.tables if (tables_dir / f"{t}.csv").is_file()}
    total = sum((agreement(csv) for csv in csvs.values()), Agreement())
    parts = [f"# {plan.name}: test errors, claims and verdicts\n",
             "Test error (%), lower is better. Verdicts are computed from the table CSVs, "
             "pairing the runs of two columns by seed.\n", WORDS + "\n", f"{total} (all tables)\n",
             convergence_section(checks),
             confirmatory_section(plan, tables_dir, family, unconverged, sign_flip_family(plan, tables_dir))]
    for f in (f for f in figures if f.kind == "gains"):
        link = _link(f.path, out_dir)
        caption = "Each method's gain over the student against the student's images per class"
        parts.append(f"![{caption}]({link})\n" if f.path.is_file() else f"*{caption}: {link} not rendered.*\n")
    for table, layout in plan.tables.items():
        md, csv = tables_dir / f"{table}.md", tables_dir / f"{table}.csv"
        parts.append(md.read_text().rstrip() + "\n" if md.is_file()
                     else f"## {layout['title']}\n\n*{md} not written yet.*\n")
        if csv.is_file():
            parts.append(f"{agreement(csvs[table])}\n")
            by_row: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
            for ref, p in family.items():
                if isinstance(ref, ClaimRef) and ref.table == table:
                    by_row.setdefault((ref.row, layout["metrics"][0]), {})[(ref.better, ref.worse)] = p
            why = {row: w for (t, row), w in unconverged.items() if t == table}
            parts.append("**Verdict**\n\n" + "\n\n".join(table_verdicts(_read_csv(csv), by_row, plan.claims.level,
                                                                          why, too_short)) + "\n")
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


__all__ = ["CLAIMS", "CONFIRMATORY", "EXPLORATORY", "NOT_CONVERGED", "PRECONDITION", "TOO_SHORT", "Agreement", "Claim",
           "ConvergenceCheck", "Learning", "Result", "adjusted_family", "agreement", "claim_results", "claims_table",
           "compare", "convergence_checks", "judge", "learning_gap", "missing", "row_verdict", "sign_flip_family",
           "still_learning", "table_verdicts", "trend_pairs", "write_report"]
