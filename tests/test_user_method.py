"""A user's method by import path (tests/user_method.py): planned through the real schema, trained end to end,
and a bad path refused in one line before any compute."""

import copy

import pytest
import torch
import yaml
from conftest import ROOT

from atlib import method as registry
from atlib.engine import train
from atlib.errors import ConfigError
from atlib.method import Method
from atlib.plan import build_plan, validate_config
from atlib.spec import RunSpec

PATH = "user_method:LogitMatch"


@pytest.fixture
def config():
    cfg = yaml.safe_load((ROOT / "tests/configs/synthetic.yaml").read_text())
    cfg["seeds"] = [0]
    cfg["tables"]["table1"]["columns"] = ["student", {"label": "mine", "method": {"name": PATH, "beta": 0.5}}]
    return cfg


@pytest.fixture(autouse=True)
def forget_user_methods():
    """Each test loads the method itself: the registry is as the package left it."""
    before = dict(registry.REGISTRY)
    yield
    registry.REGISTRY.clear()
    registry.REGISTRY.update(before)


def quiet(_: str) -> None:
    pass


def test_a_method_by_import_path_is_planned_and_trains_end_to_end(config, tmp_path):
    validate_config(config)  # the real schema, as the CLI and the DAG load it
    plan = build_plan(config)
    # beta differs from the class's default (1.0), so the run id names it; its path loses the colon there
    student = "synthetic/tiny/wrn-10-1/user_method.LogitMatch-beta=0.5-from-wrn-10-2-seed0/seed0"
    teacher = plan.teacher_of[student]
    assert teacher == "synthetic/tiny/wrn-10-2/baseline/seed0"
    spec = RunSpec.from_dict(plan.runs[student])
    assert type(spec.method).__module__ == "user_method" and spec.method.name == PATH
    # what a job reads back: the spec round-trips through its dict (metrics.json's config) to the same method
    assert RunSpec.from_dict(spec.to_dict()).method == spec.method

    def tiny(run: dict) -> dict:  # two steps an epoch, one epoch, no MLflow
        run = copy.deepcopy(run)
        run["dataset"].update(synthetic_train=64, synthetic_test=32)
        run["recipe"].update(epochs=1, batch_size=32)
        run["tracking"] = {"enabled": False}
        return run

    teacher_run = tiny(plan.runs[teacher])
    train(RunSpec.from_dict(teacher_run), tmp_path / "teacher", quiet)
    student_run = tiny(plan.runs[student])
    student_run["teacher"]["run_dir"] = str(tmp_path / "teacher")
    m = train(RunSpec.from_dict(student_run), tmp_path / "student", quiet)
    (row,) = m["history"]
    assert m["method"] == PATH and m["config"]["method"] == {"name": PATH, "beta": 0.5}
    # the loss is the method's own: CE + beta x the logits' distance, both logged as its terms (epoch means)
    assert row["train_loss"] == pytest.approx(row["loss/ce"] + 0.5 * row["loss/match"], rel=1e-5)
    assert row["loss/match"] > 0 and torch.isfinite(torch.tensor(m["final_test_error"]))


@pytest.mark.parametrize("name, match", [
    ("no_such_module:LogitMatch", r"cannot import 'no_such_module' for method no_such_module:LogitMatch .*"
                                  r"expected package.module:Class"),
    ("user_method:Missing", r"user_method:Missing is nothing; expected package.module:Class"),
    ("user_method:not_a_method", r"user_method:not_a_method is a function; expected package.module:Class"),
    ("user_method:NoLoss", r"user_method:NoLoss defines no loss"),
    ("user_method:Misnamed", r"sets name = 'logit-match'; a method by import path is named by its path"),
])
def test_a_bad_path_is_one_line_naming_the_key_before_any_compute(config, name, match):
    config["methods"] = {name: {}}
    validate_config(config)  # a path of the right form passes the schema: what it leads to is the plan's check
    with pytest.raises(ConfigError, match=match) as e:
        build_plan(config)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"methods.{name}: ")


def test_a_malformed_path_is_refused_by_the_schema_saying_what_is_expected(config):
    config["tables"]["table1"]["columns"][1]["method"]["name"] = "user_method:"
    with pytest.raises(ConfigError, match=r"^tables.table1.columns\[1\].method.name: 'user_method:' does not match "
                                          r".*; expected a method of your own, package.module:Class$"):
        validate_config(config)


def test_a_method_by_path_checks_its_parameters_as_a_registered_one():
    with pytest.raises(ConfigError, match=r"^method.beta: expected a number >= 0, got -1$"):
        Method.from_config({"name": PATH, "beta": -1})
    with pytest.raises(ConfigError, match="takes no parameter"):
        Method.from_config({"name": PATH, "T": 2})
