"""A run that comes as files: checked by SHA-256 and its settings, put in place before the DAG, never retrained."""

import copy
import json

import pytest

from atlib import preflight
from atlib.engine import train
from atlib.errors import ConfigError
from atlib.plan import build_plan
from atlib.rundir import finished, sha256
from atlib.spec import RunSpec

CONFIG = {
    "name": "s", "seeds": [0], "results": "RESULTS",
    "datasets": {"d": {"name": "synthetic", "synthetic_train": 64, "synthetic_test": 32, "size": 8}},
    "recipes": {"r": {"epochs": 1, "batch_size": 32}},
    "tables": {"t": {"dataset": "d", "recipe": "r", "columns": ["student", "kd", "teacher"],
                     "rows": [{"student": "wrn-10-1", "teacher": "wrn-10-2"}]}},
}
TEACHER = "d/r/wrn-10-2/baseline/seed0"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The teacher trained from its planned spec, as a config would ship it."""
    folder = tmp_path_factory.mktemp("shipped")
    spec = build_plan({**CONFIG, "results": str(folder / "elsewhere")}).runs[TEACHER]
    train(RunSpec.from_dict({**spec, "tracking": {"enabled": False}}), folder, lambda _: None)
    return folder


def config(tmp_path, shipped, sha=None) -> dict:
    cfg = copy.deepcopy(CONFIG) | {"results": str(tmp_path / "results")}
    cfg["shipped"] = {TEACHER: {"from": str(shipped), "sha256": sha or sha256(shipped / "model.pt")}}
    return cfg


def test_a_shipped_run_is_put_in_place_as_finished(tmp_path, shipped):
    plan = build_plan(config(tmp_path, shipped))
    assert preflight.install_shipped(plan) == []
    placed = finished(plan.run_dir(TEACHER))
    assert placed is not None and placed["mlflow_run_id"] is None  # the store it came from is not this one
    assert sha256(f"{plan.run_dir(TEACHER)}/model.pt") == sha256(shipped / "model.pt")
    assert placed["final_test_error"] == json.loads((shipped / "metrics.json").read_text())["final_test_error"]


def test_the_planned_spec_trains_the_shipped_model_bit_for_bit(tmp_path, shipped):
    plan = build_plan(config(tmp_path, shipped))
    again = train(RunSpec.from_dict({**plan.runs[TEACHER], "tracking": {"enabled": False}}), tmp_path / "again",
                  lambda _: None)
    assert again["checkpoint_sha256"] == sha256(shipped / "model.pt")


def test_a_wrong_sha256_refuses_in_one_line_and_copies_nothing(tmp_path, shipped):
    plan = build_plan(config(tmp_path, shipped, sha="0" * 64))
    [problem] = preflight.install_shipped(plan)
    assert problem.startswith(f"shipped.{TEACHER}.sha256: ") and "the config expects 000000000000..." in problem
    assert finished(plan.run_dir(TEACHER)) is None


def test_a_model_trained_under_other_settings_is_refused(tmp_path, shipped):
    cfg = config(tmp_path, shipped)
    cfg["recipes"]["r"]["epochs"] = 2  # the same run id, another recipe
    [problem] = preflight.install_shipped(build_plan(cfg))
    assert "with other settings than the config plans" in problem


def test_shipped_names_a_planned_run_and_a_sha256(tmp_path, shipped):
    with pytest.raises(ConfigError, match="shipped.d/r/wrn-10-2/baseline/seed9: not a run this config plans"):
        build_plan(config(tmp_path, shipped) | {"shipped": {"d/r/wrn-10-2/baseline/seed9": {"from": "x",
                                                                                            "sha256": "0" * 64}}})
    with pytest.raises(ConfigError, match="sha256: expected the model file's SHA-256"):
        build_plan(config(tmp_path, shipped, sha="abc"))
