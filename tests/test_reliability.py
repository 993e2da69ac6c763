"""Faults, concurrency and bad input never lose a result."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SYNTHETIC, snakemake

from atlib import cli
from atlib.engine import train
from atlib.plan import build_plan, set_aside_broken_runs
from atlib.spec import RunSpec

DATA = {"name": "synthetic", "synthetic_train": 128, "synthetic_test": 64, "size": 16}
SPEC = {"run_id": "r", "dataset": DATA, "model": "wrn-10-1", "threads": 1,
        "recipe": {"epochs": 2, "batch_size": 32}, "tracking": {"enabled": False}}


def quiet(_: str) -> None:
    pass


# --- faults -----------------------------------------------------------------------------------

def test_corrupt_checkpoint_is_set_aside_and_the_run_recomputed(tmp_path):
    clean = train(RunSpec.from_dict(SPEC), tmp_path / "clean", quiet)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    messages = []
    again = train(RunSpec.from_dict(SPEC), out, messages.append)
    assert any("unreadable" in m for m in messages)
    assert (out / "checkpoint.corrupt").exists()
    assert again["checkpoint_sha256"] == clean["checkpoint_sha256"]


def test_broken_metrics_are_set_aside_before_the_dag_is_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = build_plan(yaml.safe_load(SYNTHETIC.read_text()))
    good, truncated, no_model, wrong_size = list(plan.runs)[:4]
    for run in (good, truncated, no_model, wrong_size):
        d = Path(plan.run_dir(run))
        d.mkdir(parents=True)
        (d / "model.pt").write_bytes(b"x" * 10)
        (d / "metrics.json").write_text(json.dumps({"final_test_error": 5.0, "checkpoint_bytes": 10}))
    Path(plan.run_dir(truncated), "metrics.json").write_text('{"final_test_error": 5')
    Path(plan.run_dir(no_model), "model.pt").unlink()
    Path(plan.run_dir(wrong_size), "model.pt").write_bytes(b"x" * 9)
    warnings = set_aside_broken_runs(plan)
    assert len(warnings) == 3 and not any(good in w for w in warnings)
    assert Path(plan.run_dir(good), "metrics.json").exists()
    for run in (truncated, no_model, wrong_size):
        assert not Path(plan.run_dir(run), "metrics.json").exists()
        assert Path(plan.run_dir(run), "metrics.json.corrupt").exists()


# three of the synthetic config's runs, spec for spec (a teacher, a baseline and an AT student of that teacher)
SMALL = ROOT / "tests/configs/synthetic-slurm.yaml"


def test_sigkill_of_the_whole_dag_then_rerun_loses_and_duplicates_nothing(request, tmp_path):
    """SIGKILL snakemake and its jobs mid-training; the README's main command then finishes the work, with the
    very weights and errors the synthetic DAG's same runs got uninterrupted."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    make = ["make", "-C", str(ROOT), "reproduce", f"CONFIG={SMALL}", f"WORKDIR={tmp_path}", "CORES=2"]
    proc = subprocess.Popen(make, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any((tmp_path / "results/runs").rglob("checkpoint.pt")) and \
                any((tmp_path / "results/runs").rglob("metrics.json")):
            break  # some runs done, one mid-way
        time.sleep(0.05)
    assert proc.poll() is None, "the DAG finished (or 300 s passed) before it could be killed mid-way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while True:  # until every process of the killed DAG is gone (the kernel reaps them at once; bounded anyway)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "processes of the killed DAG still run after 60 s"
        time.sleep(0.05)
    done = subprocess.run(make, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]

    runs_dir = tmp_path / "results/runs"
    resumed = {str(m.parent.relative_to(runs_dir)): json.loads(m.read_text()) for m in runs_dir.rglob("metrics.json")}
    assert len(resumed) == 3
    uninterrupted = request.getfixturevalue("synthetic_dag")[0]  # asked now: made meanwhile by another worker
    for run, m in resumed.items():  # CPU training is deterministic per seed, and a resumed run is the same run
        reference = json.loads((uninterrupted / "results/runs" / run / "metrics.json").read_text())
        assert (m["final_test_error"], m["checkpoint_sha256"]) == (reference["final_test_error"],
                                                                   reference["checkpoint_sha256"]), run
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert sorted(r.data.tags["run"] for r in runs) == sorted(resumed)  # each run once
    assert all(r.info.status == "FINISHED" for r in runs)


def test_one_mlflow_run_per_run_id_whatever_was_killed(tmp_path):
    import mlflow

    from atlib.tracking import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tags = {"run": "ds/r/m/at/seed0"}
    orphan = Tracker(uri, "e", "r", tags, {})  # a job killed before its first checkpoint
    fresh = Tracker(uri, "e", "r", tags, {})  # its rerun starts from scratch
    resumed = Tracker(uri, "e", "r", tags, {}, resume=True)  # killed again later, then resumed
    assert resumed.run_id == fresh.run_id != orphan.run_id
    client = mlflow.MlflowClient(uri)
    active = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert [r.info.run_id for r in active] == [fresh.run_id]


# --- concurrency ------------------------------------------------------------------------------

WRITER = """
import sys
from atlib.tracking import Tracker
t = Tracker(sys.argv[1], "stress", f"run{sys.argv[2]}", {"writer": sys.argv[2], "run": f"run{sys.argv[2]}"},
            {"a": 1, "b": {"c": 2}})
for epoch in range(1, 21):
    t.log_metrics(epoch, {"loss": 1.0 / epoch, "test_error": 50.0 - epoch, "lr": 0.1})
t.log_artifact(__import__("pathlib").Path(sys.argv[3]))
t.finish()
"""


def test_eight_concurrent_writers_lose_no_run_or_metric(tmp_path):
    from atlib.tracking import ensure_experiments

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ensure_experiments(["stress"], uri, artifact_root=str(tmp_path / "artifacts"))
    artifact = tmp_path / "metrics.json"
    artifact.write_text("{}")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(i), str(artifact)],
                              stderr=subprocess.PIPE, text=True) for i in range(8)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("stress").experiment_id])
    assert sorted(r.data.tags["writer"] for r in runs) == [str(i) for i in range(8)]
    for r in runs:
        assert r.info.status == "FINISHED"
        for key in ("loss", "test_error", "lr"):
            assert len(client.get_metric_history(r.info.run_id, key)) == 20


# --- bad input --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, str]:
    """A WRN teacher and a NIN teacher (whose group maps have other sizes than a WRN student's)."""
    out = {}
    for model in ("wrn-10-2", "nin-thin"):
        d = tmp_path_factory.mktemp(model)
        train(RunSpec.from_dict({**SPEC, "model": model, "recipe": {"epochs": 1, "batch_size": 32}}), d, quiet)
        out[model] = str(d)
    return out


def spec_with(changes: dict, teachers: dict[str, str]) -> dict:
    """SPEC with ``a__b``-style keys set; ``{T}`` and ``{NIN}`` name the teachers' run directories."""
    text = json.dumps(changes).replace("{T}", teachers["wrn-10-2"]).replace("{NIN}", teachers["nin-thin"])
    spec = json.loads(json.dumps(SPEC))
    for path, value in json.loads(text).items():
        *parents, leaf = path.split("__")
        node = spec
        for p in parents:
            node = node.setdefault(p, {})
        if value == "DELETE":
            node.pop(leaf)
        else:
            node[leaf] = value
    return spec


DELETE = "DELETE"
T = {"run_dir": "{T}", "model": "wrn-10-2"}
BAD_SPECS = [
    ("unknown model", {"model": "wrn-15-1"}, "model.name"),
    ("unknown method", {"method": "distill"}, "method.name"),
    ("unknown attention function", {"method": {"name": "at", "mapping": "mean"}, "teacher": T}, "method.mapping"),
    ("negative beta", {"method": {"name": "at", "beta": -1}, "teacher": T}, "method.beta"),
    ("alpha above 1", {"method": {"name": "kd", "alpha": 1.5}, "teacher": T}, "method.alpha"),
    ("T = 0", {"method": {"name": "kd", "T": 0}, "teacher": T}, "method.T"),
    ("AT without teacher", {"method": "at"}, "needs a teacher"),
    ("parameter of another method", {"method": {"name": "kd", "beta": 1}, "teacher": T}, "takes no parameter"),
    ("teacher of another architecture", {"method": "at", "teacher": {"run_dir": "{T}", "model": "wrn-16-2"}},
     "records model"),
    ("teacher of another dataset size", {"method": "at", "teacher": T, "dataset__size": 20}, "input_shape"),
    ("teacher of another class count", {"method": "at", "teacher": T, "dataset__num_classes": 5}, "num_classes"),
    ("groups that do not match without resizing",
     {"method": {"name": "at", "resize": False}, "teacher": {"run_dir": "{NIN}", "model": "nin-thin"}},
     "needs equal sizes"),
    ("missing teacher run", {"method": "kd", "teacher": {"run_dir": "/nonexistent/run", "model": "wrn-10-2"}},
     "/nonexistent/run"),
    ("teacher error gate", {"method": "kd", "teacher": {**T, "max_error": 0}},
     "max_error"),
    ("missing dataset root", {"dataset": {"name": "fashion-mnist", "root": "/nonexistent/fmnist"}},
     "/nonexistent/fmnist does not exist"),
    ("unknown dataset key", {"dataset__colour": True}, "dataset.colour"),
    ("train subset larger than the data", {"dataset__train_size": 10_000}, "train_size: 10000 requested"),
    ("unknown top-level key", {"epochs": 3}, "run spec: unknown key"),
    ("negative seed", {"seed": -1}, "seed: expected an integer >= 0, got -1"),
    ("negative epochs", {"recipe__epochs": -1}, "recipe.epochs"),
    ("milestone outside (0, 1)", {"recipe__milestones": [60, 120]}, "recipe.milestones"),
    ("unknown device", {"device": "tpu"}, "device: expected one of auto, cpu, cuda, got 'tpu'"),
    ("missing model", {"model": DELETE}, "model: missing"),
]


@pytest.mark.parametrize("name, changes, message", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_run_spec_is_one_clear_message_before_any_compute(name, changes, message, teachers, tmp_path,
                                                               monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_with(changes, teachers)))
    assert cli.main(["train", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atlib: error:") and message in err[0], err
    assert not (tmp_path / "results").exists()


BAD_CONFIGS = [  # (name, change, message of atlib plan, message of the DAG): both check the schema, then the plan
    ("yaml syntax error", "seeds: [0, 1\n", "not valid YAML", None),
    ("empty seed list", {"seeds": []}, "seeds: [] should be non-empty", "seeds: [] should be non-empty"),
    ("duplicate seeds", {"seeds": [0, 0]}, "seeds: [0, 0] has non-unique elements",
     "seeds: [0, 0] has non-unique elements"),
    ("unknown top-level key", {"epoch": 3}, "'epoch' was unexpected", "'epoch' was unexpected"),
    ("duplicate column", {"tables": {"table1": {"columns": ["at", "at"]}}}, "duplicate column", "duplicate column"),
    ("unknown model", {"tables": {"table1": {"rows": [{"student": "vgg-16"}]}}}, "unknown model",
     "tables.table1.rows[0].student.name: unknown model 'vgg-16'"),
]


# The DAG refuses a config with the functions `atlib plan` calls (validate_config, then build_plan): it runs once
# for a config the schema refuses and once for one the plan refuses, and `atlib plan` names every case.
DAG_CASES = {"unknown top-level key", "unknown model", "dataset escaping results/", "model option with a quote"}


@pytest.mark.parametrize("name, change, message, dag_message", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_experiment_config_stops_the_dag_with_one_message(name, change, message, dag_message, tmp_path,
                                                              monkeypatch, capsys):
    cfg = yaml.safe_load(SYNTHETIC.read_text())
    if isinstance(change, str):
        text = change
    else:
        for key, value in change.items():
            if key == "tables":
                cfg["tables"]["table1"].update(value["table1"])
            else:
                cfg[key] = value
        text = yaml.safe_dump(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", str(path)]) == 2
    err = capsys.readouterr().err  # one message (YAML's own spans lines: where, and what it expected)
    assert err.startswith("atlib: error:") and err.count("atlib:") == 1 and message in err, err
    if name in DAG_CASES:
        assert dag_message in err
        dag = snakemake(tmp_path, "--cores", "1", config=path, timeout=120)
        errors = [line for line in dag.stdout.splitlines() if line.startswith("atlib:")]
        assert dag.returncode != 0 and len(errors) == 1 and dag_message in errors[0], dag.stdout
    assert not (tmp_path / "results").exists()


def _rename(section: str, new: str):
    def mutate(cfg: dict) -> None:
        (old,) = cfg[section]
        cfg[section] = {new: cfg[section][old]}
        ref = {"datasets": "dataset", "recipes": "recipe"}.get(section)
        if ref:
            cfg["tables"]["table1"][ref] = new
    return mutate


def _set(path: tuple, value):
    def mutate(cfg: dict) -> None:
        target = cfg
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


BAD_NAMES = [  # names that would become paths outside results/ or break an MLflow search
    ("dataset escaping results/", _rename("datasets", "../../x"), "../../x"),
    ("dataset with a slash", _rename("datasets", "a/b"), "a/b"),
    ("dataset starting with a dash", _rename("datasets", "-x"), "-x"),
    ("hidden recipe", _rename("recipes", ".hidden"), ".hidden"),
    ("recipe with a quote", _rename("recipes", "it's"), "it's"),
    ("table with a double quote", _rename("tables", 'tab"le'), 'tab"le'),
    ("table with a space", _rename("tables", "a b"), "a b"),
    ("config name going up", _set(("name",), "../up"), "../up"),
    ("column label with a quote", _set(("tables", "table1", "columns"), ["student", {"label": "it's at",
                                                                              "method": "at"}]), "it's at"),
    ("row label with a double quote", _set(("tables", "table1", "rows", 0, "label"), 'a"b'), """'a"b'"""),
    ("model option with a quote", _set(("tables", "table1", "rows", 0, "student"),
                                       {"name": "nin-thin", "options": {"batchnorm": "x'y"}}), "x'y"),
]


@pytest.mark.parametrize("name, mutate, shown", BAD_NAMES, ids=[b[0] for b in BAD_NAMES])
def test_path_like_or_quoted_names_are_refused_by_the_plan_and_the_dag(name, mutate, shown, tmp_path, monkeypatch,
                                                                       capsys):
    cfg = yaml.safe_load(SYNTHETIC.read_text())
    mutate(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("atlib: error:") and shown in lines[0], lines
    if name in DAG_CASES:
        dag = snakemake(tmp_path, "-n", config=path, timeout=120)
        errors = [line for line in dag.stdout.splitlines() if line.startswith("atlib:")]
        assert dag.returncode != 0 and len(errors) == 1 and shown in errors[0], dag.stdout
    assert not (tmp_path / "results").exists()
    assert not (ROOT / "x").exists() and not (tmp_path.parent / "x").exists()
