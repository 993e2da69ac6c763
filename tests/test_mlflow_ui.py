"""What a person sees of the runs in MLflow: names that tell runs apart, MLflow's own fields filled, a training
(not GenAI) experiment, one summary run per table, attention maps by epoch, system metrics; and, where Chromium is
installed, the UI itself (scripts/ui_check.py)."""

import csv
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from atlib import cli
from atlib.plan import load_plan
from atlib.spec import RunSpec
from atlib.tracking import (
    EXPERIMENT_KIND,
    Tracker,
    ensure_experiments,
    grouped_url,
    metric_key,
    ranked_url,
    run_name,
    summary_experiment,
    sync_run,
    ui_url,
)

STUDENT = {"model": {"name": "wrn-16-1", "options": {}}, "seed": 3, "method": {"name": "at", "beta": 1000.0},
           "teacher": {"run_dir": "t", "model": {"name": "wrn-16-2", "options": {}}},
           "tracking": {"tags": {"variant": "at", "recipe": "quick"}}}


def client(workdir: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{workdir}/results/mlflow.db")


def pixels(colour: tuple[int, int, int]) -> np.ndarray:
    return np.full((12, 24, 3), colour, dtype=np.uint8)


def test_run_names_lead_with_what_tells_runs_apart_and_name_every_paper_run_once():
    assert run_name(STUDENT) == "at · s3 · wrn-16-1←wrn-16-2 · quick"
    assert run_name({"model": {"name": "wrn-16-2", "options": {}}, "method": "baseline"}) == "baseline · s0 · wrn-16-2"
    # MLflow's runs list shows about 25 characters: the runs of one cell differ there, by their seed
    assert run_name(STUDENT)[:25] != run_name(STUDENT | {"seed": 4})[:25]
    for config in ("config/paper.yaml", "config/quick.yaml", "config/evidence.yaml"):
        plan = load_plan(str(ROOT / config))
        names = Counter((spec["tracking"]["experiment"], run_name(RunSpec.from_dict(spec).to_dict()))
                        for spec in plan.runs.values())
        assert max(names.values()) == 1, (config, names.most_common(2))


def test_dag_runs_are_named_described_and_in_a_training_experiment(synthetic_dag):
    workdir, _ = synthetic_dag
    c = client(workdir)
    exp = c.get_experiment_by_name("synthetic")
    assert exp.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]  # MLflow's UI opens it on its runs
    runs = c.search_runs([exp.experiment_id])
    by_id = {r.info.run_id: r for r in runs}
    assert len(runs) == 10
    for r in runs:
        tags = r.data.tags
        m = json.loads((workdir / "results/runs" / tags["run"] / "metrics.json").read_text())
        assert r.info.run_name == run_name(m["config"]) != tags["run"]
        assert tags["mlflow.user"] and tags["mlflow.source.git.commit"] == tags["git_commit"]
        note = tags["mlflow.note.content"]
        assert f"**{m['method']}**" in note and tags["run"] in note
        artifacts = {a.path for a in c.list_artifacts(r.info.run_id)}
        images = sorted(a.path for a in c.list_artifacts(r.info.run_id, "images") if a.path.endswith(".png"))
        # attention maps as MLflow images: key 'attention' at step = epoch, every max(1, 3 // 5) epochs
        assert [p.split("+")[2] for p in images] == ["1", "2", "3"] and tags["mlflow.loggedImages"] == "True"
        assert all(p.startswith("images/attention+step+") for p in images)
        if tags["role"] == "student":
            teacher = by_id[tags["teacher_run"]]
            assert f"#/runs/{teacher.info.run_id}" in note and teacher.data.tags["model"] in note
            assert "model.pt" not in artifacts
        else:  # a teacher or a baseline: its weights can teach
            assert "model.pt" in artifacts


def summary_of(workdir: Path) -> tuple[str, str, str]:
    [(table, exp, run, url)] = [line.split("\t") for line in
                                (workdir / "results/synthetic/mlflow-summary.tsv").read_text().splitlines()]
    assert url == ui_url(exp, run)
    return table, exp, run


def medians(workdir: Path, table: str) -> dict[str, float]:
    with open(workdir / f"results/synthetic/tables/{table}.csv", newline="") as f:
        return {metric_key("median", c["row"], c["column"]): float(c["median"]) for c in csv.DictReader(f)}


def test_summary_run_holds_the_table_and_links_its_cells_runs(synthetic_dag):
    workdir, _ = synthetic_dag
    c = client(workdir)
    table, exp, run_id = summary_of(workdir)
    assert c.get_experiment(exp).name == summary_experiment("synthetic")
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["summary"] == "synthetic" and run.data.tags["table"] == table
    assert run.data.metrics == medians(workdir, table)
    assert "median.wrn-10-1 from wrn-10-2.at" in run.data.metrics  # '<' is no metric name character
    files = {a.path for folder in ("", "tables", "figures") for a in c.list_artifacts(run_id, folder)}
    figures = {f"figures/{p.name}" for p in (workdir / "results/synthetic/figures").glob("table1-*.png")}
    assert figures and files >= {"tables/table1.md", "tables/table1.csv", "report.md", "runs.csv", *figures}
    # linked, not nested: every training run of the table, by its MLflow run id
    trained = {r.info.run_id for r in c.search_runs([c.get_experiment_by_name("synthetic").experiment_id])}
    note = run.data.tags["mlflow.note.content"]
    assert set(re.findall(r"\(#/experiments/\d+/runs/(\w+)\)", note)) == trained


def test_summary_again_updates_the_same_run_and_only_what_changed(synthetic_dag, tmp_path, monkeypatch):
    workdir = tmp_path / "copy"
    shutil.copytree(synthetic_dag[0], workdir)
    monkeypatch.chdir(workdir)
    table, exp, run_id = summary_of(workdir)
    assert cli.main(["mlflow-summary", "results/synthetic/config.yaml"]) == 0
    assert summary_of(workdir) == (table, exp, run_id)
    c = client(workdir)
    assert [r.info.run_id for r in c.search_runs([exp])] == [run_id]  # no second summary run
    key = metric_key("median", "wrn-10-1 <- wrn-10-2", "at")
    assert len(c.get_metric_history(run_id, key)) == 1  # an unchanged median is not logged again

    path = workdir / f"results/synthetic/tables/{table}.csv"
    rows = list(csv.DictReader(path.open()))
    rows[[r["column"] for r in rows].index("at")]["median"] = "12.5"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert cli.main(["mlflow-summary", "results/synthetic/config.yaml"]) == 0
    assert [p.value for p in c.get_metric_history(run_id, key)][-1] == 12.5
    assert c.get_run(run_id).data.metrics == medians(workdir, table)


def test_a_run_sync_creates_is_named_and_described_as_its_job_named_it(synthetic_dag, tmp_path, monkeypatch):
    workdir, _ = synthetic_dag
    monkeypatch.chdir(tmp_path)
    [job] = client(workdir).search_runs([client(workdir).get_experiment_by_name("synthetic").experiment_id],
                                        "tags.method = 'at' and tags.seed = '1'")
    run_dir = tmp_path / "run"
    shutil.copytree(workdir / "results/runs" / job.data.tags["run"], run_dir)
    assert sync_run(run_dir, f"sqlite:///{tmp_path}/m.db").startswith("created MLflow run")
    import mlflow

    c = mlflow.MlflowClient(f"sqlite:///{tmp_path}/m.db")
    [synced] = c.search_runs([c.get_experiment_by_name("synthetic").experiment_id])
    assert synced.info.run_name == job.info.run_name
    for key in ("mlflow.note.content", "mlflow.source.git.commit", "mlflow.user"):
        assert synced.data.tags[key] == job.data.tags[key], key


def test_the_dag_ends_with_atlib_browse_and_the_pages_it_opens(synthetic_dag):
    workdir, proc = synthetic_dag
    c = client(workdir)
    table, exp, run = summary_of(workdir)
    hint = proc.stdout.split("Browse the runs: ", 1)[1].splitlines()
    assert hint[0].split()[1:3] == ["browse", "results/synthetic"]
    synthetic = c.get_experiment_by_name("synthetic").experiment_id
    assert hint[1:4] == [f"  {ranked_url(synthetic)}  (synthetic: its runs, ranked by test error)",
                         f"  {grouped_url(synthetic)}  (synthetic: its runs grouped by method, each method's mean test "
                         "error)", f"  {ui_url(exp, run)}  ({table}: the table's summary run)"]
    assert ui_url("1", "abc").endswith("/#/experiments/1/runs/abc?workflowType=machine_learning")


def test_experiments_made_before_are_tagged_as_training_ones_and_a_kind_set_since_stays(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/m.db"
    ensure_experiments(["x"], uri)
    c = mlflow.MlflowClient(uri)
    c.create_experiment("old")  # as atlib made them before it tagged them
    chosen = c.create_experiment("chosen")
    c.set_experiment_tag(chosen, EXPERIMENT_KIND[0], "genai_development")
    ensure_experiments(["x", "old", "chosen"], uri)
    kinds = {n: c.get_experiment_by_name(n).tags.get(EXPERIMENT_KIND[0]) for n in ("x", "old", "chosen")}
    assert kinds == {"x": EXPERIMENT_KIND[1], "old": EXPERIMENT_KIND[1], "chosen": "genai_development"}


def test_tracker_logs_images_by_step_and_system_metrics_until_it_finishes(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "e", "n", {"run": "r"}, {}, system_metrics=True)
    for step, colour in ((1, (255, 0, 0)), (2, (0, 0, 255))):
        tracker.log_image(pixels(colour), "attention", step)
    c = mlflow.MlflowClient(uri)
    deadline = time.monotonic() + 60  # two samples, 0.2 s apart on an idle machine; bounded on a busy one
    while len(c.get_metric_history(tracker.run_id, "system/cpu_utilization_percentage")) < 2:
        assert time.monotonic() < deadline, "fewer than 2 system metric samples in 60 s"
        time.sleep(0.1)
    tracker.finish()
    quiet = Tracker(uri, "e", "n", {"run": "q"}, {})  # off unless asked: a Tracker in a test, say
    quiet.finish()
    run = c.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and tracker.monitor is None
    assert len(c.get_metric_history(tracker.run_id, "system/cpu_utilization_percentage")) >= 2
    images = sorted(a.path for a in c.list_artifacts(tracker.run_id, "images") if a.path.endswith(".png"))
    assert [p.split("+")[:3] for p in images] == [["images/attention", "step", "1"], ["images/attention", "step", "2"]]
    assert not [k for k in c.get_run(quiet.run_id).data.metrics if k.startswith("system/")]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Chromium is not installed (Debian: apt-get install chromium): the UI check needs a browser")
def test_ui_shows_the_named_runs_and_the_summary_run_and_the_report_lists_every_result(synthetic_dag, tmp_path):
    workdir, _ = synthetic_dag
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/ui_check.py"), str(workdir), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "all checks passed" in proc.stdout
    assert {p.name for p in tmp_path.glob("*.png")} == {"mlflow-runs.png", "mlflow-summary.png"}
