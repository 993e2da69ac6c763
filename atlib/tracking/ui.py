"""Where a person sees the runs: the store's address, MLflow's UI pages (an experiment's runs list, its view
"Ranked by test error", a run) and the hint printed at the end of a DAG."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_STORE = "results/mlflow.db"
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
# MLflow 3.17's runs list groups runs by a tag, a parameter or a dataset (its UI state's groupBy) and shows each
# group's metrics aggregated by min, average or max; it has no median, so the grouped view shows each method's mean
# test error beside its runs (each table's summary run holds the medians, atlib.tracking.summary).
GROUPED_VIEW = "atlib-by-method"
GROUPED_NAME = "Grouped by method (mean test error)"
GROUPED_STATE = {**RANKED_STATE, "groupBy": {"aggregateFunction": "average",
                                             "groupByKeys": [{"mode": "tag", "groupByData": "method"}]}}
VIEWS = {RANKED_VIEW: (RANKED_NAME, RANKED_STATE), GROUPED_VIEW: (GROUPED_NAME, GROUPED_STATE)}
SUMMARY_SUFFIX = " · tables"  # the experiment of a config's summary runs: a space, which no dataset key has
UI = "http://127.0.0.1:5000"  # where `mlflow ui` and `atlib browse` serve by default


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


def view_url(experiment_id: str, view: str, base: str | None = None) -> str:
    """An experiment's runs list in one of atlib's saved views (a key of VIEWS)."""
    base = base or ui_base()
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={view}&{UI_VIEW}"


def ranked_url(experiment_id: str, base: str | None = None) -> str:
    """An experiment's runs list in the view "Ranked by test error" (RANKED_VIEW): its test error column first, the
    runs sorted by it, lowest first."""
    return view_url(experiment_id, RANKED_VIEW, base)


def grouped_url(experiment_id: str, base: str | None = None) -> str:
    """An experiment's runs list in the view GROUPED_VIEW: a row per method (its ``method`` tag) with the mean test
    error of its runs, each group's runs below it, the groups sorted by test error."""
    return view_url(experiment_id, GROUPED_VIEW, base)


def saved_view(view: str, created_ms: int) -> str:
    """The value of the experiment tag that holds the saved view ``view`` (a key of VIEWS)."""
    name, state = VIEWS[view]
    return json.dumps({"name": name, "createdAt": created_ms, "updatedAt": created_ms, "state": json.dumps(state)})


def ranked_view(created_ms: int) -> str:
    """The value of the experiment tag that holds the view RANKED_VIEW."""
    return saved_view(RANKED_VIEW, created_ms)


def _has_view(tags: Mapping[str, str], view: str) -> bool:
    try:
        return json.loads(json.loads(tags[VIEW_TAG + view])["state"]) == VIEWS[view][1]
    except (KeyError, TypeError, ValueError):
        return False


def ensure_views(client: Any, experiment: Any) -> None:
    """Give a training experiment (not a summary one) atlib's saved views, as atlib defines them now."""
    if experiment.name.endswith(SUMMARY_SUFFIX):
        return
    for view in VIEWS:
        if not _has_view(experiment.tags, view):
            client.set_experiment_tag(experiment.experiment_id, VIEW_TAG + view,
                                      saved_view(view, experiment.creation_time or int(time.time() * 1000)))


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

    pages = [page for name, eid, *_ in rows("mlflow-experiments.tsv")
             for page in ((ranked_url(eid), f"{name}: its runs, ranked by test error"),
                          (grouped_url(eid), f"{name}: its runs grouped by method, each method's mean test error"))]
    pages += [(ui_url(eid, run), f"{table}: the table's summary run") for table, eid, run, *_ in
              rows("mlflow-summary.tsv")]
    uri = tracking_uri(store)
    if uri == ui_base():
        head = f"Browse the runs on the tracking server {uri}:"
    else:
        store = uri.removeprefix("sqlite:///")
        head = f"Browse the runs: {atlib_command()} browse {report_dir}  (serves {store}; Ctrl-C stops it), then open:"
    return head + "".join(f"\n  {url}  ({what})" for url, what in pages)
