"""The convergence rule's verdicts and the trend claim, on hand-made summaries and tables."""

import pandas as pd
import pytest

from atlib.plan import Convergence, TrendRef, build_plan
from atlib.report import NOT_CONVERGED, ConvergenceCheck, claim_results, convergence_checks, trend_pairs

RULE = Convergence((0, 1), 2, 0.5)


def check(*columns):
    return ConvergenceCheck("t", "r", list(columns), RULE)


def test_a_row_converges_when_every_column_moves_less_than_the_tolerance():
    assert check(("student", 10.0, 10.4), ("at", 9.0, 8.6)).converged is True  # |+0.4|, |-0.4| < 0.5
    moved = check(("student", 10.0, 10.4), ("at", 9.0, 8.5))  # AT fell 0.5 points: not less than 0.5
    assert moved.converged is False
    assert moved.why() == "trained 2x as long, the median validation error moved AT -0.50 points (tolerance 0.5)"
    assert check(("student", 10.0, None)).converged is None  # a longer run not finished yet
    assert check(("kd", 12.0, 12.9)).converged is False  # a rise counts as much as a fall


def test_checks_take_the_median_of_the_rules_seeds_from_the_summary():
    rule = Convergence((0, 1, 2), 2, 0.5, runs={("t", "r", "at"): [(0, "a0", "b0"), (1, "a1", "b1"), (2, "a2", "b2")]})
    plan = build_plan({"datasets": {"d": {"name": "synthetic"}},
                       "tables": {"t": {"dataset": "d", "recipe": "paper", "columns": ["student"],
                                        "rows": [{"student": "wrn-10-1"}]}}})
    plan.convergence = rule
    summary = pd.DataFrame({"run_id": ["a0", "a1", "a2", "b0", "b1", "b2"],
                            "final_validation_error": [10.0, 12.0, 11.0, 9.0, 13.0, 11.6]})
    (got,) = convergence_checks(plan, summary)
    # medians: planned (10, 12, 11) -> 11.0, longer (9, 13, 11.6) -> 11.6: moved +0.6
    assert got.columns == [("at", 11.0, pytest.approx(11.6))] and got.converged is False


STUDY = {
    "seeds": [0, 1, 2],
    "datasets": {"d": {"name": "synthetic"}},
    "tables": {n: {"dataset": "d", "recipe": "paper", "columns": ["student", "at"],
                   "rows": [{"student": "wrn-10-1", "teacher": "wrn-10-2"}]} for n in ("small", "large")},
}


def test_a_trend_is_the_per_seed_difference_of_two_gains(tmp_path):
    plan = build_plan(STUDY)
    errors = {"small": {"student": [20.0, 22.0, 21.0], "at": [15.0, 18.0, 17.5]},   # gains 5, 4, 3.5
              "large": {"student": [10.0, 11.0, 10.5], "at": [9.0, 10.5, 9.0]}}     # gains 1, 0.5, 1.5
    for table, columns in errors.items():
        row = plan.tables[table]["rows"][0]
        pd.DataFrame([{"table": table, "row": row, "column": c, "metric": "top1", "n": 3, "median": 0.0,
                       "planned": 3, "seeds": "0 1 2", "values": " ".join(map(str, v))} for c, v in columns.items()]
                     ).to_csv(tmp_path / f"{table}.csv", index=False)
    p = trend_pairs(plan, tmp_path, TrendRef("at", "student", "small", "large"))
    assert p.seeds == (0, 1, 2) and p.d == pytest.approx((4.0, 3.5, 2.0))


def test_an_unconverged_row_gets_no_verdict_on_its_claims():
    frame = pd.DataFrame([{"column": c, "n": 2, "median": 1.0, "planned": 2, "seeds": "0 1", "values": v,
                           "runs": "x/y/m/v/seed0 x/y/m/v/seed1"}
                          for c, v in (("student", "10 11"), ("at", "8 8.5"))])
    (result,) = claim_results(frame, unconverged="why", too_short=False)
    assert result.verdict == f"{NOT_CONVERGED}: why"
