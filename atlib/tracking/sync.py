"""Completing runs from their metrics.json: what a job that went on without MLflow left out is added afterwards,
nothing twice."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from .. import rundir
from .names import _flat, run_name
from .store import _brief, _client, ensure_experiments, retry, retry_seconds
from .ui import tracking_uri


def _agrees(history: Mapping[str, list], points: Mapping[tuple[str, int], float]) -> bool:
    """Whether logged metric histories hold each point at most once, each as metrics.json records it."""
    seen = set()
    for key, logged in history.items():
        for p in logged:
            if (key, p.step) in seen or points.get((key, p.step)) != p.value:
                return False
            seen.add((key, p.step))
    return True


def _replace(client: Any, exp_id: str, run: Any) -> str:
    """A new run with ``run``'s tags and artifacts, but no metrics: MLflow cannot delete a metric point."""
    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}
    new = client.create_run(exp_id, run_name=run.info.run_name, tags=tags).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifacts(new, client.download_artifacts(run.info.run_id, "", tmp))
    return new


def sync_run(run_dir: Path, uri: str | None = None) -> str:
    """Make MLflow hold exactly one FINISHED run of a finished run directory, complete as its metrics.json.

    Its Tracker logs metric ``k`` of each history row as ``k`` with '/' as '.', at step = epoch; a job that
    went on without MLflow left its run short of epochs, its end, or all of it: what is missing is added,
    nothing is logged twice (MLflow's metric history is append-only: a point logged again is a second point).
    A run that holds a point twice or another value than metrics.json (an epoch trained again after a
    resume) is replaced by a new run with its tags and artifacts: its MLflow run id then differs from the
    ``mlflow_run_id`` of metrics.json. Idempotent. Returns what changed, "" if nothing did.
    """
    from mlflow.entities import Metric, Param, RunTag

    path = rundir.metrics_file(run_dir)
    m = rundir.read_metrics(run_dir)
    tracking = m["config"].get("tracking") or {}
    if not tracking.get("enabled", True):
        return ""
    uri = uri or tracking_uri(tracking.get("store"))
    experiment = tracking.get("experiment", "atlib")
    exp_id = ensure_experiments([experiment], uri)[experiment]
    client = _client(uri)
    runs = client.search_runs([exp_id], f"tags.run = '{m['run_id']}'", order_by=["attributes.start_time DESC"])
    points = {(k.replace("/", "."), int(row["epoch"])): float(v) for row in m["history"] for k, v in row.items()}
    params = _flat(m["config"])
    changes = []
    run = next((r for r in runs if r.info.run_id == m.get("mlflow_run_id")), runs[0] if runs else None)
    if run is None:
        # named and tagged as its job would have (the job recorded its tags in metrics.json)
        tags = m.get("tags") or {}
        run = client.get_run(client.create_run(exp_id, run_name=run_name(m["config"]), tags=tags).info.run_id)
        changes.append(f"created MLflow run {run.info.run_id}")
        history: dict[str, list] = {}
    else:
        history = {key: client.get_metric_history(run.info.run_id, key) for key in {k for k, _ in points}}
        if not _agrees(history, points) or any(params.get(k, v) != v for k, v in run.data.params.items()):
            old = run.info.run_id
            run = client.get_run(_replace(client, exp_id, run))
            changes.append(f"replaced MLflow run {old} (its metrics disagreed with metrics.json) by {run.info.run_id}")
            history = {}
    run_id = run.info.run_id
    have = {(key, p.step) for key, logged in history.items() for p in logged}
    now = int(time.time() * 1000)
    missing = [Metric(k, v, now, step) for (k, step), v in sorted(points.items()) if (k, step) not in have]
    for i in range(0, len(missing), 1000):  # MLflow's limit per batch
        client.log_batch(run_id, metrics=missing[i:i + 1000])
    if missing:
        changes.append(f"{len(missing)} metric points")
    new_params = [Param(k, v) for k, v in params.items() if k not in run.data.params]
    new_tags = [RunTag(k, v) for k, v in (m.get("tags") or {}).items() if k not in run.data.tags]
    if new_params or new_tags:
        client.log_batch(run_id, params=new_params, tags=new_tags)
        changes += [f"{len(new)} {what}" for what, new in (("params", new_params), ("tags", new_tags)) if new]
    if path.name not in {a.path for a in client.list_artifacts(run_id)}:
        client.log_artifact(run_id, str(path))
        changes.append(path.name)
    if run.info.status != "FINISHED":
        client.set_terminated(run_id, "FINISHED", end_time=int(path.stat().st_mtime * 1000))
        changes.append(f"{run.info.status} -> FINISHED")
    others = [r.info.run_id for r in runs if r.info.run_id != run_id]
    for other in others:
        client.delete_run(other)
    if others:
        changes.append(f"deleted {len(others)} other MLflow runs of it")
    return ", ".join(changes)


def sync_runs(run_dirs: Iterable[Path], log: Callable[[str], None] = print) -> bool:
    """``sync_run`` every finished one (with a metrics.json) of ``run_dirs``, each retried like a job's tracking
    calls; one line per run changed. False, after one warning, once MLflow stays unreachable: the runs not
    synced wait for the next sync."""
    seconds = retry_seconds()
    for run_dir in run_dirs:
        if not rundir.metrics_file(run_dir).is_file():
            continue  # unfinished: its own job tracks it
        try:
            changed = retry(partial(sync_run, Path(run_dir)), seconds)
        except Exception as e:  # the store is down, locked or broken: the runs' files are whole, sync later
            log(f"atlib: warning: MLflow sync of {run_dir} failed ({_brief(e)}); "
                "the next `atlib mlflow-sync` completes it and the runs after it")
            return False
        if changed:
            log(f"{run_dir}: {changed}")
    return True
