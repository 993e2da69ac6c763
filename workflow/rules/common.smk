# Helpers of the rules: paths and inputs, all read from the plan (atlib.plan).
import json
import time
from pathlib import Path

from atlib import preflight, progress


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


PROGRESS = {}  # the progress watcher and when it started: set by onstart


def start_progress():
    """One line per finished run with done/total and an ETA (atlib.progress), from a thread of this process."""
    resources = workflow.resource_settings.resources
    try:
        slots = resources["gpu"]
    except (KeyError, TypeError):
        slots = None
    jobs = progress.jobs_at_once(workflow.local_exec, workflow.resource_settings.cores,
                                 workflow.resource_settings.nodes, PLAN.threads, PLAN.resources["gpu"],
                                 getattr(slots, "value", slots))
    PROGRESS["since"] = time.time()
    PROGRESS["watcher"] = progress.Watcher(PLAN, f"{RESULTS}/logs", jobs, images=preflight.train_images(PLAN))
    PROGRESS["watcher"].start()


def stop_progress():
    if "watcher" in PROGRESS:
        PROGRESS["watcher"].stop()


def print_failures():
    """Each failed run's one-line reason from its log: on a cluster Snakemake shows none of a job's output."""
    for line in preflight.failure_reasons(PLAN, f"{RESULTS}/logs", PROGRESS.get("since", 0.0)):
        print(line)
