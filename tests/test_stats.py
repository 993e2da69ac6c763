"""Seed-paired statistics against values worked out by hand, and the table CSV columns they read."""

import math

import pandas as pd
import pytest

from atlib.plan import build_plan
from atlib.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, holm, paired, t_quantile, t_two_sided_p, verdict
from atlib.tables import cells, previous_test

# five seeds: d = student - at = 1.0, 0.5, 1.5, 1.0, 1.0
STUDENT = {0: 9.0, 1: 8.5, 2: 9.5, 3: 9.2, 4: 8.8}
AT = {0: 8.0, 1: 8.0, 2: 8.0, 3: 8.2, 4: 7.8}


def test_t_quantiles_are_the_textbook_ones_and_normal_past_the_table():
    assert t_quantile(0.975, 4) == 2.776 and t_quantile(0.80, 4) == 0.941
    assert t_quantile(0.975, 1) == 12.706 and t_quantile(0.80, 1) == 1.376
    assert t_quantile(0.975, 30) == 2.042 and t_quantile(0.80, 30) == 0.854
    assert t_quantile(0.975, 31) == 1.960 and t_quantile(0.80, 1000) == 0.842  # z_{0.975}, z_{0.80}
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_five_pairs_mean_sd_interval_and_mde_by_hand():
    p = paired(STUDENT, AT)
    assert p.seeds == (0, 1, 2, 3, 4) and p.n == 5
    assert p.mean == pytest.approx((1.0 + 0.5 + 1.5 + 1.0 + 1.0) / 5)  # 1.0
    # squared deviations from 1.0: 0 + 0.25 + 0.25 + 0 + 0 = 0.5, over n - 1 = 4
    assert p.sd == pytest.approx(math.sqrt(0.5 / 4))  # 0.35355
    se = math.sqrt(0.5 / 4 / 5)  # sd / sqrt(5) = sqrt(0.025) = 0.15811
    assert p.interval == pytest.approx((1.0 - 2.776 * se, 1.0 + 2.776 * se))
    assert p.interval == pytest.approx((0.5611, 1.4389), abs=1e-4)
    assert p.mde == pytest.approx((2.776 + 0.941) * se)  # 3.717 * 0.15811
    assert p.mde == pytest.approx(0.5877, abs=1e-4)


def test_each_verdict_word_at_its_threshold():
    assert verdict((1e-9, 1.0)) == REPRODUCED
    assert verdict((0.0, 1.0)) == INCONCLUSIVE  # touching 0 is not excluding it
    assert verdict((-1.0, 0.0)) == INCONCLUSIVE
    assert verdict((-1.0, -1e-9)) == NOT_REPRODUCED
    # shifting every d by c moves the interval by c and keeps its half-width 2.776 * 0.15811 = 0.4389
    shifted = {c: paired({s: e - c for s, e in STUDENT.items()}, AT) for c in (0.5, 0.6, 1.4, 1.5)}
    assert shifted[0.5].interval[0] == pytest.approx(0.5 - 0.4389, abs=1e-4)  # +0.0611
    assert verdict(shifted[0.5].interval) == REPRODUCED
    assert shifted[0.6].interval[0] == pytest.approx(0.4 - 0.4389, abs=1e-4)  # -0.0389
    assert verdict(shifted[0.6].interval) == INCONCLUSIVE
    assert shifted[1.4].interval[1] == pytest.approx(-0.4 + 0.4389, abs=1e-4)  # +0.0389
    assert verdict(shifted[1.4].interval) == INCONCLUSIVE
    assert shifted[1.5].interval[1] == pytest.approx(-0.5 + 0.4389, abs=1e-4)  # -0.0611
    assert verdict(shifted[1.5].interval) == NOT_REPRODUCED


def test_pairs_only_the_seeds_in_both_cells():
    a = {0: 9.0, 1: 8.5, 2: 9.5, 4: 8.8}  # no seed 3
    b = {4: 7.8, 3: 7.0, 2: 8.0, 0: 8.0}  # no seed 1, not in seed order
    p = paired(a, b)
    assert p.seeds == (0, 2, 4) and p.d == pytest.approx((1.0, 1.5, 1.0))
    assert p.mean == pytest.approx(3.5 / 3)
    # deviations -1/6, +1/3, -1/6: squares sum to 6/36, over n - 1 = 2 is 1/12; sd/sqrt(3) = sqrt(1/36) = 1/6
    assert p.sd == pytest.approx(math.sqrt(1 / 12))
    assert p.interval == pytest.approx((3.5 / 3 - 4.303 / 6, 3.5 / 3 + 4.303 / 6))  # t_{0.975,2} = 4.303
    assert p.mde == pytest.approx((4.303 + 1.061) / 6)  # t_{0.80,2} = 1.061


def test_fewer_than_two_pairs_have_no_interval():
    one = paired({0: 9.0, 1: 8.0}, {0: 8.5, 2: 7.0})
    assert (one.n, one.mean) == (1, pytest.approx(0.5))
    assert one.sd is None and one.interval is None and one.mde is None
    none = paired({1: 9.0}, {0: 8.0})
    assert none.n == 0 and none.mean is None and none.interval is None


def test_table_csv_lists_each_cells_seeds_and_values_aligned_in_the_tables_seed_order():
    plan = build_plan({
        "name": "st", "seeds": [3, 1], "datasets": {"synthetic": {"name": "synthetic"}},
        "tables": {"t": {"title": "T", "dataset": "synthetic", "recipe": "paper", "metrics": ["top1", "top5"],
                         "columns": ["student", "at", "teacher"],
                         "rows": [{"student": "wrn-10-1", "teacher": "wrn-10-2"}]}},
    })
    runs = {c.column: c.runs for c in plan.cells}
    summary = pd.DataFrame([  # at seed 3 and both teachers have not finished; student seed 3 has no top-5
        {"run_id": runs["student"][0], "seed": 3, "final_test_error": 9.5, "final_test_error_top5": None},
        {"run_id": runs["student"][1], "seed": 1, "final_test_error": 9.0, "final_test_error_top5": 1.25},
        {"run_id": runs["at"][1], "seed": 1, "final_test_error": 8.0, "final_test_error_top5": 1.0},
    ])
    got = {(c["column"], c["metric"]): (c["seeds"], c["values"], c["n"]) for _, c in cells(plan, summary).iterrows()}
    assert got == {
        ("student", "top1"): ("3 1", "9.5 9.0", 2), ("student", "top5"): ("1", "1.25", 1),
        ("at", "top1"): ("1", "8.0", 1), ("at", "top5"): ("1", "1.0", 1),
        ("teacher", "top1"): ("", "", 0), ("teacher", "top5"): ("", "", 0),
    }


def test_previous_test_is_the_test_before_the_last_and_cells_align_it_with_the_seeds():
    history = [{"epoch": 1}, {"epoch": 2, "test_error": 20.0, "test_error_top5": 2.0}, {"epoch": 3},
               {"epoch": 4, "test_error": 17.5, "test_error_top5": 1.5}, {"epoch": 5, "test_error": 17.0}]
    assert previous_test(history) == {"previous_test_error": 17.5, "previous_test_error_top5": 1.5,
                                      "previous_epoch": 4}
    assert previous_test(history[:2]) == {}  # one test: nothing before it
    plan = build_plan({
        "name": "pv", "seeds": [3, 1], "datasets": {"synthetic": {"name": "synthetic"}},
        "tables": {"t": {"title": "T", "dataset": "synthetic", "recipe": "paper", "metrics": ["top1"],
                         "columns": ["student"], "rows": [{"student": "wrn-10-1"}]}},
    })
    runs = plan.cells[0].runs
    summary = pd.DataFrame([  # seed 3 was tested once, seed 1 at epoch 4 before its last epoch 5
        {"run_id": runs[0], "seed": 3, "final_test_error": 9.5, "epochs": 5},
        {"run_id": runs[1], "seed": 1, "final_test_error": 9.0, "previous_test_error": 10.25, "previous_epoch": 4,
         "epochs": 5},
    ])
    cell = cells(plan, summary).iloc[0]
    assert (cell["seeds"], cell["values"], cell["previous"]) == ("3 1", "9.5 9.0", "nan 10.25")
    assert (cell["previous_epoch"], cell["epochs"]) == (4, 5)  # one recipe: seed 1's places it for the cell


def test_two_sided_p_by_hand_and_at_the_textbook_quantiles():
    # df = 1 is the Cauchy distribution: p = 1 - 2 atan(t) / pi; df = 2: p = 1 - t / sqrt(2 + t^2)
    assert t_two_sided_p(3.0, 1) == pytest.approx(1 - 2 * math.atan(3.0) / math.pi, rel=1e-12)
    assert t_two_sided_p(3.0, 2) == pytest.approx(1 - 3.0 / math.sqrt(11.0), rel=1e-12)
    assert t_two_sided_p(-3.0, 2) == t_two_sided_p(3.0, 2)  # two-sided: the sign does not matter
    assert t_two_sided_p(0.0, 4) == 1.0
    # the printed 97.5% quantiles (3 decimals) give p = 0.05 to the rounding of the table
    for df, q in ((1, 12.706), (3, 3.182), (4, 2.776), (5, 2.571), (10, 2.228), (30, 2.042)):
        assert t_two_sided_p(q, df) == pytest.approx(0.05, abs=1e-4), df


def test_paired_p_is_the_t_test_of_the_hand_computed_pairs():
    p = paired(STUDENT, AT)  # mean 1.0, se sqrt(0.025): t = 6.3246 with 4 df
    assert p.t == pytest.approx(1.0 / math.sqrt(0.025))
    assert p.p == pytest.approx(t_two_sided_p(1.0 / math.sqrt(0.025), 4))
    assert 0.001 < p.p < 0.005  # t_{0.9975,4} = 5.598 < 6.32 < t_{0.9995,4} = 8.610


def test_identical_gains_have_no_t_and_no_p():
    same = paired({0: 9.0, 1: 8.0, 2: 7.5}, {0: 8.0, 1: 7.0, 2: 6.5})  # every gain is exactly 1.0
    assert same.sd == 0 and same.t is None and same.p is None


def test_holm_by_hand():
    # m = 4, sorted 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, kept at 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # one claim: nothing to correct
    assert holm([]) == []


def test_sign_flip_p_by_hand_enumeration():
    from atlib.stats import sign_flip_p

    # d = (1, 2, 3): the 8 sign assignments give sums +-1 +-2 +-3 = 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 twice
    assert sign_flip_p([1, 2, 3]) == 2 / 8
    # d = (1, -2, 3): observed |sum| 2; |sums| are 6, 4, 2, 0, 0, 2, 4, 6: six of the eight reach 2
    assert sign_flip_p([1, -2, 3]) == 6 / 8
    # every pair of the same sign: only the observed assignment and its mirror reach it, 2 / 2^n
    assert sign_flip_p([0.5] * 8) == 2 / 256 and sign_flip_p([0.5, 1, 2, 3, 4]) == 2 / 32
    assert sign_flip_p([0.0, 0.0]) == 1.0  # a zero sum: every assignment is as extreme
    assert sign_flip_p([0.1 + 0.2, -0.3]) == 1.0  # 0.30000000000000004 - 0.3 is a tie with 0, not a gain


def test_paired_gives_its_sign_flip_p():
    assert paired({0: 3.0, 1: 2.0, 2: 1.0}, {0: 0.0, 1: 0.0, 2: 0.0}).p_sign_flip == 2 / 8


def test_median_interval_is_the_order_statistic_one_by_hand():
    from atlib.stats import median_interval

    # [x(k), x(n+1-k)] covers the median with 1 - 2 P(Bin(n, 1/2) <= k - 1). n = 5, k = 1: 1 - 2/32 = 0.9375
    # (k = 2: 1 - 2 * 6/32 = 0.625, under 90%), so five seeds give [min, max]
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0, 0.9375)
    # n = 8: k = 2 covers 1 - 2 * (1 + 8)/256 = 0.9296875; k = 3: 1 - 2 * 37/256 = 0.7109375
    assert median_interval([float(v) for v in range(8)]) == (1.0, 6.0, 0.9296875)
    assert median_interval([1.0, 2.0, 3.0, 4.0]) is None  # four seeds: no interval at 90% (k = 1: 0.875)


def agreement_plan(reported: str = "final"):
    return build_plan({
        "name": "ag", "seeds": [0, 1, 2, 3, 4], "datasets": {"synthetic": {"name": "synthetic"}},
        "recipes": {"r": {"epochs": 2, "reported": reported}},
        "tables": {"t": {"title": "T", "dataset": "synthetic", "recipe": "r", "paper": "table1",
                         "columns": ["student", "at", "teacher"],
                         "rows": [{"student": "wrn-10-1", "teacher": "wrn-10-2",
                                   "paper_row": "wrn-16-1 <- wrn-16-2"}]}},
    })


def agreement_summary(plan) -> pd.DataFrame:
    """The paper's row: student 8.77, AT 7.93, teacher 6.31. Ours: five students 8.5..9.1 (8.77 inside), three AT
    runs 8.0..8.2 (7.93 below), one teacher (one seed: no spread to judge); the best epochs 0.5 lower."""
    runs = {c.column: c.runs for c in plan.cells}
    rows = [(runs["student"][s], s, e) for s, e in enumerate((8.5, 8.7, 8.9, 9.0, 9.1))]
    rows += [(runs["at"][s], s, e) for s, e in enumerate((8.0, 8.1, 8.2))] + [(runs["teacher"][0], 0, 6.0)]
    return pd.DataFrame([{"run_id": r, "seed": s, "final_test_error": e, "best_test_error": e - 0.5}
                         for r, s, e in rows])


def test_each_cell_says_whether_the_papers_number_lies_within_our_seeds(tmp_path):
    from atlib.report import Agreement, _read_csv, agreement
    from atlib.tables import AGREES, wide

    plan = agreement_plan()
    long = cells(plan, agreement_summary(plan))
    got = {c["column"]: (c["in_range"], c["in_median_ci"]) for _, c in long.iterrows()}
    assert got == {"student": (True, True), "at": (False, None), "teacher": (None, None)}
    line = next(line for line in wide(long, plan, "t") if line[1] == AGREES)
    assert line[2:] == ["range yes, median CI 94% yes", "range no", "–"]
    assert agreement(long) == Agreement(in_range=1, range_judged=2, in_ci=1, ci_judged=1)
    assert str(agreement(long)) == (
        "**Agreement with the paper**: the paper's number lies within our seeds' [min, max] in 1 of 2 cells (those "
        "with a paper number and two or more seeds), and within the confidence interval of our median in 1 of 1 "
        "(those with 5 or more seeds).")
    # as the report reads it back from the table's CSV
    long.to_csv(tmp_path / "t.csv", index=False)
    assert agreement(_read_csv(tmp_path / "t.csv")) == Agreement(1, 2, 1, 1)


def test_a_recipe_reporting_the_best_epoch_adds_it_beside_the_final_one():
    from atlib.tables import shown_metrics

    assert shown_metrics(agreement_plan(), "t") == ["top1"]
    plan = agreement_plan("best")
    assert shown_metrics(plan, "t") == ["top1", "top1 best"]
    long = cells(plan, agreement_summary(plan))
    best = long[long.metric == "top1 best"].set_index("column")
    # the best epochs, 8.0..8.6, leave the paper's 8.77 above the students' range; 7.5..7.7 leave 7.93 above AT's
    assert best.loc["student", "median"] == pytest.approx(8.4) and best.loc["student", "paper"] == 8.77
    assert (best.loc["student", "in_range"], best.loc["at", "in_range"]) == (False, False)
