"""MLflow tracking: the only module that imports mlflow (imported lazily: it costs ~1.5 s).

Runs are found in the UI by experiment (one per paper table, or ``atlib`` for single runs) and
by tags: role, dataset, model, method, variant, seed, table, row, teacher_run and teacher_sha256.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_STORE = "results/mlflow.db"
ARTIFACTS = "results/mlartifacts"


def tracking_uri(store: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file ``store`` (default results/mlflow.db)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(store or DEFAULT_STORE).resolve()}"


def ensure_experiments(names: Iterable[str], uri: str, artifact_root: str = ARTIFACTS) -> dict[str, str]:
    """Create the database and the experiments once, up front.

    Concurrent first writers to a fresh SQLite store lose runs, and concurrent ``set_experiment``
    calls on a new name race; creating everything before the jobs start avoids both.
    """
    import mlflow

    client = mlflow.MlflowClient(uri)
    ids = {}
    for name in sorted(set(names)):
        exp = client.get_experiment_by_name(name)
        if exp is None:
            if uri.startswith(("http://", "https://")):
                location = None  # a tracking server stores artifacts where it was told to (--artifacts)
            elif "://" in artifact_root:
                location = f"{artifact_root.rstrip('/')}/{name}"
            else:  # fixed here: MLflow would otherwise resolve it against each creating process's cwd
                location = Path(artifact_root, name).resolve().as_uri()
            ids[name] = client.create_experiment(name, artifact_location=location)
        else:
            ids[name] = exp.experiment_id
    return ids


def tag_runs(uri: str, tags: Mapping[str, Mapping[str, str]]) -> None:
    """Add tags to existing runs, e.g. which table cells a run fills (known only once the plan is laid out)."""
    import mlflow
    from mlflow.entities import RunTag

    client = mlflow.MlflowClient(uri)
    for run_id, run_tags in tags.items():
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in run_tags.items()])


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:6000]
    return out


class Tracker:
    """The MLflow run of one run directory: exactly one per run id, whatever was killed when.

    The run's ``run`` tag (its run id) is its identity. A resumed run continues the latest MLflow
    run with that tag; a run trained from scratch replaces every earlier one (e.g. the run of a job
    killed before its first checkpoint, or one whose outputs Snakemake discarded as incomplete).
    """

    def __init__(self, uri: str, experiment: str, run_name: str, tags: Mapping[str, str],
                 params: Mapping[str, Any], resume: bool = False) -> None:
        import mlflow
        from mlflow.entities import Metric, Param, RunTag

        self._Metric = Metric
        self.client = mlflow.MlflowClient(uri)
        exp_id = ensure_experiments([experiment], uri)[experiment]
        earlier = self.client.search_runs([exp_id], f"tags.run = '{tags['run']}'",
                                          order_by=["attributes.start_time DESC"])
        if resume and earlier:
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            earlier = earlier[1:]
        else:
            self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags)).info.run_id
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in _flat(params).items()])
        for old in earlier:
            self.client.delete_run(old.info.run_id)
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        import time

        now = int(time.time() * 1000)
        batch = [self._Metric(k.replace("/", "."), float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)  # one call: single log_metric calls are ~10x slower

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def log_png(self, png: bytes, artifact_file: str) -> None:
        """An image (PNG bytes) as an artifact, e.g. attention maps, shown in the UI's artifact view."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(png)
            self.client.log_artifact(self.run_id, str(path), str(Path(artifact_file).parent))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class NullTracker:
    """Tracking switched off (``tracking.enabled: false``): every call is a no-op."""

    run_id: str | None = None

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_artifact(self, path: Path) -> None: ...
    def log_png(self, png: bytes, artifact_file: str) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...
