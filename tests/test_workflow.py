"""The synthetic config through the real snakemake executable, end to end."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, snakemake

from atlib.plan import build_plan
from atlib.rundir import write_metrics
from atlib.tables import aggregate, cells, legend


@pytest.fixture(scope="module")
def done(synthetic_dag):
    return synthetic_dag


def test_table_cells_are_the_medians_of_the_run_metrics(done):
    workdir, proc = done
    runs = sorted((workdir / "results/runs").rglob("metrics.json"))
    assert len(runs) == 10  # 2 seeds x (teacher, student, at, kd, sp)
    cells = pd.read_csv(workdir / "results/synthetic/tables/table1.csv")
    assert list(cells.column) == ["student", "at", "kd", "sp", "teacher"]
    for _, cell in cells.iterrows():
        errors = [json.loads((workdir / "results/runs" / r / "metrics.json").read_text())["final_test_error"]
                  for r in cell.runs.split()]
        assert cell["n"] == 2 and cell["median"] == pytest.approx(pd.Series(errors).median())
        paper = {"student": 8.77, "at": 7.93, "kd": 7.41, "teacher": 6.31}.get(cell.column)  # SP: not in the paper
        assert pd.isna(cell.paper) if paper is None else cell.paper == paper
    assert "## Table 1 layout on synthetic data" in proc.stdout  # printed at the end
    assert "bin/atlib browse results/synthetic  (serves " in proc.stdout  # the venv's own: nothing to activate


def test_a_cell_is_the_median_of_its_seeds_not_their_mean(tmp_path, monkeypatch):
    """The DAG's cells have two seeds, whose median is their mean: here three and four, skewed."""
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load((ROOT / "tests/configs/synthetic.yaml").read_text())
    cfg["tables"]["table1"]["columns"] = ["student", "teacher"]
    for seeds, errors, median in (([0, 1, 2], [1.0, 2.0, 9.0], 2.0), ([0, 1, 2, 3], [1.0, 2.0, 3.0, 10.0], 2.5)):
        cfg["seeds"] = seeds
        plan = build_plan(cfg)
        [cell] = [c for c in plan.cells if c.column == "student"]
        for run, error in zip(cell.runs, errors, strict=True):
            Path(plan.run_dir(run)).mkdir(parents=True, exist_ok=True)
            write_metrics(plan.run_dir(run), {"final_test_error": error, "model": "wrn-10-1", "method": "baseline",
                                              "seed": plan.runs[run]["seed"], "history": []})
        [row] = cells(plan, aggregate(plan)).query("column == 'student'").to_dict("records")
        assert (row["n"], row["median"], row["min"], row["max"]) == (len(seeds), median, 1.0, max(errors))
        assert row["median"] != pytest.approx(sum(errors) / len(errors))


def test_runs_are_in_mlflow_linked_to_their_teachers(done):
    workdir, _ = done
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir}/results/mlflow.db")
    exp = client.get_experiment_by_name("synthetic")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 10 and all(r.info.status == "FINISHED" for r in runs)
    by_id = {r.info.run_id: r for r in runs}
    students = [r for r in runs if r.data.tags.get("method") in ("at", "kd", "sp")]
    assert len(students) == 6
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


def test_snakemake_report_is_one_self_contained_file_with_every_table_and_figure(done, tmp_path):
    workdir, _ = done
    out = tmp_path / "report.html"  # not in the shared DAG's folder, where scripts/ui_check.py reads its own
    proc = snakemake(workdir, "--report", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:]
    html = out.read_text()
    assert out.stat().st_size > 10_000 and 'src="http' not in html  # no fetch from elsewhere to show it
    figures = sorted(p.name for p in (workdir / "results/synthetic/figures").glob("*.png"))
    assert figures and all(name in html for name in figures)
    for name in ("table1.md", "report.md", "Verdicts", "Figures", "Tables"):
        assert name in html, name


def test_a_tables_legend_explains_exactly_the_marks_its_cells_carry():
    median = "Test error (%): median over seeds [min–max] and the number of runs"
    complete = [["row", "ours", "31.12 [28.55–32.52] n=5", "12.58 n=1"]]  # no paper line, nothing missing
    assert legend(complete) == median + "."
    partial = [["row", "ours", "7.10 [7.0–7.2] n=3/5", "–"], ["", "paper", "6.31†", "–"], ["", "Δ", "+0.79", "–"]]
    assert legend(partial) == (median + "; n=k/N: k of the N planned runs finished; – in ours: no run of the cell "
                               "finished yet; – in paper: the paper gives no number for the cell. † marks a paper "
                               "number not confirmed from a readable copy.")
    # one mark alone: a missing paper number explains only itself, not a run missing from ours
    no_paper = [["row", "ours", "31.12 [28.55–32.52] n=5"], ["", "paper", "–"], ["", "Δ", "–"]]
    assert legend(no_paper) == median + "; – in paper: the paper gives no number for the cell."
