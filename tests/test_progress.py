"""Progress of a whole DAG: one line per finished run, done/total and an ETA from the finished runs' speed."""

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import SYNTHETIC

from atlib import progress
from atlib.plan import build_plan


@pytest.fixture
def plan(tmp_path):
    """The synthetic config's 10 runs (2 seeds of a wrn-10-2 teacher, a wrn-10-1 baseline, AT, KD and SP students,
    3 epochs each), with its results under tmp_path."""
    p = build_plan(yaml.safe_load(SYNTHETIC.read_text()))
    p.results = str(tmp_path / "results")
    return p


def finish(plan, run_id: str, startup: float, train: float) -> None:
    folder = Path(plan.run_dir(run_id))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"final_test_error": 9.0, "startup_seconds": startup,
                                                     "train_seconds": train}))


def runs(plan, model: str, method: str) -> list[str]:
    return sorted(r for r in plan.runs if f"/{model}/{method}" in r)


def test_jobs_at_once_follow_the_executor_cores_threads_and_gpu_slots():
    assert progress.jobs_at_once(True, cores=8, nodes=None, threads=2) == 4
    assert progress.jobs_at_once(True, cores=8, nodes=None, threads=1, gpu_per_job=1, gpu_slots=3) == 3
    assert progress.jobs_at_once(True, cores=1, nodes=None, threads=4) == 1
    assert progress.jobs_at_once(False, cores=8, nodes=100, threads=4, gpu_per_job=1, gpu_slots=2) == 100


def test_each_pending_run_is_priced_by_its_planned_work_at_the_cost_of_runs_of_its_kind(plan):
    teachers, baselines = runs(plan, "wrn-10-2", "baseline"), runs(plan, "wrn-10-1", "baseline")
    ats, kds = runs(plan, "wrn-10-1", "at"), runs(plan, "wrn-10-1", "kd")
    M = progress.Measured
    # (wall, epochs): overheads 10, 10, 6, 3 (median 8); per epoch (3 epochs, sizes unknown) 10, 20, 10, 4
    done = {ats[0]: M(40, 30), ats[1]: M(70, 60), teachers[0]: M(36, 30), baselines[0]: M(15, 12)}
    left = progress.seconds_left(plan, done, running={})
    # KD and SP students are distilled WRN-10-1s from a WRN-10-2 on the same data, as the AT ones: 8 + 3 x 15 = 53;
    # the other teacher 8 + 3 x 10 = 38; the other baseline 8 + 3 x 4 = 20
    assert left[kds[0]] == 53 and left[teachers[1]] == 38 and left[baselines[1]] == 20
    assert sum(left.values()) == 38 + 20 + 4 * 53
    # a KD student 40 s in: 13 s left by its estimate; or, having logged 1 of its 3 epochs, 2 more at 40 s each
    assert progress.seconds_left(plan, done, running={kds[0]: 40.0})[kds[0]] == 13
    assert progress.seconds_left(plan, done, {kds[0]: 40.0}, epochs_done={kds[0]: (1, 3)})[kds[0]] == 80
    # training images scale the work: a baseline of 4 images an epoch where the measured one had 2 costs twice its
    # epochs (overhead 8 + 2 x 12)
    images = dict.fromkeys(plan.runs, 2) | {baselines[1]: 4}
    assert progress.seconds_left(plan, done, {}, images)[baselines[1]] == 8 + 2 * 12
    assert progress.estimate(plan, {}, running={}) != progress.estimate(plan, {}, running={})  # nan: no measure


def test_wall_time_left_waits_for_an_unfinished_teacher(plan):
    teachers = runs(plan, "wrn-10-2", "baseline")
    students = [r for r, t in plan.teacher_of.items() if t == teachers[1]]
    assert len(students) == 3
    left = {teachers[1]: 38.0, **dict.fromkeys(students, 53.0), "other": 20.0}
    # the teacher, then its students two at a time (38 + 159 / 2 = 117.5), is longer than the work shared out
    # (217 / 2 = 108.5)
    assert progress.wall_left(plan, left, jobs=2) == 38 + 159 / 2
    # with a long run beside them, sharing out is longer: (38 + 159 + 300) / 2
    assert progress.wall_left(plan, {**left, "other": 300.0}, jobs=2) == (38 + 159 + 300) / 2


def test_epochs_logged_reads_the_last_epoch_line(tmp_path):
    log = tmp_path / "r.log"
    log.write_text("2026 INFO mlflow\n[a/b] epoch 1/12 loss 0.5 train err 9%\n[a/b] epoch 2/12 loss 0.4 x\n")
    assert progress.epochs_logged(log) == (2, 12)
    assert progress.epochs_logged(tmp_path / "none.log") is None


def test_watcher_prints_one_line_per_run_as_it_finishes_with_its_measured_time(plan, tmp_path):
    now = [100.0]
    logs, lines = tmp_path / "logs", []
    teachers = runs(plan, "wrn-10-2", "baseline")
    finish(plan, teachers[0], startup=5.0, train=25.0)  # finished before the DAG started: its own record, 30 s
    stale = runs(plan, "wrn-10-1", "baseline")[0]
    (logs / stale).parent.mkdir(parents=True)
    (logs / f"{stale}.log").write_text("an earlier attempt\n")
    watcher = progress.Watcher(plan, logs, jobs=2, out=lines.append, clock=lambda: now[0])
    assert watcher.poll() == [] and watcher.started == {}  # an old log is no start
    (logs / teachers[1]).parent.mkdir(parents=True, exist_ok=True)
    (logs / f"{teachers[1]}.log").write_text("epoch 1\n")  # Snakemake opened its log: the job started
    watcher.poll()
    now[0] = 130.0
    assert watcher.poll() == [] and watcher.started == {teachers[1]: 100.0}
    now[0] = 142.0
    finish(plan, teachers[1], startup=1.0, train=2.0)  # its wall time counts (42 s), not its own record (3 s)
    [line] = watcher.poll()
    assert lines == [line]
    # overheads 5 and 40 (median 22.5), per epoch 25/3 and 2/3: no run of the other kinds yet, so each of the 8
    # at the median of every run, 22.5 + 3 x 4.5 = 36 s, on 2 jobs at once
    assert line == (f"atlib: 2/10 runs done, ETA {progress.duration(8 * 36 / 2)} from each run's planned work at "
                    f"the measured cost of its kind (2 jobs at once); {teachers[1]} took 42 s")
    assert watcher.poll() == []  # each run once


def test_the_last_line_says_done_and_stop_looks_once_more(plan, tmp_path):
    lines = []
    for run in list(plan.runs)[:-1]:
        finish(plan, run, startup=1.0, train=9.0)
    watcher = progress.Watcher(plan, tmp_path / "logs", jobs=2, out=lines.append)
    watcher.start()
    finish(plan, list(plan.runs)[-1], startup=1.0, train=9.0)
    watcher.stop()  # within a poll of the thread, or by stop's own last look: once either way
    assert lines == [f"atlib: 10/10 runs done; {list(plan.runs)[-1]} took 10 s"]


def test_durations_read_as_a_person_would_say_them():
    assert [progress.duration(s) for s in (42, 95, 3000, 7200)] == ["42 s", "2 min", "50 min", "2.0 h"]


def test_the_dag_prints_a_line_per_finished_run(synthetic_dag):
    _, proc = synthetic_dag
    total = len(build_plan(yaml.safe_load(SYNTHETIC.read_text())).runs)
    done = [int(m) for m in re.findall(rf"^atlib: (\d+)/{total} runs done", proc.stdout, re.M)]
    assert sorted(done) == list(range(1, total + 1)), proc.stdout[-3000:]
