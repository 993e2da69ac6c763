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


def test_estimate_takes_each_unfinished_run_at_the_median_of_the_runs_most_like_it(plan):
    teachers, baselines = runs(plan, "wrn-10-2", "baseline"), runs(plan, "wrn-10-1", "baseline")
    ats, kds = runs(plan, "wrn-10-1", "at"), runs(plan, "wrn-10-1", "kd")
    # both AT students measured (30 and 60 s), one teacher (30 s), one baseline (12 s)
    seconds = {ats[0]: 30.0, ats[1]: 60.0, teachers[0]: 30.0, baselines[0]: 12.0}
    # left: teacher seed1 like teacher seed0 (30); baseline seed1 (12); both KD and both SP students, like the AT
    # ones: same data, student and teacher (median of 30 and 60 = 45 each)
    assert progress.estimate(plan, seconds, running={}) == pytest.approx(30 + 12 + 4 * 45)
    # a KD student running for 40 s of its 45 has 5 left
    assert progress.estimate(plan, seconds, running={kds[0]: 40.0}) == pytest.approx(30 + 12 + 5 + 3 * 45)
    assert progress.estimate(plan, {}, running={}) != progress.estimate(plan, {}, running={})  # nan: no measure


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
    # 8 runs left: the baseline and students at the one data-wide median (30 and 42 s per run of 3 epochs),
    # 8 x 36 s on 2 jobs at once
    assert line == (f"atlib: 2/10 runs done, ETA {progress.duration(8 * 36 / 2)} at the finished runs' speed "
                    f"(2 jobs at once); {teachers[1]} took 42 s")
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
