"""The live tracker: the MLflow run of one run directory while it trains, retried, and given up (never the
training) once MLflow stays unreachable."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .lineage import Lineage, log_lineage
from .names import _flat
from .store import _brief, _client, ensure_experiments, retry, retry_seconds

if TYPE_CHECKING:
    import numpy as np


class Tracker:
    """The MLflow run of one run directory: exactly one per run id, whatever was killed when.

    The run's ``run`` tag (its run id) is its identity. A resumed run continues the latest MLflow
    run with that tag; a run trained from scratch replaces every earlier one (e.g. the run of a job
    killed before its first checkpoint, or one whose outputs Snakemake discarded as incomplete).

    MLflow never stops training: each call is retried for ``retry_seconds()``; once one has failed that
    long, the run warns once and goes on without MLflow, and ``sync_run`` completes its MLflow run later.

    With ``lineage``, the run's data and teacher become its inputs (``atlib.tracking.lineage``). With
    ``system_metrics``, MLflow's SystemMetricsMonitor logs CPU, memory, disk and network use (GPU use too
    where nvidia-ml-py is installed) as ``system/*`` metrics every $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
    seconds (10), in a thread of its own, until ``finish``; MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns it off.
    """

    def __init__(self, uri: str, experiment: str, run_name: str, tags: Mapping[str, str],
                 params: Mapping[str, Any], resume: bool = False, system_metrics: bool = False,
                 lineage: Lineage | None = None) -> None:
        self.uri, self.seconds = uri, retry_seconds()
        self.run_id: str | None = None
        self.client: Any = None
        self.offline = False
        self.monitor: Any = None
        self._call("start", partial(self._start, experiment, run_name, tags, params, resume))
        if lineage is not None:  # a call of its own: the run is there, whatever becomes of its inputs
            self._call("its data and teacher", lambda: log_lineage(self.client, self.uri, self.run_id, lineage))
        if system_metrics and not self.offline:
            self._monitor_system(resume)

    def _monitor_system(self, resume: bool) -> None:
        if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").lower() in ("false", "0"):
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # resumed, it goes on from the run's last system step instead of logging steps 0, 1, ... again
            self.monitor = SystemMetricsMonitor(self.run_id, resume_logging=resume, tracking_uri=self.uri)
            self.monitor.start()
        except Exception as e:  # psutil missing, say: the run's own metrics matter, its machine's use less
            self.monitor = None
            print(f"atlib: warning: no system metrics for this run ({_brief(e)})", file=sys.stderr, flush=True)

    def _start(self, experiment: str, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any],
               resume: bool) -> None:
        from mlflow.entities import Param, RunTag

        exp_id = ensure_experiments([experiment], self.uri)[experiment]
        self.client = _client(self.uri)  # the store ensure_experiments opened
        earlier = self.client.search_runs([exp_id], f"tags.run = '{tags['run']}'",
                                          order_by=["attributes.start_time DESC"])
        if resume and earlier:
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            earlier = earlier[1:]
        else:  # retried after a failure, this replaces the run it had created
            self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags)).info.run_id
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in _flat(params).items()])
        for old in earlier:
            self.client.delete_run(old.info.run_id)
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def _call(self, what: str, call: Callable[[], object]) -> None:
        if self.offline:
            return
        try:
            retry(call, self.seconds)
        except Exception as e:  # whatever MLflow raised: the training it tracks is the expensive part
            self.offline = True
            print(f"atlib: warning: MLflow failed at {what} ({_brief(e)}); this run goes on without MLflow, "
                  "and `atlib mlflow-sync` (run by `make reproduce`) completes its MLflow run from metrics.json",
                  file=sys.stderr, flush=True)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k.replace("/", "."), float(v), now, step) for k, v in metrics.items()]
        # one call: 12 metrics by log_batch took 10.0 ms, by 12 log_metric calls 96.3 ms (SQLite store, 2026-11-26)
        self._call(f"epoch {step}", lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: Path) -> None:
        self._call(Path(path).name, lambda: self.client.log_artifact(self.run_id, str(path)))

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """An image ((H, W) or (H, W, 3 or 4) uint8 pixels) at a step, e.g. the attention maps after an epoch:
        the run's image view shows the latest step of ``key``, with a slider through the others."""
        # synchronous: an asynchronous log would fail out of the retry's reach
        self._call(f"{key} image at step {step}", lambda: self.client.log_image(
            self.run_id, image, key=key, step=step, timestamp=int(time.time() * 1000), synchronous=True))

    def finish(self, status: str = "FINISHED") -> None:
        if self.monitor is not None:  # its last samples go to the run while it still runs
            self.monitor.finish()
            self.monitor = None
        self._call(f"the end ({status})", lambda: self.client.set_terminated(self.run_id, status=status))


class NullTracker:
    """Tracking switched off (``tracking.enabled: false``): every call is a no-op."""

    run_id: str | None = None

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None: ...
    def log_artifact(self, path: Path) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...
