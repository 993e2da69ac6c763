import copy
from pathlib import Path

import pytest
import yaml

from atlib.plan import build_plan, missing_data
from atlib.spec import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def test_quick_plan_shares_one_teacher_trained_on_its_own_data():
    plan = build_plan(load("quick.yaml"))
    # 5 seeds x (student baseline, at, factt, kd, at+kd) + one teacher for all of them
    assert len(plan.runs) == 5 * 5 + 1
    assert plan.teachers == {"fmnist-15k/quick-teacher/wrn-16-2/baseline/seed0"}
    assert len(plan.teacher_of) == 20
    by_col = {c.column: c.runs for c in plan.cells}
    assert by_col["teacher"] == ["fmnist-15k/quick-teacher/wrn-16-2/baseline/seed0"]
    # the student's run id names where its teacher learnt: model@dataset@recipe
    assert by_col["at"][3] == "fmnist-1500/quick/wrn-16-1/at-from-wrn-16-2@fmnist-15k@quick-teacher-seed0/seed3"
    teacher = plan.runs[by_col["teacher"][0]]
    assert teacher["dataset"]["train_size"] == 15000 and teacher["recipe"]["epochs"] == 2
    student = plan.runs[by_col["at"][3]]
    assert student["dataset"]["train_size"] == 1500 and student["recipe"]["epochs"] == 8
    assert student["teacher"]["run_dir"] == "results/runs/" + by_col["teacher"][0]


def test_teacher_policy_per_table_and_row():
    cfg = load("quick.yaml")
    table = cfg["tables"]["table1"]
    # back to the students' own data and recipe, one teacher per seed: the old layout and run ids
    for key in ("teacher_dataset", "teacher_recipe"):
        table.pop(key)
    table["rows"][0]["teacher_seed"] = "same"
    plan = build_plan(cfg)
    assert len(plan.runs) == 5 * 6 and len(plan.teachers) == 5
    at = next(c.runs for c in plan.cells if c.column == "at")
    assert at[2] == "fmnist-1500/quick/wrn-16-1/at-from-wrn-16-2-seed2/seed2"
    assert plan.teacher_of[at[2]] == "fmnist-1500/quick/wrn-16-2/baseline/seed2"
    # a teacher dataset that is not defined is named with its row
    table["rows"][0]["teacher_dataset"] = "imagenet-21k"
    with pytest.raises(ConfigError, match=r"rows\[0\].teacher_dataset: 'imagenet-21k' is not defined"):
        build_plan(cfg)


def test_evidence_plan_is_one_teacher_on_all_data_and_five_paired_seeds():
    plan = build_plan(load("evidence.yaml"))
    assert len(plan.runs) == 26
    (teacher,) = plan.teachers
    spec = plan.runs[teacher]
    assert "train_size" not in spec["dataset"]  # every training image
    for cell in plan.cells:
        if cell.column not in ("teacher",):
            assert [r.rsplit("/seed", 1)[1] for r in cell.runs] == ["0", "1", "2", "3", "4"]
            assert all(plan.runs[r]["dataset"]["train_size"] == 4000 for r in cell.runs)


def test_column_models_and_row_method_defaults():
    cfg = load("quick.yaml")
    table = cfg["tables"]["table1"]
    table["columns"] = ["student", "kd", {"label": "at", "method": "at",
                                          "student": {"name": "wrn-16-1"}, "teacher": "wrn-40-1"}]
    table["rows"][0]["methods"] = {"kd": {"T": 2}}
    plan = build_plan(cfg)
    runs = {c.column: c.runs for c in plan.cells}
    assert runs["kd"][0].split("/")[3].startswith("kd-T=2-from-wrn-16-2@")  # the row's T, named in the id
    assert plan.runs[runs["kd"][0]]["method"]["T"] == 2
    assert plan.teacher_of[runs["at"][0]] == "fmnist-15k/quick-teacher/wrn-40-1/baseline/seed0"


def test_paper_plan_counts_every_run_once():
    plan = build_plan(load("paper.yaml"))
    # Table 1: 6 models' baselines x 5 seeds (WRN-16-2 is a teacher in one row, a student in another;
    # WRN-16-1's baseline serves two rows) + 4 rows x 4 methods x 5 seeds. Ablation: 3 new variants x 5
    # ("all" is Table 1's AT run). Table 2: F_sum, F4_sum, F1_max x 5 (no AT and F2_sum are shared).
    # Table 3: one seed: baseline, min-l2, symmetry, grad-at, kd, at, the wide NIN and the new teacher of
    # activation AT. Table 4: 2 datasets x ((student, kd, at) x 5 + one fine-tuned teacher). Table 5:
    # (student, at) x 5 + one given teacher.
    assert len(plan.runs) == 30 + 80 + 15 + 15 + 8 + 32 + 11 == 191
    assert len(plan.teachers) == 20 + 2 + 2 + 1
    assert len(plan.teacher_of) == 80 + 15 + 15 + 3 + 20 + 5
    cells = {(c.table, c.column): c.runs for c in plan.cells if c.row == "wrn-16-1 <- wrn-16-2"}
    assert cells[("table2", "F2_sum")] == cells[("table1", "at")] == cells[("ablation", "all")]
    assert cells[("table2", "no AT")] == cells[("table1", "student")]


def test_paper_setups_as_the_paper_ran_them():
    plan = build_plan(load("paper.yaml"))
    cell = {(c.table, c.row, c.column): c.runs for c in plan.cells}
    nin = "nin-thin <- nin-wide"
    t3 = next(r for (t, r, _) in cell if t == "table3")
    # Table 3: activation AT from a new teacher (BN, no ReLU before pooling) on conv outputs, student too
    (at,) = cell[("table3", t3, "at")]
    teacher = plan.runs[plan.teacher_of[at]]
    assert teacher["model"] == {"name": "nin-wide", "options": {"relu_before_pool": False, "group_outputs": "conv"}}
    assert plan.runs[at]["model"]["options"]["group_outputs"] == "conv"
    # ... while KD and gradient AT keep the wide NIN with BN and ReLU before pooling
    for column in ("kd", "grad-at"):
        (run,) = cell[("table3", t3, column)]
        assert plan.runs[plan.teacher_of[run]]["model"] == {"name": "nin-wide", "options": {}}
    # NIN transfers keep KD's temperature at 1; ResNet/WRN ones raise it to 4
    assert all(plan.runs[r]["method"]["T"] == 1 for r in cell[("table1", nin, "kd")])
    assert "T" not in plan.runs[cell[("table1", "wrn-16-1 <- wrn-16-2", "kd")][0]]["method"]  # the default 4
    # Table 5: a given teacher (evaluated, 0 epochs) and AT added at epoch 60 of 100
    (given,) = cell[("table5", "resnet-18 <- resnet-34", "teacher")]
    assert plan.runs[given]["recipe"]["epochs"] == 0
    assert plan.runs[given]["model"]["options"] == {"pretrained": "imagenet"}
    assert all(plan.runs[r]["method"]["start_epoch"] == 60 for r in cell[("table5", "resnet-18 <- resnet-34", "at")])
    # F-ActT's beta decays in every config
    for name in ("paper.yaml", "quick.yaml", "evidence.yaml"):
        p = build_plan(load(name))
        assert all(p.runs[r]["method"].get("beta_schedule", "linear") == "linear"
                   for c in p.cells if c.column == "factt" for r in c.runs)


def test_fixed_teacher_seed_and_table_seeds():
    cfg = load("quick.yaml")
    cfg["teacher_seed"] = 3
    plan = build_plan(cfg)
    assert plan.teachers == {"fmnist-15k/quick-teacher/wrn-16-2/baseline/seed3"}
    assert len(plan.runs) == 1 + 5 + 20
    cfg["tables"]["table1"]["seeds"] = [7]
    assert len(build_plan(cfg).runs) == 1 + 1 + 4


def test_variant_names_only_what_differs_from_the_config_defaults():
    cfg = load("quick.yaml")
    cfg["tables"]["table1"]["columns"] = [{"label": "F1_max", "method": {"name": "at", "mapping": "max", "p": 1}},
                                          {"label": "late", "method": {"name": "kd", "start_epoch": 4}}]
    plan = build_plan(cfg)
    variants = sorted(r.split("/")[3].split("-from-")[0] for r in plan.teacher_of)
    assert variants == ["at-mapping=max-p=1"] * 5 + ["kd-start_epoch=4"] * 5


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
    (lambda c: c["datasets"]["fmnist-1500"].update(name="mnist"), "datasets.fmnist-1500.name"),
    (lambda c: c["methods"]["kd"].update(start_epoch=-1), "methods.kd.start_epoch"),
    (lambda c: c["tables"]["table1"].update(teacher_seed="each"), "teacher_seed"),
    (lambda c: c["tables"]["table1"]["rows"][0].update(methods={"distill": {}}), "methods.distill: unknown"),
    (lambda c: c["recipes"]["quick"].update(epochs=-1), "recipes.quick.epochs"),
    (lambda c: c["tables"]["table1"]["columns"].append("at"), "duplicate column"),
])
def test_bad_configs_name_the_key(mutate, match):
    with pytest.raises(ConfigError, match=match):
        build_plan(bad(mutate))


def test_missing_dataset_root_is_reported():
    cfg = copy.deepcopy(load("quick.yaml"))
    cfg["datasets"]["fmnist-1500"]["root"] = "/nonexistent/fmnist"
    problems = missing_data(build_plan(cfg))
    assert len(problems) == 1 and "/nonexistent/fmnist" in problems[0]


def test_plan_output_dir_is_results_name_from_where_it_runs(tmp_path, monkeypatch, capsys):
    from atlib.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "mine", "results": "out", "seeds": [0], "datasets": {"synthetic": {"name": "synthetic"}},
        "tables": {"t": {"title": "T", "dataset": "synthetic", "recipe": "paper", "columns": ["student"],
                         "rows": [{"student": "wrn-10-1"}]}}}))
    monkeypatch.chdir(tmp_path)  # what make reproduce does for WORKDIR
    assert main(["plan", "--output-dir", str(config)]) == 0
    assert capsys.readouterr().out == f"{tmp_path.resolve() / 'out' / 'mine'}\n"
