"""MLflow tracking: the only module that imports mlflow (imported lazily: it costs ~1.5 s).

Runs are found in the UI by experiment (one per dataset, or ``atlib`` for single runs), by name
(:func:`run_name`: method, seed, student←teacher, recipe) and by tags: role, dataset, model, method,
variant, seed, table, row, teacher_run and teacher_sha256; the run id is the ``run`` tag. One summary
run per config and table (:func:`log_summaries`) holds the table's medians and links its cells' runs.

Tracking never stops training: a run retries each MLflow call for a bounded window and then goes on
without MLflow; ``sync_run`` later completes its MLflow run from the run's metrics.json.
"""

from __future__ import annotations

import csv
import fcntl
import getpass
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import rundir

if TYPE_CHECKING:
    import numpy as np

DEFAULT_STORE = "results/mlflow.db"
ARTIFACTS = "results/mlartifacts"
RETRY_ENV = "ATLIB_MLFLOW_RETRY_SECONDS"
RETRY_SECONDS = 60.0
# MLflow sets this SQLite busy timeout on every call once the store is open (PRAGMA busy_timeout = 20000)
BUSY_SECONDS = 20
# MLflow errors that no wait mends: the request itself is wrong, or refused
PERMANENT = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "UNAUTHENTICATED",
                       "PERMISSION_DENIED"})
# MLflow 3's UI shows an experiment tagged so as a model-training one (runs, metrics), not a GenAI one
# (traces); mlflow/demo/generators/traces.py sets the same key to "genai_development"
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# MLflow 3.17's UI picks its view from ?workflowType= (else the last one chosen in that browser, else GenAI)
# before it looks at the tag: a link into the runs list carries it
UI_VIEW = "workflowType=machine_learning"
# MLflow 3.17's runs list opens a saved view from ?viewStateShareKey=<id>: the experiment tag VIEW_TAG + <id> holds
# it as {name, createdAt, updatedAt, state}, state the JSON of the list's search facets (its sort) and UI state (its
# columns); its Views menu lists the view by name. Its URL's own facets (orderByKey, orderByAsc) can sort the list by a
# metric, but no URL parameter shows a metric's column. Every training experiment gets this one.
VIEW_TAG = "mlflow.sharedViewState."
RANKED_VIEW = "atlib-test-error"
RANKED_NAME = "Ranked by test error"
# (The list orders metric columns by name: test_error comes first.)
RANKED_STATE = {"orderByKey": "metrics.`test_error`", "orderByAsc": True, "runsHiddenMode": "SHOW_ALL",
                "selectedColumns": ["metrics.`test_error`", "metrics.`train_error`"]}
SUMMARY_SUFFIX = " · tables"  # the experiment of a config's summary runs: a space, which no dataset key has
UI = "http://127.0.0.1:5000"  # where `mlflow ui` and `atlib browse` serve by default
NOTE = "mlflow.note.content"  # the run's Markdown description, shown on its Overview page
MAX_TAG = 8000  # MLflow's longest tag value (mlflow.utils.validation.MAX_TAG_VAL_LENGTH)
T = TypeVar("T")


def tracking_uri(store: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file ``store`` (default results/mlflow.db)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(store or DEFAULT_STORE).resolve()}"


def ui_base() -> str:
    """Where MLflow's UI is: the tracking server of ``MLFLOW_TRACKING_URI`` when it is one, else ``mlflow ui``'s
    default address (a SQLite store has no UI of its own)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    return env if env.startswith(("http://", "https://")) else UI


def ui_url(experiment_id: str, run_id: str | None = None, base: str | None = None) -> str:
    """A page of MLflow's UI (hash routes ``/experiments/<id>/runs[/<run>]``): an experiment's runs list, or a run."""
    base = base or ui_base()
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs{f'/{run_id}' if run_id else ''}?{UI_VIEW}"


def ranked_url(experiment_id: str, base: str | None = None) -> str:
    """An experiment's runs list in the view "Ranked by test error" (RANKED_VIEW): its test error column first, the
    runs sorted by it, lowest first."""
    base = base or ui_base()
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={RANKED_VIEW}&{UI_VIEW}"


def ranked_view(created_ms: int) -> str:
    """The value of the experiment tag that holds the view RANKED_VIEW."""
    return json.dumps({"name": RANKED_NAME, "createdAt": created_ms, "updatedAt": created_ms,
                       "state": json.dumps(RANKED_STATE)})


def _has_ranked_view(tags: Mapping[str, str]) -> bool:
    try:
        return json.loads(json.loads(tags[VIEW_TAG + RANKED_VIEW])["state"]) == RANKED_STATE
    except (KeyError, TypeError, ValueError):
        return False


def ensure_ranked_view(client: Any, experiment: Any) -> None:
    """Give a training experiment (not a summary one) the view RANKED_VIEW, as atlib defines it now."""
    if not experiment.name.endswith(SUMMARY_SUFFIX) and not _has_ranked_view(experiment.tags):
        client.set_experiment_tag(experiment.experiment_id, VIEW_TAG + RANKED_VIEW,
                                  ranked_view(experiment.creation_time or int(time.time() * 1000)))


def atlib_command() -> str:
    """How to run atlib in this environment without activating it: its script beside this Python (relative to the
    working folder when it lies below it), else this Python with -m atlib."""
    script = Path(sys.executable).with_name("atlib")
    if not script.is_file():
        return f"{sys.executable} -m atlib"
    relative = os.path.relpath(script.absolute())
    return relative if not relative.startswith("..") else str(script.absolute())


def browse_hint(store: str, report_dir: Path | str) -> str:
    """How a person sees the runs: ``atlib browse`` on the config's results folder (or, with a tracking server,
    that server), then what it opens: each experiment's runs list ranked by test error, from the DAG's
    results/<name>/mlflow-experiments.tsv ('name<TAB>id'), and each table's summary run, from mlflow-summary.tsv
    ('table<TAB>experiment<TAB>run<TAB>URL')."""
    def rows(name: str) -> list[list[str]]:
        path = Path(report_dir, name)
        return [line.split("\t") for line in path.read_text().splitlines()] if path.is_file() else []

    pages = [(ranked_url(eid), f"{name}: its runs, ranked by test error")
             for name, eid, *_ in rows("mlflow-experiments.tsv")]
    pages += [(ui_url(eid, run), f"{table}: the table's summary run") for table, eid, run, *_ in
              rows("mlflow-summary.tsv")]
    uri = tracking_uri(store)
    if uri == ui_base():
        head = f"Browse the runs on the tracking server {uri}:"
    else:
        store = uri.removeprefix("sqlite:///")
        head = f"Browse the runs: {atlib_command()} browse {report_dir}  (serves {store}; Ctrl-C stops it), then open:"
    return head + "".join(f"\n  {url}  ({what})" for url, what in pages)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (a bare container)
        return "unknown"


def _slug(model: Mapping[str, Any] | str) -> str:
    from .spec import ModelSpec

    m = {"name": model} if isinstance(model, str) else model
    return ModelSpec(m["name"], dict(m.get("options") or {})).slug


def run_name(config: Mapping[str, Any]) -> str:
    """The name the runs list shows, from a run spec dict (``RunSpec.to_dict()``, metrics.json's ``config``):
    method variant, seed, student←teacher and recipe, e.g. ``at · s3 · wrn-16-1←wrn-16-2 · quick``.

    The seed comes before the pair: MLflow 3.17's runs list cuts names after about 25 characters, and runs of one
    cell differ only in their seed. The recipe is there because a dataset's experiment may hold a model and seed
    under two recipes (config/paper.yaml trains nin-wide seed 0 under ``paper`` and ``table3``)."""
    method = config.get("method") or "baseline"
    tags = (config.get("tracking") or {}).get("tags") or {}
    pair = _slug(config["model"])
    if config.get("teacher"):
        pair += f"←{_slug(config['teacher']['model'])}"
    parts = [str(tags.get("variant") or (method if isinstance(method, str) else method["name"])),
             f"s{config.get('seed', 0)}", pair]
    return " · ".join(parts + ([str(tags["recipe"])] if tags.get("recipe") else []))


def run_note(config: Mapping[str, Any], teacher_run: str | None = None) -> str:
    """A paragraph of Markdown that says what a run is: its pair, method and parameters, data, recipe and
    teacher run (a link to it). Shown as the run's description in MLflow's UI."""
    method = config.get("method") or "baseline"
    method = {"name": method} if isinstance(method, str) else method
    # sorted: metrics.json (which sync reads) keeps its keys sorted, a RunSpec in its fields' order
    params = ", ".join(f"{k}={v}" for k, v in sorted(method.items()) if k != "name" and v is not None)
    data = config.get("dataset") or {}
    sizes = ", ".join(f"{k.removesuffix('_size')} {v}" for k, v in data.items() if k.endswith("_size") and v)
    r = config.get("recipe") or {}
    recipe = (config.get("tracking") or {}).get("tags", {}).get("recipe", "")
    text = f"**{method['name']}**{f' ({params})' if params else ''}: student {_slug(config['model'])}"
    if config.get("teacher"):
        link = f" (MLflow run [{teacher_run[:8]}](#/runs/{teacher_run}))" if teacher_run else ""
        text += f" taught by {_slug(config['teacher']['model'])} from `{config['teacher']['run_dir']}`{link}"
    else:
        text += ", trained alone: a teacher or a baseline"
    text += (f". Seed {config.get('seed', 0)}, on {data.get('name', '?')}{f' ({sizes})' if sizes else ''}, "
             f"recipe {recipe + ': ' if recipe else ''}{r.get('epochs', '?')} epochs, "
             f"batch {r.get('batch_size', '?')}, lr {r.get('lr', '?')}. Run id `{config.get('run_id', '?')}`.")
    return text


def standard_tags(config: Mapping[str, Any], teacher_run: str | None, commit: str | None) -> dict[str, str]:
    """MLflow's own tags, which its UI shows in its fields: git commit, user, description."""
    tags = {"mlflow.user": _user(), NOTE: run_note(config, teacher_run)[:MAX_TAG]}
    return tags | ({"mlflow.source.git.commit": commit} if commit else {})


def retry_seconds() -> float:
    """How long one tracking call is retried before the run goes on without MLflow: $ATLIB_MLFLOW_RETRY_SECONDS."""
    return float(os.environ.get(RETRY_ENV) or RETRY_SECONDS)


def _transient(e: Exception) -> bool:
    """An error that waiting may mend: a locked or missing store, a server that is down, restarting or busy."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    if isinstance(e, MlflowException):
        return e.error_code not in PERMANENT
    return isinstance(e, OperationalError | OSError)


def retry(call: Callable[[], T], seconds: float) -> T:
    """``call()``, again after 0.5, 1, 2, ... s (10 s at most) while it fails transiently; its error once
    ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    delay = 0.5
    while True:
        try:
            return call()
        except Exception as e:
            if not _transient(e) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 10.0)


def _brief(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


def _client(uri: str) -> Any:
    """An MlflowClient each of whose calls ends within about BUSY_SECONDS, so that ``retry`` alone decides how
    long tracking waits."""
    import mlflow

    # MLflow's own HTTP retries (7, backing off up to 2 min each) and 120 s timeout would outlast any window
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(BUSY_SECONDS))
    if uri.startswith("sqlite:") and "?" not in uri:
        # opening the store (checking or creating its tables) would wait for a lock only sqlite3's default 5 s
        uri = f"{uri}?timeout={min(BUSY_SECONDS, retry_seconds()):g}"
    return mlflow.MlflowClient(uri)


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a SQLite store while it is opened: concurrent first writers to a fresh store
    (one deleted since ``atlib mlflow-init``, say) break its schema and lose every run. Waited for as long as
    the store's own busy timeout, so that jobs queueing behind a holder stuck on a locked store stay within
    their retry window."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f"{path.name}.lock")
    deadline = time.monotonic() + min(BUSY_SECONDS, retry_seconds())
    with open(lock, "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{lock} is held by another process") from None  # transient: retried
                time.sleep(0.05)
            except OSError:  # a filesystem without locks (NFS without lockd): open it unserialised
                break
        yield


def ensure_experiments(names: Iterable[str], uri: str, artifact_root: str = ARTIFACTS) -> dict[str, str]:
    """Create the database and the experiments that are missing, each tagged as a model-training experiment.

    Concurrent first writers to a fresh SQLite store lose runs, and concurrent ``set_experiment``
    calls on a new name race: ``atlib mlflow-init`` creates everything before the jobs start, and each
    job calls this again, under a lock, for a store deleted or replaced since.
    """
    ids = {}
    with _store_lock(uri):
        client = _client(uri)  # opens the store, creating its tables if they are missing
        for name in sorted(set(names)):
            exp = client.get_experiment_by_name(name)
            if exp is None:
                if uri.startswith(("http://", "https://")):
                    location = None  # a tracking server stores artifacts where it was told to (--artifacts)
                elif "://" in artifact_root:
                    location = f"{artifact_root.rstrip('/')}/{name}"
                else:  # fixed here: MLflow would otherwise resolve it against each creating process's cwd
                    location = Path(artifact_root, name).resolve().as_uri()
                tags = dict([EXPERIMENT_KIND])
                if not name.endswith(SUMMARY_SUFFIX):
                    tags[VIEW_TAG + RANKED_VIEW] = ranked_view(int(time.time() * 1000))
                ids[name] = client.create_experiment(name, artifact_location=location, tags=tags)
            else:
                ids[name] = exp.experiment_id
                if EXPERIMENT_KIND[0] not in exp.tags:  # created before atlib set it; a kind chosen since stays
                    client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
                ensure_ranked_view(client, exp)  # a store made before atlib defined it, or another definition
    return ids


def tag_runs(uri: str, tags: Mapping[str, Mapping[str, str]]) -> None:
    """Add tags to existing runs, e.g. which table cells a run fills (known only once the plan is laid out)."""
    from mlflow.entities import RunTag

    client = _client(uri)
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

    MLflow never stops training: each call is retried for ``retry_seconds()``; once one has failed that
    long, the run warns once and goes on without MLflow, and ``sync_run`` completes its MLflow run later.

    With ``system_metrics``, MLflow's SystemMetricsMonitor logs CPU, memory, disk and network use (GPU use too
    where nvidia-ml-py is installed) as ``system/*`` metrics every $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
    seconds (10), in a thread of its own, until ``finish``; MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns it off.
    """

    def __init__(self, uri: str, experiment: str, run_name: str, tags: Mapping[str, str],
                 params: Mapping[str, Any], resume: bool = False, system_metrics: bool = False) -> None:
        self.uri, self.seconds = uri, retry_seconds()
        self.run_id: str | None = None
        self.client: Any = None
        self.offline = False
        self.monitor: Any = None
        self._call("start", partial(self._start, experiment, run_name, tags, params, resume))
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


# --- completing runs from their metrics.json ---------------------------------------------------

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


# --- one summary run per table -------------------------------------------------------------------

_NOT_IN_KEY = re.compile(r"[^A-Za-z0-9_.\- ]+")  # MLflow also takes ':' and '/'; '/' reads as a folder


def summary_experiment(config: str) -> str:
    """The experiment of a config's summary runs: a space, which no dataset key has, keeps it apart."""
    return f"{config}{SUMMARY_SUFFIX}"


def metric_key(*parts: str) -> str:
    """``parts`` joined by '.', each made a valid MLflow metric name part: ``wrn-16-1 <- wrn-16-2`` becomes
    ``wrn-16-1 from wrn-16-2``, ``at+kd`` ``at_kd``."""
    clean = [_NOT_IN_KEY.sub("_", p.replace("<-", "from").replace("←", "from")).strip(" .") or "_" for p in parts]
    return ".".join(clean)[:250]  # MLflow's longest key


def _runs_by_tag(client: Any, experiment_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Run id (the ``run`` tag) -> (MLflow experiment id, MLflow run id) of every active run: the runs as MLflow
    holds them now, so that a run synced or replaced since its metrics.json was written is linked right."""
    out: dict[str, tuple[str, str]] = {}
    token = None
    while True:
        page = client.search_runs(list(experiment_ids), max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])
        for r in page:
            if "run" in r.data.tags:
                out.setdefault(r.data.tags["run"], (r.info.experiment_id, r.info.run_id))
        token = page.token
        if not token:
            return out


def _summary_note(title: str, config: str, table: str, cells: list[dict[str, str]], seeds: Mapping[str, int],
                  links: Mapping[str, tuple[str, str]]) -> str:
    head = (f"**{title}**: config `{config}`, table `{table}`. Metrics `median.<row>.<column>`: each cell's median "
            "test error (%) over its seeds. Artifacts: the table (tables/), its figures (figures/), report.md, and "
            "runs.csv, every cell's runs with their MLflow run ids.\n")
    lines = []
    for c in cells:
        runs = " · ".join(f"[s{seeds[r]}](#/experiments/{links[r][0]}/runs/{links[r][1]})"
                          for r in c["runs"].split() if r in links)
        median = f"{float(c['median']):.2f}" if c["median"] else "–"
        metric = "" if c["metric"] == "top1" else f" ({c['metric']})"
        lines.append(f"- {c['row'].replace('<-', '←')} / {c['column']}{metric}: {median} "
                     f"(n={c['n']}/{c['planned']}) {runs}\n")
    text = head
    for i, line in enumerate(lines):
        if len(text) + len(line) > MAX_TAG - 100:
            return text + f"- … {len(lines) - i} more cells: runs.csv lists them\n"
        text += line
    return text


def summary_metrics(cells: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """The metrics of a table's summary run: each finished cell's median (lines of ``<table>.csv``), keyed
    ``median[_<metric>]/<row>/<column>`` in MLflow's allowed characters."""
    medians: dict[str, float] = {}
    for c in cells:
        if c["median"]:
            key = metric_key("median" if c["metric"] == "top1" else f"median_{c['metric']}", c["row"], c["column"])
            while key in medians:  # two labels that differ only in characters MLflow refuses
                key += "_"
            medians[key] = float(c["median"])
    return medians


def log_summaries(plan: Any, uri: str) -> list[tuple[str, str, str]]:
    """One FINISHED MLflow run per table of ``plan`` in experiment ``<config name> · tables``, found again by
    its tags ``summary=<config name>`` and ``table=<table>`` and updated in place: each cell's median (from
    results/<name>/tables/<table>.csv) as metric ``median.<row>.<column>`` (``median_top5.…`` for top-5 error),
    logged again only when it changed; the table (.md, .csv), its figures, report.md and runs.csv as artifacts; a
    note linking each cell's runs. Tagged, not a parent of those runs: a run can fill cells of several tables.
    Returns (table, experiment id, MLflow run id) per table."""
    import shutil

    from mlflow.entities import Metric, RunTag

    from .plan import planned_figures

    base = Path(plan.results, plan.name)
    # an experiment of its own: a table's cells may be in several experiments (a teacher trained on other data),
    # and a dataset's experiment stays a list of training runs
    ids = ensure_experiments([*plan.experiments, summary_experiment(plan.name)], uri)
    exp_id = ids.pop(summary_experiment(plan.name))
    client = _client(uri)
    links = _runs_by_tag(client, ids.values())
    seeds = {r: int(spec.get("seed", 0)) for r, spec in plan.runs.items()}
    figures = planned_figures(plan, base / "figures")
    done = []
    for table, layout in plan.tables.items():
        with open(base / "tables" / f"{table}.csv", newline="") as f:
            cells = list(csv.DictReader(f))
        tags = {"summary": plan.name, "table": table, "role": "summary", "mlflow.user": _user(),
                NOTE: _summary_note(layout.get("title", table), plan.name, table, cells, seeds, links)}
        found = client.search_runs([exp_id], f"tags.summary = '{plan.name}' and tags.table = '{table}'",
                                   order_by=["attributes.start_time DESC"])
        if found:
            run_id, have = found[0].info.run_id, found[0].data.metrics
        else:
            name = f"{table} · {plan.name}"
            run_id, have = client.create_run(exp_id, run_name=name, tags=tags).info.run_id, {}
        for twin in found[1:]:  # two summaries of one table (concurrent DAGs): one stays
            client.delete_run(twin.info.run_id)
        medians = summary_metrics(cells)
        now = int(time.time() * 1000)
        # a metric logged again is a second point of its history: only a changed median is
        changed = [Metric(k, v, now, 0) for k, v in medians.items() if have.get(k) != v]
        client.log_batch(run_id, metrics=changed, tags=[RunTag(k, v) for k, v in tags.items()])
        with tempfile.TemporaryDirectory() as tmp:
            for folder, files in (("tables", [base / "tables" / f"{table}.{ext}" for ext in ("md", "csv")]),
                                  ("figures", [f.path for f in figures if f.table == table]),
                                  ("", [base / "report.md"])):
                Path(tmp, folder).mkdir(exist_ok=True)
                for file in files:
                    if Path(file).is_file():  # run by hand before `atlib figures`, one may be missing
                        shutil.copy(file, Path(tmp, folder))
            with open(Path(tmp, "runs.csv"), "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["row", "column", "metric", "run", "seed", "mlflow_experiment_id", "mlflow_run_id"])
                for c in cells:
                    for r in c["runs"].split():
                        w.writerow([c["row"], c["column"], c["metric"], r, seeds[r], *links.get(r, ("", ""))])
            client.log_artifacts(run_id, tmp)  # the same paths each time: replaced, not added
        client.set_terminated(run_id, "FINISHED")
        done.append((table, exp_id, run_id))
    return done
