import copy
from pathlib import Path

import pytest
import yaml

from atlib.plan import build_plan, missing_data
from atlib.spec import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def test_quick_plan_shares_teachers_and_baselines():
    plan = build_plan(load("quick.yaml"))
    # 5 seeds x (teacher, student baseline, at, factt, kd, at+kd)
    assert len(plan.runs) == 30
    assert len(plan.teachers) == 5 and len(plan.teacher_of) == 20
    by_col = {c.column: c.runs for c in plan.cells}
    assert set(by_col["teacher"]) == plan.teachers  # the teacher column is the runs students learn from
    for col in ("at", "factt", "kd", "at+kd"):
        for seed, run in enumerate(by_col[col]):
            assert plan.teacher_of[run] == by_col["teacher"][seed]  # student seed s <- teacher seed s
    assert by_col["at"][3] == "fashion-mnist/quick/wrn-16-1/at-from-wrn-16-2-seed3/seed3"


def test_paper_plan_counts_every_run_once():
    plan = build_plan(load("paper.yaml"))
    # Table 1: 6 models' baselines x 5 seeds (WRN-16-2 is a teacher in one row, a student in another;
    # WRN-16-1's baseline serves two rows) + 4 rows x 4 methods x 5 seeds. Ablation: 3 new variants x 5
    # ("all" is Table 1's AT run). Table 2: F_sum, F4_sum, F1_max x 5 (no AT and F2_sum are shared).
    # Table 3: one seed: baseline, min-l2, symmetry, grad-at, kd, at, and its teacher. Table 4: 2 datasets
    # x (student, teacher, kd, at) x 5. Table 5: (student, teacher, at) x 5.
    assert len(plan.runs) == 30 + 80 + 15 + 15 + 7 + 40 + 15 == 202
    assert len(plan.teachers) == 20 + 1 + 10 + 5
    assert len(plan.teacher_of) == 80 + 15 + 15 + 3 + 20 + 5
    cells = {(c.table, c.column): c.runs for c in plan.cells if c.row == "wrn-16-1 <- wrn-16-2"}
    assert cells[("table2", "F2_sum")] == cells[("table1", "at")] == cells[("ablation", "all")]
    assert cells[("table2", "no AT")] == cells[("table1", "student")]


def test_fixed_teacher_seed_and_table_seeds():
    cfg = load("quick.yaml")
    cfg["teacher_seed"] = 0
    plan = build_plan(cfg)
    assert plan.teachers == {"fashion-mnist/quick/wrn-16-2/baseline/seed0"}
    assert len(plan.runs) == 1 + 5 + 20
    cfg["tables"]["table1"]["seeds"] = [7]
    assert len(build_plan(cfg).runs) == 1 + 1 + 4


def test_variant_names_only_what_differs_from_the_config_defaults():
    cfg = load("quick.yaml")
    cfg["tables"]["table1"]["columns"] = [{"label": "F1_max", "method": {"name": "at", "mapping": "max", "p": 1}}]
    plan = build_plan(cfg)
    assert next(iter(plan.teacher_of)).split("/")[3] == "at-mapping=max-p=1-from-wrn-16-2-seed0"


def bad(mutate):
    cfg = load("quick.yaml")
    mutate(cfg)
    return cfg


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c.update(epochs=3), "config: unknown key"),
    (lambda c: c.update(seeds=[]), "seeds"),
    (lambda c: c.update(seeds=[1, 1]), "duplicate seeds"),
    (lambda c: c["tables"]["table1"]["rows"][0].update(student="wrn-16-3x"), r"rows\[0\].student.name"),
    (lambda c: c["tables"]["table1"]["rows"][0].pop("teacher"), "needs a teacher"),
    (lambda c: c["tables"]["table1"]["columns"].append("distill"), "unknown method"),
    (lambda c: c["methods"]["at"].update(beta=-1), "methods.at.beta"),
    (lambda c: c["methods"]["kd"].update(alpha=2), "methods.kd.alpha"),
    (lambda c: c["methods"]["kd"].update(T=0), "methods.kd.T"),
    (lambda c: c["tables"]["table1"].update(recipe="long"), "'long' is not defined"),
    (lambda c: c["datasets"]["fashion-mnist"].update(name="mnist"), "datasets.fashion-mnist.name"),
    (lambda c: c["recipes"]["quick"].update(epochs=0), "recipes.quick.epochs"),
    (lambda c: c["tables"]["table1"]["columns"].append("at"), "duplicate column"),
])
def test_bad_configs_name_the_key(mutate, match):
    with pytest.raises(ConfigError, match=match):
        build_plan(bad(mutate))


def test_missing_dataset_root_is_reported():
    cfg = copy.deepcopy(load("quick.yaml"))
    cfg["datasets"]["fashion-mnist"]["root"] = "/nonexistent/fmnist"
    problems = missing_data(build_plan(cfg))
    assert len(problems) == 1 and "/nonexistent/fmnist" in problems[0]
