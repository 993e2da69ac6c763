"""The validation split and the convergence rule's longer runs, as a study plans them."""

import copy

import pytest
import torch

from atlib.data import load, per_class_indices, training_indices
from atlib.engine import train
from atlib.errors import ConfigError
from atlib.plan import build_plan
from atlib.spec import DataConfig, RunSpec

SYN = {"name": "synthetic", "synthetic_train": 300, "synthetic_test": 40, "size": 8}


def labels() -> torch.Tensor:
    return torch.arange(300) % 10  # 30 of each class, interleaved


def indices(seed, per_class=12, held=5):
    cfg = DataConfig.from_config({**SYN, "per_class": per_class, "subset_seed": seed, "validation_per_class": held})
    return training_indices(cfg, labels(), 10, "test")


def test_validation_is_disjoint_from_every_training_subset_and_the_same_for_every_seed():
    held = {tuple(indices(s)[1].tolist()) for s in range(20)}
    assert len(held) == 1  # one fixed draw whatever the run's seed
    val = set(next(iter(held)))
    assert len(val) == 50 and all(sum(labels()[i] == c for i in val) == 5 for c in range(10))
    for s in range(20):
        train_idx = set(indices(s)[0].tolist())
        assert len(train_idx) == 120 and not train_idx & val
    # 30 images a class: 5 held out, so 25 left for 12 per class; seeds draw different subsets
    assert len({tuple(indices(s)[0].tolist()) for s in range(20)}) == 20


def test_a_subset_is_stable_per_seed():
    assert torch.equal(indices(3)[0], indices(3)[0])


def test_the_full_training_set_less_validation():
    cfg = DataConfig.from_config({**SYN, "validation_per_class": 5})
    keep, held = training_indices(cfg, labels(), 10, "test")
    assert len(keep) == 250 and sorted(keep.tolist() + held.tolist()) == list(range(300))


def test_without_validation_the_subsets_are_as_before():
    cfg = DataConfig.from_config({**SYN, "per_class": 12, "subset_seed": 4})
    keep, held = training_indices(cfg, labels(), 10, "test")
    assert held is None and torch.equal(keep, per_class_indices(labels(), 10, 12, 4, "test"))


def test_too_few_images_for_validation_and_training_name_the_key():
    with pytest.raises(ConfigError, match="per_class: 26 requested"):
        indices(0, per_class=26)  # 30 - 5 held out = 25 of each class


def test_validation_needs_an_in_memory_dataset():
    with pytest.raises(ConfigError, match="validation_per_class: not used by dataset 'imagefolder'"):
        DataConfig.from_config({"name": "imagefolder", "root": "x", "validation_per_class": 5})


def test_a_run_reports_its_validation_error_at_each_evaluation(tmp_path):
    data = {**SYN, "validation_per_class": 4}
    spec = RunSpec.from_dict({"run_id": "v", "dataset": data, "model": "wrn-10-1", "seed": 0, "threads": 1,
                              "recipe": {"epochs": 2, "eval_every": 1, "batch_size": 64, "augment": "flip"},
                              "tracking": {"enabled": False}})
    m = train(spec, tmp_path, lambda _: None)
    assert [("validation_error" in h) for h in m["history"]] == [True, True]
    # by hand: the saved student's top-1 error on the 40 held-out images
    from atlib.models import build_model
    source = load(DataConfig.from_config(data))
    model = build_model("wrn-10-1", 1, 10)
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"])
    model.eval()
    with torch.no_grad():
        logits, _ = model(source.normalise(source.val_x))
    wrong = int((logits.argmax(1) != source.val_y).sum())
    assert m["final_validation_error"] == pytest.approx(100 * wrong / 40)


STUDY = {
    "name": "s", "seeds": [0, 1, 2], "teacher_seed": 0,
    "datasets": {"d": {**SYN, "per_class": 5, "subset_seed": "run", "validation_per_class": 2}, "all": SYN},
    "recipes": {"r": {"epochs": 10, "eval_every": 5, "augment": "flip"}, "t": {"epochs": 3}},
    "convergence": {"seeds": [0, 2], "factor": 3, "tolerance": 0.5},
    "tables": {"x": {"dataset": "d", "recipe": "r", "teacher_dataset": "all", "teacher_recipe": "t",
                     "columns": ["student", "at", "teacher"],
                     "rows": [{"student": "wrn-10-1", "teacher": "wrn-10-2"}]}},
}


def test_convergence_plans_longer_runs_of_its_seeds_for_every_column_but_the_teacher():
    plan = build_plan(STUDY)
    runs = plan.convergence.runs
    assert sorted(c for _, _, c in runs) == ["at", "student"]
    # 3 seeds x (student, at) + one teacher + 2 seeds x 2 columns longer
    assert len(plan.runs) == 3 * 2 + 1 + 2 * 2
    for pairs in runs.values():
        assert [s for s, _, _ in pairs] == [0, 2]
        for seed, planned, longer in pairs:
            a, b = plan.runs[planned], plan.runs[longer]
            assert (b["recipe"]["epochs"], b["recipe"]["eval_every"]) == (30, 15)
            assert a["dataset"] == b["dataset"] and a["seed"] == b["seed"] == seed
            assert a.get("teacher") == b.get("teacher")  # the same teacher, not one trained longer


def test_convergence_seeds_must_be_the_tables_seeds():
    bad = copy.deepcopy(STUDY)
    bad["convergence"]["seeds"] = [0, 5]
    with pytest.raises(ConfigError, match=r"convergence.seeds: \[5\] are not seeds of table 'x'"):
        build_plan(bad)


def test_a_trend_claim_names_tables_and_columns():
    cfg = copy.deepcopy(STUDY)
    cfg["tables"]["y"] = copy.deepcopy(cfg["tables"]["x"])
    cfg["claims"] = {"trends": [{"column": "at", "over": "student", "larger_in": "x", "than_in": "y"}]}
    assert build_plan(cfg).claims.trends[0].larger_in == "x"
    cfg["claims"]["trends"][0]["over"] = "kd"
    with pytest.raises(ConfigError, match="claims.trends\\[0\\].over: expected a column of table 'x'"):
        build_plan(cfg)


def test_convergence_needs_a_validation_split():
    bad = copy.deepcopy(STUDY)
    del bad["datasets"]["d"]["validation_per_class"]
    with pytest.raises(ConfigError, match="convergence: table 'x' trains on dataset 'd', which has no validation"):
        build_plan(bad)
