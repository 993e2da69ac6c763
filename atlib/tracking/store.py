"""Opening the store: a client whose calls end in bounded time, the lock that keeps concurrent first writers from
breaking a fresh SQLite store, the experiments, and the retries that let a job wait out a locked store or a server
that restarts."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .ui import EXPERIMENT_KIND, SUMMARY_SUFFIX, VIEW_TAG, VIEWS, ensure_views, saved_view

ARTIFACTS = "results/mlartifacts"
RETRY_ENV = "ATLIB_MLFLOW_RETRY_SECONDS"
RETRY_SECONDS = 60.0
# MLflow sets this SQLite busy timeout on every call once the store is open (PRAGMA busy_timeout = 20000)
BUSY_SECONDS = 20
# MLflow errors that no wait mends: the request itself is wrong, or refused
PERMANENT = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "UNAUTHENTICATED",
                       "PERMISSION_DENIED"})

T = TypeVar("T")


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
                    tags |= {VIEW_TAG + view: saved_view(view, int(time.time() * 1000)) for view in VIEWS}
                ids[name] = client.create_experiment(name, artifact_location=location, tags=tags)
            else:
                ids[name] = exp.experiment_id
                if EXPERIMENT_KIND[0] not in exp.tags:  # created before atlib set it; a kind chosen since stays
                    client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
                ensure_views(client, exp)  # a store made before atlib defined them, or other definitions
    return ids


def tag_runs(uri: str, tags: Mapping[str, Mapping[str, str]]) -> None:
    """Add tags to existing runs, e.g. which table cells a run fills (known only once the plan is laid out)."""
    from mlflow.entities import RunTag

    client = _client(uri)
    for run_id, run_tags in tags.items():
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in run_tags.items()])
