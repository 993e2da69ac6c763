"""``atlib browse``: MLflow's UI on the project's runs, opened where a person compares them.

It serves the store (results/mlflow.db, the config's ``tracking.store``, or the SQLite file of
``MLFLOW_TRACKING_URI``) with the mlflow of the environment atlib runs in, so that no environment needs activating;
when ``MLFLOW_TRACKING_URI`` names a tracking server it serves nothing and points there. It prints one URL per
experiment, its runs list in the view "Ranked by test error" (test error first, lowest first), one per experiment in
the view "Grouped by method" (a row per method with its runs' mean test error: MLflow's runs list aggregates a group
by min, mean or max, not by median), and one per table's summary run (each cell's median).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from . import server
from .tracking import (
    ARTIFACTS,
    DEFAULT_STORE,
    SUMMARY_SUFFIX,
    _client,
    ensure_views,
    grouped_url,
    ranked_url,
    summary_experiment,
    tracking_uri,
    ui_url,
)


def pages(uri: str, base: str, experiments: list[str] | None = None) -> list[tuple[str, str]]:
    """(URL, what it shows) for each experiment of the store (or of ``experiments``): a training experiment's runs
    list ranked by test error (its view is added where the store lacks it), each summary run of a summary one."""
    client = _client(uri)
    out = []
    for exp in sorted(client.search_experiments(), key=lambda e: int(e.experiment_id) if e.experiment_id.isdigit()
                      else 0):
        if experiments is not None and exp.name not in experiments:
            continue
        if exp.name.endswith(SUMMARY_SUFFIX):
            for run in client.search_runs([exp.experiment_id], "tags.role = 'summary'",
                                          order_by=["attributes.run_name ASC"]):
                out.append((ui_url(exp.experiment_id, run.info.run_id, base), f"{run.info.run_name}: the table's "
                            "summary run, each cell's median test error"))
        elif experiments is not None or client.search_runs([exp.experiment_id], max_results=1):
            ensure_views(client, exp)
            out.append((ranked_url(exp.experiment_id, base), f"{exp.name}: its runs, ranked by test error"))
            out.append((grouped_url(exp.experiment_id, base), f"{exp.name}: its runs grouped by method, each "
                        "method's mean test error"))
    return out


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _experiments(config: str | None) -> tuple[list[str] | None, str | None]:
    """A config's (or its results folder's) experiments and store; every experiment of the default store without."""
    if config is None:
        return None, None
    from .plan import load_plan

    path = Path(config, "config.yaml") if Path(config).is_dir() else Path(config)
    plan = load_plan(str(path))
    return [*plan.experiments, summary_experiment(plan.name)], plan.store


def browse(config: str | None = None, store: str | None = None, port: int = 5000) -> int:
    """Serve the store on 127.0.0.1 until interrupted (Ctrl-C or SIGTERM), printing the pages to open; 0 then. Only
    loopback: beyond it anyone could read and change every run (atlib mlflow-server asks for logins there)."""
    host = "127.0.0.1"
    experiments, plan_store = _experiments(config)
    uri = tracking_uri(store or plan_store)
    if uri.startswith(("http://", "https://")):  # MLFLOW_TRACKING_URI: a tracking server has a UI of its own
        print(f"The runs are on the tracking server {uri} (MLFLOW_TRACKING_URI); open:")
        for url, what in pages(uri, uri, experiments):
            print(f"  {url}  {what}")
        return 0
    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    if not uri.startswith("sqlite:///") or not path.is_file():
        print(f"atlib: error: no MLflow store at {uri}; run the DAG first (make reproduce), or name one with --store "
              "or MLFLOW_TRACKING_URI", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _interrupt)
    proc = None
    with tempfile.TemporaryFile("w+") as log:  # the server's own messages: shown only if it fails
        try:
            try:
                proc, port = server.start(host, port, path, Path(ARTIFACTS).resolve(), stdout=log, stderr=log)
            except server.ServerError as e:
                if not e.in_use:
                    raise
                proc, port = server.start(host, 0, path, Path(ARTIFACTS).resolve(), stdout=log, stderr=log)
            base = server.url_of(host, port)
            print(f"MLflow's UI on {base} (store {path}); Ctrl-C stops it. Open:")
            for url, what in pages(uri, base, experiments):
                print(f"  {url}  {what}")
            sys.stdout.flush()
            code = proc.wait()  # returns only if the server dies
            raise server.ServerError(f"exited with code {code}", code)
        except server.ServerError as e:
            log.seek(0)
            print(f"{log.read()[-3000:]}atlib: error: mlflow server {e}", file=sys.stderr)
            return e.code or 1
        except KeyboardInterrupt:
            return 0
        finally:
            if proc is not None:
                server.stop_group(proc)
            signal.signal(signal.SIGTERM, previous)


def cmd_browse(args: argparse.Namespace) -> int:
    return browse(args.config, args.store, args.port)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``browse`` on the ``atlib`` command line."""
    text = "open the runs in MLflow's UI: each experiment ranked by test error, each table's summary run"
    p = subparsers.add_parser(
        "browse", help=text,
        description="Serve the MLflow store with this environment's mlflow (no activated environment needed) until "
                    "Ctrl-C, and print the URL of each experiment's runs list, in the view 'Ranked by test error' "
                    "(test error shown, lowest first), and of each table's summary run. With MLFLOW_TRACKING_URI "
                    "set to a tracking server, print that server's URLs instead.")
    p.add_argument("config", nargs="?",
                   help="a config or its results folder (results/<name>): only its experiments and store")
    p.add_argument("--store", help=f"SQLite file (default {DEFAULT_STORE}, or the config's; MLFLOW_TRACKING_URI "
                                    "overrides)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000, else a free one; 0: a free one)")
    p.set_defaults(func=cmd_browse)
    return p
