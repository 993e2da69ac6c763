"""The run key owns the run id: every id a shipped config plans formats back from its parsed key."""


import pytest
from conftest import ROOT

from atlib.plan import load_plan
from atlib.runkey import RunIdError, RunKey

CONFIGS = [ROOT / "config" / f"{n}.yaml" for n in ("quick", "evidence", "fewshot", "paper")] + sorted(
    (ROOT / "tests/configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_planned_id_round_trips_through_its_key(path):
    plan = load_plan(str(path))
    for run_id, spec in plan.runs.items():
        key = RunKey.parse(run_id)
        assert str(key) == run_id and RunKey.parse(str(key)) == key
        assert (key.dataset, key.recipe, key.seed) == (spec["tracking"]["experiment"],
                                                      spec["tracking"]["tags"]["recipe"], spec["seed"])
        assert key.variant == spec["tracking"]["tags"]["variant"]
        teacher = plan.teacher_of.get(run_id)
        assert (str(key.teacher) if key.teacher else None) == teacher


def test_the_fields_of_a_student_with_a_teacher_of_its_own_data_and_recipe():
    run_id = "fmnist-4k/students/wrn-16-1/at-p=1-from-wrn-16-2@fmnist-60k@teacher-seed0/seed3"
    teacher = RunKey("fmnist-60k", "teacher", "wrn-16-2", "baseline", None, 0)
    assert RunKey.parse(run_id) == RunKey("fmnist-4k", "students", "wrn-16-1", "at-p=1", teacher, 3)
    # the same data and recipe as the student's are not repeated
    same = RunKey("d", "r", "wrn-16-1", "kd", RunKey("d", "r", "wrn-16-2", "baseline", None, 1), 2)
    assert str(same) == "d/r/wrn-16-1/kd-from-wrn-16-2-seed1/seed2"


@pytest.mark.parametrize("run_id, match", [
    ("d/r/m/seed0", "expected 5 parts"),
    ("d/r/m/at/seed", "expected seedN"),
    ("d/r/m/at/seed03", "expected seedN"),
    ("d/r/m/at/3", "expected seedN"),
    ("d/r/m/at-from-t-seedx/seed0", "expected seedN"),
    ("d/r/m/at-from-t@d2-seed0/seed0", "expected the teacher as MODEL-seedN"),
    ("d/r/m/at-from-t@d@r-seed0/seed0", "expected the teacher as MODEL-seedN"),  # not written this way
    ("d/r//at/seed0", "model ''"),
])
def test_a_bad_id_is_one_line_naming_it(run_id, match):
    with pytest.raises(RunIdError, match=match) as e:
        RunKey.parse(run_id)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"run id {run_id!r}: ")


def test_a_key_the_id_cannot_say_is_refused():
    with pytest.raises(RunIdError, match="a teacher is the 'baseline' run"):
        RunKey("d", "r", "m", "at", RunKey("d", "r", "t", "kd", None, 0), 0)
    with pytest.raises(RunIdError, match="model 'a@b'"):
        RunKey("d", "r", "a@b", "at", None, 0)
    with pytest.raises(RunIdError, match="seed -1"):
        RunKey("d", "r", "m", "at", None, -1)
