"""The synthetic config through the real snakemake executable, end to end."""

import json
import shutil
import subprocess

import pandas as pd
import pytest
from conftest import ROOT, SNAKEMAKE, snakemake


@pytest.fixture(scope="module")
def done(synthetic_dag):
    return synthetic_dag


def test_table_cells_are_the_medians_of_the_run_metrics(done):
    workdir, proc = done
    runs = sorted((workdir / "results/runs").rglob("metrics.json"))
    assert len(runs) == 8  # 2 seeds x (teacher, student, at, kd)
    cells = pd.read_csv(workdir / "results/synthetic/tables/table1.csv")
    assert list(cells.column) == ["student", "at", "kd", "teacher"]
    for _, cell in cells.iterrows():
        errors = [json.loads((workdir / "results/runs" / r / "metrics.json").read_text())["final_test_error"]
                  for r in cell.runs.split()]
        assert cell["n"] == 2 and cell["median"] == pytest.approx(pd.Series(errors).median())
        assert cell.paper == {"student": 8.77, "at": 7.93, "kd": 7.41, "teacher": 6.31}[cell.column]
    assert "## Table 1 layout on synthetic data" in proc.stdout  # printed at the end
    assert "mlflow ui --backend-store-uri" in proc.stdout


def test_runs_are_in_mlflow_linked_to_their_teachers(done):
    workdir, _ = done
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir}/results/mlflow.db")
    exp = client.get_experiment_by_name("synthetic")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    by_id = {r.info.run_id: r for r in runs}
    students = [r for r in runs if r.data.tags.get("method") in ("at", "kd")]
    assert len(students) == 4
    for s in students:
        teacher = by_id[s.data.tags["teacher_run"]]
        assert teacher.data.tags["model"] == "wrn-10-2" and teacher.data.tags["seed"] == s.data.tags["seed"]
        assert len(client.get_metric_history(s.info.run_id, "test_error")) == 3
        # MLflow's images of key "attention", at steps 1, 2, 3 (every max(1, 3 // 5) epochs)
        images = sorted(a.path for a in client.list_artifacts(s.info.run_id, "images") if a.path.endswith(".png"))
        assert [p.split("+")[2] for p in images] == ["1", "2", "3"]
        assert s.data.tags["table.table1"] == f"wrn-10-1 <- wrn-10-2 / {s.data.tags['method']}"
    teachers = client.search_runs([exp.experiment_id], "tags.model = 'wrn-10-2'")
    assert {t.data.tags["table.table1"] for t in teachers} == {"wrn-10-1 <- wrn-10-2 / teacher"}


def test_second_run_does_nothing_and_a_deleted_run_is_retrained_alone(done, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(done[0], workdir)  # copy2 keeps the mtimes Snakemake compares
    again = snakemake(workdir)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout
    victim = next((workdir / "results/runs").glob("synthetic/tiny/wrn-10-1/at-*/seed1"))
    shutil.rmtree(victim)
    dry = snakemake(workdir, "-n")
    stats = dry.stdout.split("Job stats:", 1)[1].split("\n\n", 1)[0].splitlines()[3:]
    jobs = dict(line.split() for line in stats)
    assert jobs == {"train": "1", "aggregate": "1", "tables": "1", "figures": "1", "report": "1",
                    "mlflow_summary": "1", "all": "1", "total": "7"}


def test_bad_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "tests/configs/synthetic.yaml").read_text().replace("wrn-10-1", "wrn-11-1"))
    proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "workflow" / "Snakefile"), "--directory", str(tmp_path),
                           "--configfile", str(bad), "--cores", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "tables.table1.rows[0].student.name" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_snakemake_report_is_one_self_contained_file_with_every_table_and_figure(done, tmp_path):
    workdir, _ = done
    out = workdir / "results/synthetic/report.html"
    proc = snakemake(workdir, "--report", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:]
    html = out.read_text()
    assert out.stat().st_size > 10_000 and 'src="http' not in html  # no fetch from elsewhere to show it
    figures = sorted(p.name for p in (workdir / "results/synthetic/figures").glob("*.png"))
    assert figures and all(name in html for name in figures)
    for name in ("table1.md", "report.md", "Verdicts", "Figures", "Tables"):
        assert name in html, name
