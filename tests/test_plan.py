import copy
from pathlib import Path

import pytest
import torch
import yaml

from atlib.errors import ConfigError
from atlib.plan import build_plan, missing_data

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    """A config of config/, or of tests/configs/ ("table1-fmnist.yaml": the planner's fixed Table 1 layout)."""
    folder = ROOT / "tests" / "configs" if (ROOT / "tests" / "configs" / name).is_file() else ROOT / "config"
    return yaml.safe_load((folder / name).read_text())


def test_quick_plan_is_the_few_shot_studys_slice_with_its_runs():
    quick, study = build_plan(load("quick.yaml")), build_plan(load("fewshot2.yaml"))
    # 5 seeds x (student, at, kd, at+kd) + one teacher for all of them
    assert len(quick.runs) == 5 * 4 + 1
    assert quick.teachers == {"fmnist2-58k/teacher-12epochs/wrn-16-2/baseline/seed0"}
    assert set(quick.shipped) == quick.teachers  # the study's teacher comes as a file
    # the same ids with the same specs: a slice reuses the study's runs instead of training others
    assert all(study.runs[run_id] == spec for run_id, spec in quick.runs.items())


def test_table1_plan_shares_one_teacher_trained_on_its_own_data():
    plan = build_plan(load("table1-fmnist.yaml"))
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
    cfg = load("table1-fmnist.yaml")
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
    cfg = load("table1-fmnist.yaml")
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
    # Table 3: one seed: baseline, min-l2, symmetry, grad-at, kd, at and the new teacher of activation AT
    # (KD and grad-AT learn from Table 1's wide NIN). Table 4: 2 datasets x ((student, kd, at) x 5 + one
    # fine-tuned teacher). Table 5: (student, at) x 5 + one given teacher.
    assert len(plan.runs) == 30 + 80 + 15 + 15 + 7 + 32 + 11 == 190
    assert len(plan.teachers) == 20 + 1 + 2 + 1
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
    t5 = "preresnet-18 <- resnet-34"
    (given,) = cell[("table5", t5, "teacher")]
    assert plan.runs[given]["recipe"]["epochs"] == 0
    assert plan.runs[given]["model"]["options"] == {"pretrained": "imagenet"}
    assert all(plan.runs[r]["method"]["start_epoch"] == 60 for r in cell[("table5", t5, "at")])
    assert plan.tables["table5"]["paper_rows"] == ["resnet-18 <- resnet-34"]  # the paper's row it sits beside
    # F-ActT's beta decays in every config
    for name in ("paper.yaml", "quick.yaml", "evidence.yaml"):
        p = build_plan(load(name))
        assert all(p.runs[r]["method"].get("beta_schedule", "linear") == "linear"
                   for c in p.cells if c.column == "factt" for r in c.runs)


def test_fixed_teacher_seed_and_table_seeds():
    cfg = load("table1-fmnist.yaml")
    cfg["teacher_seed"] = 3
    plan = build_plan(cfg)
    assert plan.teachers == {"fmnist-15k/quick-teacher/wrn-16-2/baseline/seed3"}
    assert len(plan.runs) == 1 + 5 + 20
    cfg["tables"]["table1"]["seeds"] = [7]
    assert len(build_plan(cfg).runs) == 1 + 1 + 4


def test_variant_names_only_what_differs_from_the_config_defaults():
    cfg = load("table1-fmnist.yaml")
    cfg["tables"]["table1"]["columns"] = [{"label": "F1_max", "method": {"name": "at", "mapping": "max", "p": 1}},
                                          {"label": "late", "method": {"name": "kd", "start_epoch": 4}}]
    plan = build_plan(cfg)
    variants = sorted(r.split("/")[3].split("-from-")[0] for r in plan.teacher_of)
    assert variants == ["at-mapping=max-p=1"] * 5 + ["kd-start_epoch=4"] * 5


def bad(mutate):
    cfg = load("table1-fmnist.yaml")
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
    (lambda c: c["recipes"]["quick"].update(init="xavier"), "recipes.quick.init: expected one of torch, authors, fb"),
    (lambda c: c["recipes"]["quick"].update(precision="fp16"), "recipes.quick.precision: expected one of bf16, fp32"),
    (lambda c: c["recipes"]["quick"].update(freeze_stem="yes"), "recipes.quick.freeze_stem"),
    (lambda c: c["recipes"]["quick"].update(momentum_reset=0), "recipes.quick.momentum_reset: expected true or false"),
    (lambda c: c["recipes"]["quick"].update(reported="last"), "recipes.quick.reported: expected one of final, best"),
    (lambda c: c["methods"].update(symmetry={"output_beta": -1}), "methods.symmetry.output_beta: expected a number"),
    (lambda c: c["tables"]["table1"]["columns"].append("at"), "duplicate column"),
])
def test_bad_configs_name_the_key(mutate, match):
    with pytest.raises(ConfigError, match=match):
        build_plan(bad(mutate))


def test_missing_dataset_root_is_reported():
    cfg = copy.deepcopy(load("table1-fmnist.yaml"))
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


# --- docs/paper-setups.md's setup table, checked against the plan of config/paper.yaml ------------------

def documented_setups() -> list[str]:
    """The first cell of every row of docs/paper-setups.md's table of config/paper.yaml's setups."""
    text = (ROOT / "docs/paper-setups.md").read_text()
    table = text.split("| setup | value | why |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    return [line.split("|")[1].strip() for line in table.splitlines()]


class Paper:
    """The plan of config/paper.yaml as the CLI and the DAG load it (schema, then plan), and its run specs."""

    def __init__(self) -> None:
        from atlib.plan import load_plan
        from atlib.spec import RunSpec

        self.plan = load_plan(str(ROOT / "config/paper.yaml"))
        self.specs = {r: RunSpec.from_dict(s) for r, s in self.plan.runs.items()}
        self.cells = {(c.table, c.row, c.column): c.runs for c in self.plan.cells}

    def runs(self, table: str, *columns: str, row: str | None = None) -> list[str]:
        out = [r for (t, rw, c), runs in self.cells.items() for r in runs
               if t == table and (not columns or c in columns) and row in (None, rw)]
        assert out, (table, columns, row)
        return out

    def teacher(self, run: str):
        return self.specs[self.plan.teacher_of[run]]

    def row(self, table: str) -> str:
        (label,) = {rw for (t, rw, _) in self.cells if t == table}
        return label


@pytest.fixture(scope="module")
def paper() -> Paper:
    return Paper()


def drop_epochs(recipe) -> list[int]:
    """The 1-based epochs at whose start the learning rate drops."""
    return [e + 1 for e in range(recipe.epochs) if recipe.drops_at(e)]


def cifar_specs(p: Paper) -> list:
    return [s for s in p.specs.values() if s.dataset.name == "cifar10"]


def check_lr_drops(p: Paper) -> None:
    cifar = cifar_specs(p)
    assert len(cifar) == 30 + 80 + 15 + 15 + 7
    for s in cifar:
        assert (s.recipe.epochs, s.recipe.lr, s.recipe.gamma) == (200, 0.1, 0.2)
        assert drop_epochs(s.recipe) == [60, 120, 160]
        assert [e + 1 for e in range(200) if s.recipe.resets_momentum(e)] == [60, 120, 160]


def check_cifar_momentum(p: Paper) -> None:
    assert {(s.recipe.momentum, s.recipe.nesterov, s.recipe.momentum_reset) for s in cifar_specs(p)} == {
        (0.9, False, True)}


def check_augmentation(p: Paper) -> None:
    def with_teachers(runs: list[str]) -> list[str]:
        return runs + [p.plan.teacher_of[r] for r in runs if r in p.plan.teacher_of]

    for table in ("table1", "table2", "ablation"):
        assert {p.specs[r].recipe.augment for r in with_teachers(p.runs(table))} == {"crop+flip"}
    assert {p.specs[r].recipe.augment for r in p.runs("table3")} == {"flip"}
    assert {p.specs[r].recipe.augment for r in with_teachers(p.runs("table4"))} == {"scale+crop+flip"}


def check_table3_recipe(p: Paper) -> None:
    for r in p.runs("table3"):
        recipe = p.specs[r].recipe
        assert (recipe.weight_decay, recipe.augment, recipe.epochs, recipe.lr) == (0.0, "flip", 200, 0.1)


def check_table4_recipe(p: Paper) -> None:
    for r in p.runs("table4"):
        recipe = p.specs[r].recipe
        assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.weight_decay, recipe.gamma) == (
            40, 64, 0.01, 1e-4, 0.1)
        assert drop_epochs(recipe) == [20, 30]


def table5_students(p: Paper) -> list:
    return [p.specs[r] for r in p.runs("table5", "student", "at")]


def check_table5_recipe(p: Paper) -> None:
    students = table5_students(p)
    assert len(students) == 10
    for s in students:
        r = s.recipe
        assert (r.epochs, r.batch_size, r.lr, r.weight_decay, r.gamma) == (100, 256, 0.1, 1e-4, 0.1)
        # train.lua's learningRate for ImageNet: LR * 0.1^floor((epoch - 1) / 30), 1-based epochs
        assert [r.lr_at(e) for e in range(100)] == pytest.approx([0.1 * 0.1 ** ((e - 1) // 30) for e in range(1, 101)])
        assert drop_epochs(r) == [31, 61, 91]


def check_table5_model(p: Paper) -> None:
    from atlib.models import build_model, num_parameters

    assert {(s.model.name, tuple(s.model.options)) for s in table5_students(p)} == {("preresnet-18", ())}
    assert {s.method.groups for s in table5_students(p) if s.method.name == "at"} == {(2, 3)}
    # preresnet.lua's ResNet-18 for ImageNet, counted by hand in tests/test_models.py
    assert num_parameters(build_model("preresnet-18", 3, 1000)) == 11_687_720


def check_table5_momentum(p: Paper) -> None:
    for s in table5_students(p):
        assert (s.recipe.momentum, s.recipe.nesterov, s.recipe.momentum_reset) == (0.9, True, False)
        assert not any(s.recipe.resets_momentum(e) for e in range(100))


def check_table5_augmentation(p: Paper) -> None:
    assert {(s.recipe.augment, s.dataset.name) for s in table5_students(p)} == {
        ("crop+jitter+lighting+flip", "imagefolder")}


def check_table5_init(p: Paper) -> None:
    assert {s.recipe.init for s in table5_students(p)} == {"fb"}


def check_table5_reported(p: Paper) -> None:
    from atlib.tables import shown_metrics

    assert {s.recipe.reported for s in table5_students(p)} == {"best"}
    assert shown_metrics(p.plan, "table5") == ["top1", "top5", "top1 best", "top5 best"]
    for table in set(p.plan.tables) - {"table5"}:  # every other table: the final epoch alone
        assert shown_metrics(p.plan, table) == ["top1"]


def check_init(p: Paper) -> None:
    trained = [s for s in p.specs.values() if s.recipe.epochs > 0]
    assert len(trained) == 190 - 1  # all but the given teacher
    assert {s.recipe.init for s in trained if s not in table5_students(p)} == {"authors"}
    for name in ("quick.yaml", "evidence.yaml"):  # the CPU configs keep PyTorch's: their specs do not change
        assert all("init" not in spec["recipe"] for spec in build_plan(load(name)).runs.values())


def check_precision(p: Paper) -> None:
    assert {s.recipe.precision for s in p.specs.values()} == {"fp32"}
    for name in ("quick.yaml", "evidence.yaml"):
        assert all("precision" not in spec["recipe"] for spec in build_plan(load(name)).runs.values())


def check_factt_beta(p: Paper) -> None:
    for r in p.runs("table1", "factt"):
        m = p.specs[r].method
        assert (m.beta, m.beta_schedule) == (1000, "linear") and m.beta_at(0.5) == 500


def check_factt_weight(p: Paper) -> None:
    from atlib.methods.factt import factt_loss

    assert {p.specs[r].method.form for r in p.runs("table1", "factt")} == {"code"}
    # one sample, C = 4 channels of 1x2: s and t one-hot in different elements, normalised difference +-1 in two
    # of the 8 elements: the mean of the squares is 2/8, where a sum would give 2
    s, t = torch.zeros(1, 4, 1, 2), torch.zeros(1, 4, 1, 2)
    s[0, 0, 0, 0], t[0, 3, 0, 1] = 1.0, 1.0
    assert factt_loss(s, t, "code").item() == pytest.approx(2 / 8)


def check_symmetry_outputs(p: Paper) -> None:
    (r,) = p.runs("table3", "symmetry")
    m = p.specs[r].method
    assert (m.name, m.beta, m.output_beta, m.form) == ("symmetry", 1000, 1, "code")


def check_at_kd_beta(p: Paper) -> None:
    for r in p.runs("table1", "at+kd"):
        m = p.specs[r].method
        assert (m.beta, m.beta_schedule) == (1000, "linear") and m.beta_at(0.75) == 250


def check_at_beta(p: Paper) -> None:
    runs = p.runs("table1", "at") + p.runs("ablation") + p.runs("table3", "at") + p.runs("table4", "at")
    for r in runs + p.runs("table5", "at"):
        m = p.specs[r].method
        assert (m.beta, m.beta_schedule, m.mapping, m.p) == (1000, "constant", "sum", 2)
    # Table 2 varies the mapping on purpose, each column as its label says
    for label, mapping in {"F_sum": ("sum", 1), "F2_sum": ("sum", 2), "F4_sum": ("sum", 4),
                           "F1_max": ("max", 1)}.items():
        assert {(p.specs[r].method.mapping, p.specs[r].method.p) for r in p.runs("table2", label)} == {mapping}


def check_kd_temperature(p: Paper) -> None:
    kd = p.runs("table1", "kd", "at+kd") + p.runs("table3", "kd") + p.runs("table4", "kd")
    assert len(kd) == 4 * 2 * 5 + 1 + 2 * 5
    for r in kd:
        s = p.specs[r]
        assert (s.method.T, s.method.alpha) == ((1, 0.9) if s.model.name.startswith("nin") else (4, 0.9)), r


def check_gradient_beta(p: Paper) -> None:
    for r in p.runs("table3", "min-l2", "grad-at", "symmetry"):
        assert (p.specs[r].method.beta, p.specs[r].method.form) == (1000, "code")


def check_at_groups(p: Paper) -> None:
    assert {p.specs[r].method.groups for r in p.runs("table1", "at")} == {None}  # every group
    assert {p.specs[r].method.groups for r in p.runs("ablation", "all")} == {None}
    for i in range(3):
        assert {p.specs[r].method.groups for r in p.runs("ablation", f"group{i + 1}")} == {(i,)}
    assert {p.specs[r].method.groups for r in p.runs("table4", "at") + p.runs("table5", "at")} == {(2, 3)}
    nin = p.runs("table1", "at", row="nin-thin <- nin-wide")
    assert {p.specs[r].model.options.get("group_outputs", "pool") for r in nin} == {"pool"}


def check_cifar_teachers(p: Paper) -> None:
    for table in ("table1", "table2", "ablation"):
        for r in p.runs(table):
            if r not in p.plan.teacher_of:
                continue
            s = p.specs[r]
            # the row's teacher model, trained as a baseline with the students' recipe and the student's seed
            assert p.plan.teacher_of[r] == f"cifar10/paper/{s.teacher.model.slug}/baseline/seed{s.seed}"


def check_table3_teacher(p: Paper) -> None:
    teacher = "cifar10/paper/nin-wide/baseline/seed0"
    assert teacher in p.runs("table1", "teacher", row="nin-thin <- nin-wide")  # Table 1's NIN-wide run itself
    for r in p.runs("table3", "kd", "grad-at"):
        assert p.plan.teacher_of[r] == teacher


def check_table3_at(p: Paper) -> None:
    (at,) = p.runs("table3", "at")
    assert p.plan.teacher_of[at] == "cifar10/paper/nin-wide-group_outputs=conv-relu_before_pool=false/baseline/seed0"
    teacher = p.teacher(at)
    assert (teacher.model.name, teacher.model.options) == ("nin-wide", {"relu_before_pool": False,
                                                                         "group_outputs": "conv"})
    assert teacher.recipe == p.specs["cifar10/paper/nin-wide/baseline/seed0"].recipe  # Table 1's recipe
    assert p.specs[at].model.options == {"batchnorm": False, "relu_before_pool": False, "group_outputs": "conv"}
    for r in p.runs("table3", "kd", "grad-at"):  # the others keep BN and ReLU before pooling
        assert p.teacher(r).model.options == {}


def check_table3_student(p: Paper) -> None:
    for r in p.runs("table3"):
        model = p.specs[r].model
        assert model.name == "nin-thin"
        assert (model.options["batchnorm"], model.options["relu_before_pool"]) == (False, False)


def check_nin(p: Paper) -> None:
    from atlib.models import build_model, num_parameters

    nin = p.runs("table1", "student", "at", "factt", "kd", "at+kd", row="nin-thin <- nin-wide")
    assert {p.specs[r].model.slug for r in nin} == {"nin-thin"}  # BN, ReLU before pooling, pooled outputs
    assert {p.teacher(r).model.slug for r in nin if r in p.plan.teacher_of} == {"nin-wide"}
    assert {p.specs[r].model.slug for r in p.runs("table1", "teacher", row="nin-thin <- nin-wide")} == {"nin-wide"}
    wide, thin = build_model("nin-wide", 3, 10), build_model("nin-thin", 3, 10)
    assert (num_parameters(wide), num_parameters(thin)) == (1_005_642, 206_640)
    for pool in (wide.pool1, wide.pool2):
        assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True)


def check_table4_freezing(p: Paper) -> None:
    runs = p.runs("table4")
    for r in runs + [p.plan.teacher_of[r] for r in runs if r in p.plan.teacher_of]:
        recipe = p.specs[r].recipe
        assert (recipe.freeze_bn, recipe.freeze_groups, recipe.freeze_stem) == (True, (0,), False)


def check_table4_teacher(p: Paper) -> None:
    for ds in ("scenes", "cub"):
        runs = p.runs("table4", "kd", "at", row=ds)
        assert sorted(p.specs[r].seed for r in runs) == sorted([0, 1, 2, 3, 4] * 2)
        assert {p.plan.teacher_of[r] for r in runs} == {f"{ds}/finetune/resnet-34-pretrained=imagenet/baseline/seed0"}
        teacher = p.teacher(runs[0])
        assert teacher.model.options == {"pretrained": "imagenet"} and teacher.recipe.epochs == 40


def check_table5_teacher(p: Paper) -> None:
    runs = p.runs("table5", "at")
    assert {p.plan.teacher_of[r] for r in runs} == {"imagenet/given/resnet-34-pretrained=imagenet/baseline/seed0"}
    teacher = p.teacher(runs[0])
    assert teacher.recipe.epochs == 0 and teacher.model.options == {"pretrained": "imagenet"}


def check_table5_start_epoch(p: Paper) -> None:
    for r in p.runs("table5", "at"):
        s = p.specs[r]
        assert s.method.start_epoch == 60
        first = next(e for e in range(s.recipe.epochs) if s.method.transfers(e))
        assert first + 1 == 60 == drop_epochs(s.recipe)[1] - 1  # one epoch before fb's second drop


def check_table4_paper_numbers(p: Paper) -> None:
    from atlib.paper import PAPER, paper_value

    assert p.plan.tables["table4"]["paper"] == "table4"
    assert all(paper_value("table4", row, col).show().endswith("†") for row, cols in PAPER["table4"].items()
               for col in cols)


SETUP_CHECKS = {
    "learning-rate drops": check_lr_drops,
    "CIFAR momentum": check_cifar_momentum,
    "augmentation": check_augmentation,
    "Table 3 recipe": check_table3_recipe,
    "Table 4 recipe": check_table4_recipe,
    "Table 5 recipe": check_table5_recipe,
    "Table 5 model": check_table5_model,
    "Table 5 momentum": check_table5_momentum,
    "Table 5 augmentation": check_table5_augmentation,
    "Table 5 initialisation": check_table5_init,
    "Table 5 reported epoch": check_table5_reported,
    "initialisation": check_init,
    "precision": check_precision,
    "F-ActT β": check_factt_beta,
    "F-ActT weight per element": check_factt_weight,
    "AT+KD β": check_at_kd_beta,
    "AT β": check_at_beta,
    "KD temperature": check_kd_temperature,
    "β of grad-AT, symmetry norm, min-l2": check_gradient_beta,
    "symmetry norm's output term": check_symmetry_outputs,
    "AT groups": check_at_groups,
    "teachers of Tables 1, 2 and the ablation": check_cifar_teachers,
    "Table 3 KD and grad-AT teacher": check_table3_teacher,
    "Table 3 activation AT": check_table3_at,
    "Table 3 student": check_table3_student,
    "NIN": check_nin,
    "Table 4 freezing": check_table4_freezing,
    "Table 4 teacher": check_table4_teacher,
    "Table 5 teacher": check_table5_teacher,
    "Table 5 start epoch": check_table5_start_epoch,
    "Table 4 paper numbers": check_table4_paper_numbers,
}


def test_every_row_of_the_documented_setup_table_has_a_check():
    assert documented_setups() == list(SETUP_CHECKS)


@pytest.mark.parametrize("setup", documented_setups())
def test_paper_plan_carries_the_documented_setup(paper, setup):
    SETUP_CHECKS[setup](paper)


def test_atlib_plan_counts_runs_in_words(capsys):
    """config/quick.yaml by hand: one teacher (teacher_seed 0); five seeds of the student baseline and of AT,
    KD and AT+KD, the last three distilled: 1 + 5 + 15 = 21 runs, in one table."""
    from atlib import cli

    assert cli.main(["plan", str(ROOT / "config/quick.yaml")]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 21
    assert err.splitlines()[-1] == "21 runs (1 teacher, 15 distilled students), 1 table"


def test_the_quick_setup_the_readme_states_is_the_planned_one():
    """README: the study's WRN-16-2 teacher (12 epochs on 58,000 Fashion-MNIST images, 2,000 held out), shipped as a
    file; WRN-16-1 students on 10 images per class, plain and under AT, KD and AT+KD, five paired seeds, every
    student taught by the one teacher."""
    plan = build_plan(yaml.safe_load((ROOT / "config/quick.yaml").read_text()))
    specs = list(plan.runs.values())
    [teacher] = [s for s in specs if s["model"]["name"] == "wrn-16-2"]
    assert teacher["dataset"] == {"name": "fashion-mnist", "validation_per_class": 200}
    assert teacher["recipe"]["epochs"] == 12 and set(plan.shipped) == {teacher["run_id"]}
    students = [s for s in specs if s["model"]["name"] == "wrn-16-1"]
    assert {(s["method"]["name"], s["seed"]) for s in students} == {
        (m, seed) for m in ("baseline", "at", "kd", "at+kd") for seed in range(5)}
    assert all(s["dataset"]["name"] == "fashion-mnist" and s["dataset"]["per_class"] == 10 for s in students)
    assert {s["teacher"]["run_dir"] for s in students if s.get("teacher")} == {plan.run_dir(teacher["run_id"])}
