"""``atlib browse`` and the hint the DAG ends with: each experiment's runs list ranked by test error, each table's
summary run. (What a browser shows of them: tests/test_mlflow_ui.py, through scripts/ui_check.py.)"""

import json
import os

import pytest
from conftest import store_in

from atlib import browse, cli, server
from atlib.tracking import (
    EXPERIMENT_KIND,
    GROUPED_NAME,
    GROUPED_VIEW,
    RANKED_NAME,
    RANKED_STATE,
    RANKED_VIEW,
    VIEW_TAG,
    browse_hint,
    ensure_experiments,
    grouped_url,
    ranked_url,
    summary_experiment,
    ui_url,
)


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store):
    """A store with a training experiment of two runs, an empty one, and a config's summary experiment."""
    import mlflow

    for name in [n for n in os.environ if n.startswith("MLFLOW_")]:
        monkeypatch.delenv(name)
    uri = f"sqlite:///{store_in(tmp_path, empty_store)}"
    ids = ensure_experiments(["fmnist", "empty", summary_experiment("quick")], uri, str(tmp_path / "artifacts"))
    c = mlflow.MlflowClient(uri)
    for seed in (0, 1):
        c.create_run(ids["fmnist"], run_name=f"at · s{seed}", tags={"run": f"r{seed}"})
    summary = c.create_run(ids[summary_experiment("quick")], run_name="table1 · quick",
                           tags={"role": "summary"}).info.run_id
    return uri, ids, summary


def view_of(experiment, view: str = RANKED_VIEW) -> dict:
    envelope = json.loads(experiment.tags[VIEW_TAG + view])
    return {**envelope, "state": json.loads(envelope["state"])}


def test_training_experiments_carry_the_ranked_view_and_summary_ones_do_not(store):
    import mlflow

    uri, ids, _ = store
    c = mlflow.MlflowClient(uri)
    view = view_of(c.get_experiment(ids["fmnist"]))
    assert view["name"] == RANKED_NAME and view["state"] == RANKED_STATE
    assert view["state"]["orderByKey"] == "metrics.`test_error`" and view["state"]["orderByAsc"] is True
    assert "metrics.`test_error`" in view["state"]["selectedColumns"]
    assert VIEW_TAG + RANKED_VIEW not in c.get_experiment(ids[summary_experiment("quick")]).tags
    # an experiment made before atlib defined the view, or with another definition, gets this one
    old = c.create_experiment("old", tags=dict([EXPERIMENT_KIND]))
    c.set_experiment_tag(ids["fmnist"], VIEW_TAG + RANKED_VIEW, json.dumps({"name": "x", "createdAt": 1,
                                                                            "state": "{}"}))
    ensure_experiments(["fmnist", "old"], uri)
    assert view_of(c.get_experiment(old))["state"] == view_of(c.get_experiment(ids["fmnist"]))["state"] == RANKED_STATE


def test_the_grouped_view_groups_by_the_method_tag_with_the_mean_the_ui_offers(store):
    """MLflow 3.17's runs list aggregates a group by min, average or max (no median): the view asks for the average
    of each group, grouped by the tag every run carries (atlib.engine.run_tags), sorted and shown as the ranked one."""
    import mlflow

    uri, ids, _ = store
    c = mlflow.MlflowClient(uri)
    view = view_of(c.get_experiment(ids["fmnist"]), GROUPED_VIEW)
    assert view["name"] == GROUPED_NAME
    assert view["state"]["groupBy"] == {"aggregateFunction": "average",
                                        "groupByKeys": [{"mode": "tag", "groupByData": "method"}]}
    assert {k: v for k, v in view["state"].items() if k != "groupBy"} == RANKED_STATE
    assert VIEW_TAG + GROUPED_VIEW not in c.get_experiment(ids[summary_experiment("quick")]).tags
    assert grouped_url("7", "http://h") == (f"http://h/#/experiments/7/runs?viewStateShareKey={GROUPED_VIEW}"
                                            "&workflowType=machine_learning")
    # an experiment made before atlib defined it gets it from atlib browse
    old = c.create_experiment("old", tags=dict([EXPERIMENT_KIND]))
    c.create_run(old, run_name="kd · s0")
    browse.pages(uri, "http://h", ["old"])
    assert view_of(c.get_experiment(old), GROUPED_VIEW)["state"] == view["state"]


def test_pages_are_each_runs_list_ranked_and_each_summary_run(store):
    uri, ids, summary = store
    base = "http://127.0.0.1:5123"
    assert browse.pages(uri, base) == [  # an experiment without runs is left out
        (ranked_url(ids["fmnist"], base), "fmnist: its runs, ranked by test error"),
        (grouped_url(ids["fmnist"], base), "fmnist: its runs grouped by method, each method's mean test error"),
        (ui_url(ids[summary_experiment("quick")], summary, base),
         "table1 · quick: the table's summary run, each cell's median test error")]
    assert [what for _, what in browse.pages(uri, base, ["empty"])] == [
        "empty: its runs, ranked by test error", "empty: its runs grouped by method, each method's mean test error"]
    assert ranked_url("7", base) == (f"{base}/#/experiments/7/runs?viewStateShareKey={RANKED_VIEW}"
                                     "&workflowType=machine_learning")


def test_browse_falls_back_to_a_free_port_and_stops_its_server_on_ctrl_c(store, monkeypatch, capsys):
    uri, ids, _ = store
    asked, stopped = [], []

    class Served:
        def wait(self):
            raise KeyboardInterrupt  # Ctrl-C while it serves

    def start(host, port, store_path, artifacts, **popen):
        asked.append(port)
        if port == 5000:
            raise server.ServerError("exited with code 1: port 5000 is taken", 1, in_use=True)
        return Served(), 40123

    monkeypatch.setattr(server, "start", start)
    monkeypatch.setattr(server, "stop_group", stopped.append)
    assert cli.main(["browse", "--store", uri.removeprefix("sqlite:///")]) == 0
    assert asked == [5000, 0] and len(stopped) == 1
    head, ranked, grouped, summary = capsys.readouterr().out.splitlines()
    assert head.startswith("MLflow's UI on http://127.0.0.1:40123 (store ")
    assert ranked == f"  {ranked_url(ids['fmnist'], 'http://127.0.0.1:40123')}  fmnist: its runs, ranked by test error"
    assert grouped.startswith(f"  {grouped_url(ids['fmnist'], 'http://127.0.0.1:40123')}  fmnist: its runs grouped")
    assert summary.startswith("  http://127.0.0.1:40123/#/experiments/")


def test_browse_without_a_store_says_how_to_make_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.main(["browse", "--store", str(tmp_path / "none.db")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"atlib: error: no MLflow store at sqlite:///{tmp_path}/none.db; run the DAG first")
    assert not (tmp_path / "none.db").exists()


def test_browse_on_a_tracking_server_serves_nothing_and_prints_its_pages(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    seen = []
    monkeypatch.setattr(browse, "pages", lambda uri, base, experiments: seen.append((uri, base)) or [
        (ranked_url("3", base), "fmnist: its runs, ranked by test error")])
    monkeypatch.setattr(server, "start", lambda *a, **k: pytest.fail("started a server"))
    assert cli.main(["browse"]) == 0
    assert seen == [("http://tracker:5000", "http://tracker:5000")]
    assert capsys.readouterr().out.splitlines()[1] == (f"  {ranked_url('3', 'http://tracker:5000')}  fmnist: its "
                                                       "runs, ranked by test error")


def test_the_hint_names_atlib_browse_by_its_path_and_the_pages_it_opens(tmp_path, monkeypatch):
    (tmp_path / "mlflow-experiments.tsv").write_text("quick\t7\n")
    (tmp_path / "mlflow-summary.tsv").write_text("table1\t8\tabc\thttp://x\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    head, ranked, grouped, summary = browse_hint("results/mlflow.db", tmp_path).splitlines()
    assert head.startswith("Browse the runs: ") and head.split()[4:6] == ["browse", str(tmp_path)]
    assert head.split()[3].endswith("bin/atlib")  # the script beside this Python: no activated environment needed
    assert f"(serves {tmp_path}/other.db; Ctrl-C stops it)" in head
    assert ranked == f"  {ranked_url('7')}  (quick: its runs, ranked by test error)"
    assert grouped == f"  {grouped_url('7')}  (quick: its runs grouped by method, each method's mean test error)"
    assert summary == f"  {ui_url('8', 'abc')}  (table1: the table's summary run)"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    head, ranked, *_ = browse_hint("results/mlflow.db", tmp_path).splitlines()
    assert head == "Browse the runs on the tracking server http://tracker:5000:"
    assert ranked.startswith("  http://tracker:5000/#/experiments/7/runs?viewStateShareKey=")
