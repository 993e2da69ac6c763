"""One summary run per table: each cell's median, the table, its figures and the report, and links to every
cell's runs."""

from __future__ import annotations

import csv
import re
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .names import MAX_TAG, NOTE, _user
from .store import _client, ensure_experiments
from .ui import SUMMARY_SUFFIX

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

    from ..plan import planned_figures

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
