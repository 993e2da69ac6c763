# Helpers of the rules: paths and inputs, all read from the plan (atlib.plan).
import json
from pathlib import Path


def run_outputs(run_id):
    return {"metrics": f"{PLAN.run_dir(run_id)}/metrics.json", "model": f"{PLAN.run_dir(run_id)}/model.pt"}


def train_inputs(wildcards):
    """A student waits for its teacher's checkpoint; every run waits for the MLflow experiments."""
    # ancient(): creating a new experiment later must not make every finished run look out of date
    inputs = {"experiments": ancient(f"{REPORT}/mlflow-experiments.tsv")}
    teacher = PLAN.teacher_of.get(wildcards.run)
    if teacher is not None:
        inputs |= {f"teacher_{k}": v for k, v in run_outputs(teacher).items()}
    return inputs


def run_spec(wildcards):
    return json.dumps(PLAN.runs[wildcards.run], sort_keys=True)


def waiting_students(wildcards):
    """A teacher first: every student of it waits for it, so the scheduler starts it before baselines."""
    return PLAN.students_waiting(wildcards.run)


def all_metrics():
    return [run_outputs(r)["metrics"] for r in PLAN.runs]


def print_tables():
    for table in PLAN.tables:
        path = Path(f"{REPORT}/tables/{table}.md")
        if path.exists():
            print(path.read_text())
    print(f"Tables: {REPORT}/tables/  Summary: {REPORT}/summary.csv  Report: {REPORT}/report.md")
    print(browse_hint(PLAN.store, REPORT))  # the URLs of the runs lists (browse_hint: mlflow_summary.smk)
