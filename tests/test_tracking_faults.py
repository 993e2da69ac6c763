"""MLflow faults never stop training: a locked store, a killed tracking server, a deleted store; then
``mlflow-sync`` leaves exactly one FINISHED MLflow run per run, with every epoch's metrics once."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SYNTHETIC, store_in

from atlib import cli, server
from atlib.engine import train
from atlib.plan import build_plan
from atlib.spec import RunSpec
from atlib.tracking import RETRY_ENV, Tracker, sync_run

# a Tracker-driven run: the calls engine.train makes, and a metrics.json of the engine's shape
RUN = "toy/wrn-10-1/baseline/seed0"
CONFIG = {"run_id": RUN, "dataset": {"name": "synthetic"}, "model": {"name": "wrn-10-1", "options": {}},
          "method": {"name": "baseline"}, "recipe": {"epochs": 3}, "seed": 0,
          "tracking": {"experiment": "faults", "tags": {"variant": "baseline"}}}
TAGS = {"role": "teacher-or-baseline", "dataset": "synthetic", "model": "wrn-10-1", "method": "baseline", "seed": "0",
        "run": RUN, "git_commit": "abc123", "variant": "baseline"}
PIXELS = np.zeros((1, 1), dtype=np.uint8)  # a 1x1 grey image
LOCKER = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); "
          "print('locked', flush=True); sys.stdin.readline()")


def row(epoch: int, seconds: float = 1.5) -> dict[str, float]:
    """A history row as engine.train writes it; the test error every other epoch."""
    r = {"epoch": epoch, "lr": 0.1, "train_loss": 2.0 / epoch, "train_error": 60.0 / epoch, "epoch_seconds": seconds,
         "images_per_second": 100.0 * epoch, "loss/ce": 2.0 / epoch}
    if epoch % 2:
        r |= {"test_error": 50.0 / epoch, "test_error_top5": 10.0 / epoch}
    return r


def write_metrics(run_dir: Path, history: list[dict], mlflow_run_id: str | None) -> Path:
    metrics = {"run_id": RUN, "dataset": "synthetic", "model": "wrn-10-1", "model_options": {}, "method": "baseline",
               "seed": 0, "teacher": None, "epochs": len(history), "history": history, "mlflow_run_id": mlflow_run_id,
               "final_test_error": history[-1].get("test_error"), "config": CONFIG,
               "environment": {"git_commit": "abc123", "slurm_job_id": None}, "tags": TAGS}  # as the engine records
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir / "metrics.json"


def flat(d: Mapping, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": str(v)}
    return out


def mlflow_state(uri: str, run_dir: Path, tags: Mapping[str, str] = TAGS) -> dict:
    """MLflow's view of a run directory's run, checked: exactly one active run of its run id, FINISHED, with each
    epoch's metrics once as metrics.json has them, its config as params, its tags, and metrics.json."""
    import mlflow

    m = json.loads((run_dir / "metrics.json").read_text())
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(m["config"]["tracking"]["experiment"])
    [run] = client.search_runs([experiment.experiment_id], f"tags.run = '{m['run_id']}'")
    expected: dict[str, list] = {}
    for r in m["history"]:
        for key, value in r.items():
            expected.setdefault(key.replace("/", "."), []).append((r["epoch"], value))
    logged = {key: sorted((p.step, p.value) for p in client.get_metric_history(run.info.run_id, key))
              for key in expected}
    assert run.info.status == "FINISHED"
    assert logged == expected
    assert run.data.params == flat(m["config"])
    assert run.data.tags.items() >= tags.items()
    artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert "metrics.json" in artifacts
    return {"run_id": run.info.run_id, "end": run.info.end_time, "metrics": logged, "tags": run.data.tags,
            "params": run.data.params, "artifacts": artifacts}


def mlflow_server(store: Path, artifacts: Path) -> tuple[subprocess.Popen, int]:
    """``mlflow server`` in a process group of its own (killing the group kills its workers too), on a port the
    system chose as the server bound it: none is picked free first and then raced for."""
    try:
        return server.start("127.0.0.1", 0, store, artifacts, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except server.ServerError as e:
        pytest.fail(f"mlflow server: {e}")


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("atlib: warning:")]




@pytest.fixture
def env(monkeypatch) -> Iterator[dict[str, str]]:
    """The environment of the test and its processes: no MLflow variables, a short retry window. (Trackers in
    the test's own process set MLflow's HTTP variables: unset again afterwards.)"""
    for name in [n for n in os.environ if n.startswith("MLFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(RETRY_ENV, "2")  # the retry window, short for tests (default 60 s)
    yield dict(os.environ)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        os.environ.pop(name, None)


@pytest.mark.slow
def test_store_locked_longer_than_the_retry_window_then_mlflow_sync(tmp_path, env, empty_store, monkeypatch, capsys):
    """Training a planned run while another process holds the store locked; then `atlib mlflow-sync`."""
    monkeypatch.chdir(tmp_path)
    plan = build_plan(yaml.safe_load(SYNTHETIC.read_text()))
    run = "synthetic/tiny/wrn-10-1/baseline/seed0"
    spec = plan.runs[run] | {"dataset": {"name": "synthetic", "synthetic_train": 64, "synthetic_test": 32, "size": 16}}
    store = store_in(tmp_path / "results", empty_store)
    assert cli.main(["mlflow-init", "synthetic"]) == 0 and plan.store == "results/mlflow.db"
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(store)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline() == "locked\n"
        metrics = train(RunSpec.from_dict(spec), Path(plan.run_dir(run)), log=lambda _: None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # held all along
            sqlite3.connect(store, timeout=0).execute("SELECT count(*) FROM runs").fetchone()
    finally:
        locker.communicate("\n", timeout=30)
    [warning] = warnings_of(capsys.readouterr().err)
    assert "MLflow failed at start" in warning and "database is locked" in warning
    run_dir = tmp_path / plan.run_dir(run)
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3] and metrics["final_test_error"] is not None
    assert metrics["mlflow_run_id"] is None  # no MLflow run: the store was locked from the start

    assert cli.main(["mlflow-sync", str(SYNTHETIC)]) == 0
    [line] = capsys.readouterr().out.splitlines()  # one line per run synced: the one finished run of the plan
    assert line.startswith(f"{plan.run_dir(run)}: created MLflow run") and line.endswith("RUNNING -> FINISHED")
    tags = {"run": run, "dataset": "synthetic", "model": "wrn-10-1", "method": "baseline", "seed": "0",
            "role": "teacher-or-baseline", "recipe": "tiny", "variant": "baseline"}
    state = mlflow_state(f"sqlite:///{store}", run_dir, tags)
    assert state["artifacts"] == ["metrics.json"]
    resolved = Path("results/synthetic/config.yaml")  # as the DAG's resolved_config rule writes it
    resolved.parent.mkdir(parents=True)
    resolved.write_text(SYNTHETIC.read_text())
    assert cli.main(["mlflow-sync", str(resolved.parent)]) == 0
    assert capsys.readouterr().out == ""  # the same runs, all in sync
    assert mlflow_state(f"sqlite:///{store}", run_dir, tags) == state


@pytest.mark.slow
def test_tracking_server_killed_mid_run_then_sync_against_it_served_again(tmp_path, env, empty_store, capsys):
    store, artifacts, run_dir = store_in(tmp_path, empty_store), tmp_path / "artifacts", tmp_path / "run"
    served, port = mlflow_server(store, artifacts)
    tracker = Tracker(f"http://127.0.0.1:{port}", "faults", RUN, TAGS, CONFIG)  # as engine.train calls it
    history = [row(1), row(2), row(3)]
    try:
        for epoch in (1, 2):
            tracker.log_metrics(epoch, history[epoch - 1])
            tracker.log_image(PIXELS, "attention", epoch)
    finally:
        os.killpg(served.pid, signal.SIGKILL)  # the server and its workers, mid-run
        served.wait()
    assert not tracker.offline
    tracker.log_metrics(3, history[2])
    tracker.log_image(PIXELS, "attention", 3)
    tracker.log_artifact(write_metrics(run_dir, history, tracker.run_id))
    tracker.finish()
    [warning] = warnings_of(capsys.readouterr().err)
    assert "MLflow failed at epoch 3" in warning and tracker.offline

    # the same store served again; on a port of its own, which sync is given (the run's folder names no server)
    served, port = mlflow_server(store, artifacts)
    try:
        uri = f"http://127.0.0.1:{port}"
        import mlflow
        from mlflow.tracking._tracking_service import utils

        # `atlib mlflow-sync` is a process of its own: MLflow's per-process cache of where each run's artifacts
        # go (by run id, here still the killed server's address) starts empty there
        utils._artifact_repos_cache.clear()
        partial = mlflow.MlflowClient(uri).get_run(tracker.run_id)
        assert partial.info.status == "RUNNING" and partial.data.metrics["epoch"] == 2  # what the job left
        changed = sync_run(run_dir, uri)
        assert changed == f"{len(history[2])} metric points, metrics.json, RUNNING -> FINISHED"
        state = mlflow_state(uri, run_dir)
        assert state["run_id"] == tracker.run_id  # completed, not replaced
        assert state["artifacts"] == ["images", "metrics.json"]
        assert sync_run(run_dir, uri) == "" and mlflow_state(uri, run_dir) == state
    finally:
        server.stop_group(served)


def test_an_epoch_logged_twice_by_a_resumed_run_is_synced_to_each_point_once(tmp_path, env, empty_store):
    """A job killed after logging epoch 2 but before its checkpoint: resumed, it logs epoch 2 again (another
    epoch_seconds), which MLflow keeps as a second point. Sync replaces the run, keeping its artifacts."""
    import mlflow

    uri, run_dir = f"sqlite:///{store_in(tmp_path, empty_store)}", tmp_path / "run"
    killed = Tracker(uri, "faults", RUN, TAGS, CONFIG)
    killed.log_metrics(1, row(1))
    killed.log_image(PIXELS, "attention", 1)
    killed.log_metrics(2, row(2))
    resumed = Tracker(uri, "faults", RUN, TAGS, CONFIG, resume=True)
    history = [row(1), row(2, seconds=2.5), row(3)]
    for epoch in (2, 3):
        resumed.log_metrics(epoch, history[epoch - 1])
    resumed.log_artifact(write_metrics(run_dir, history, resumed.run_id))
    resumed.finish()
    client = mlflow.MlflowClient(uri)
    assert resumed.run_id == killed.run_id and not resumed.offline
    assert [p.value for p in client.get_metric_history(resumed.run_id, "epoch_seconds")] == [1.5, 1.5, 2.5, 1.5]

    changed = sync_run(run_dir, uri)
    assert changed.startswith(f"replaced MLflow run {resumed.run_id}")
    state = mlflow_state(uri, run_dir)
    assert state["run_id"] != resumed.run_id and state["artifacts"] == ["images", "metrics.json"]
    assert client.get_run(resumed.run_id).info.lifecycle_stage == "deleted"
    assert sync_run(run_dir, uri) == "" and mlflow_state(uri, run_dir) == state


WORKER = """
import sys
import mlflow
from atlib.tracking import Tracker
sys.stdin.readline()  # all at once, mlflow imported
tracker = Tracker(sys.argv[1], "faults", f"run{sys.argv[2]}", {"run": f"run{sys.argv[2]}"}, {"worker": sys.argv[2]})
for epoch in (1, 2, 3):
    tracker.log_metrics(epoch, {"train_loss": 1.0 / epoch})
tracker.finish()
"""


@pytest.mark.slow
def test_jobs_started_together_on_a_store_deleted_after_mlflow_init_all_log(tmp_path, env, empty_store):
    """The marker of `atlib mlflow-init` stays, so the DAG does not create the store again: the jobs must.
    Without a lock, jobs opening a fresh store together break its schema (2 of 3 died so, every time)."""
    store = store_in(tmp_path / "results", empty_store)
    assert cli.main(["mlflow-init", "faults", "--store", str(store)]) == 0
    store.unlink()
    uri = f"sqlite:///{store}"
    env.pop(RETRY_ENV)  # the default window: one job creates the store while the others wait for it
    jobs = [subprocess.Popen([sys.executable, "-c", WORKER, uri, str(i)], stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env) for i in range(3)]
    for job in jobs:
        job.stdin.write("\n")
        job.stdin.flush()
    errors = [job.communicate(timeout=300)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 3, errors
    assert not any(warnings_of(e) for e in errors), errors
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert sorted(r.data.tags["run"] for r in runs) == [f"run{i}" for i in range(3)]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert [p.step for p in client.get_metric_history(r.info.run_id, "train_loss")] == [1, 2, 3]
