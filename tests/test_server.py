"""``atlib mlflow-server``: a real mlflow server on a free loopback port, used over REST, then stopped."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from atlib import cli, server

# the subcommand as atlib's parser registers it (add_parser), run in its own process like `atlib mlflow-server`
MAIN = ("import argparse, sys; from atlib import server; p = argparse.ArgumentParser(); "
        "server.add_parser(p.add_subparsers()); a = p.parse_args(); sys.exit(a.func(a))")


def served_url(proc: subprocess.Popen) -> tuple[list[str], str]:
    """What ``atlib mlflow-server --port 0`` printed until its export line (printed once the server answers),
    and the URL that line exports: the port the system chose."""
    lines = []
    while not (lines and lines[-1].startswith("export ")):
        line = proc.stdout.readline()
        assert line, f"exited with {proc.wait(timeout=60)} before it was ready: {lines}"
        lines.append(line)
    match = re.match(r"export MLFLOW_TRACKING_URI=(http://\S+:(\d+))", lines[-1])
    assert match, lines
    return lines, match.group(1)


def post(url: str, endpoint: str, body: dict, login: tuple[str, str] | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_parser_registers_the_subcommand_with_its_defaults():
    parser = argparse.ArgumentParser()
    server.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["mlflow-server", "--port", "5001"])
    assert (args.host, args.port, args.store, args.artifacts, args.insecure) == (
        "127.0.0.1", 5001, "results/mlflow.db", "results/mlartifacts", False)
    assert args.func is server.cmd_mlflow_server


def test_allowed_hosts_name_this_machine_beyond_loopback():
    hosts = server.allowed_hosts("0.0.0.0").split(",")
    name = server.public_name("0.0.0.0")  # what the printed MLFLOW_TRACKING_URI names
    assert name in (socket.getfqdn(), socket.gethostname()) and not name.startswith("localhost")
    assert name in hosts and f"{socket.gethostname()}:*" in hosts and "localhost:*" in hosts
    assert server.public_name("10.1.2.3") == "10.1.2.3"
    assert server.url_of("::1", 5000) == "http://[::1]:5000"


@pytest.mark.slow
def test_server_answers_rest_calls_and_stops_on_sigterm(tmp_path: Path):
    store, artifacts = tmp_path / "db/mlflow.db", tmp_path / "artifacts"
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "mlflow-server", "--port", "0", "--store", str(store),
                             "--artifacts", str(artifacts)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        lines, url = served_url(proc)
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}" and lines[0].startswith(f"MLflow server on {url}: store {store}")

        exp = post(url, "experiments/create", {"name": "served"})["experiment_id"]
        run = post(url, "runs/create", {"experiment_id": exp, "run_name": "r", "start_time": int(time.time() * 1000),
                                        "tags": [{"key": "slurm_job_id", "value": "42"}]})["run"]["info"]["run_id"]
        post(url, "runs/log-metric", {"run_id": run, "key": "test_error", "value": 7.5, "step": 0,
                                      "timestamp": int(time.time() * 1000)})
        found = post(url, "runs/search", {"experiment_ids": [exp], "filter": "tags.slurm_job_id = '42'"})["runs"]
        assert [r["info"]["run_id"] for r in found] == [run]
        assert found[0]["data"]["metrics"][0] | {"timestamp": 0} == {"key": "test_error", "value": 7.5, "step": 0,
                                                                     "timestamp": 0}
        import mlflow  # an artifact goes through the server's proxy into --artifacts

        mlflow.MlflowClient(url).log_text(run, "hello", "note.txt")
        assert [p.read_text() for p in artifacts.rglob("note.txt")] == ["hello"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the server (its whole process group) is gone
    import mlflow  # and what it was sent is in the SQLite file given as --store

    stored = mlflow.MlflowClient(f"sqlite:///{store}").get_run(run)
    assert stored.data.metrics == {"test_error": 7.5} and stored.data.tags["slurm_job_id"] == "42"


def without_auth() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_AUTH_")}


def test_non_loopback_without_logins_is_refused_and_nothing_starts(tmp_path, monkeypatch, capsys):
    for name in [n for n in os.environ if n.startswith("MLFLOW_AUTH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(server.subprocess, "Popen", lambda *a, **k: pytest.fail("a server was started"))
    store = tmp_path / "db/mlflow.db"
    assert cli.main(["mlflow-server", "--host", "0.0.0.0", "--port", "5001", "--store", str(store)]) == 2
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert out == "" and line.startswith("atlib: mlflow-server: refusing to serve 0.0.0.0 without logins")
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in line and "--insecure" in line and "port 5001" in line
    assert not store.parent.exists()


@pytest.mark.slow
def test_non_loopback_with_an_admin_password_requires_logins(tmp_path, monkeypatch):
    store, cwd = tmp_path / "db/mlflow.db", tmp_path / "cwd"
    cwd.mkdir()
    password = secrets.token_urlsafe(16)
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "mlflow-server", "--host", "0.0.0.0", "--port", "0",
                             "--store", str(store), "--artifacts", str(tmp_path / "artifacts")], cwd=cwd,
                            env=without_auth() | {"MLFLOW_AUTH_ADMIN_PASSWORD": password},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines, _ = served_url(proc)
        port = int(lines[-1].split()[1].rsplit(":", 1)[1])
        public = server.url_of(server.public_name("0.0.0.0"), port)
        assert lines[-1].strip() == (f"export MLFLOW_TRACKING_URI={public} MLFLOW_TRACKING_USERNAME=admin "
                                     'MLFLOW_TRACKING_PASSWORD="$MLFLOW_AUTH_ADMIN_PASSWORD"')
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            post(url, "experiments/search", {"max_results": 1})
        assert anonymous.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as wrong:
            post(url, "experiments/search", {"max_results": 1}, ("admin", password + "x"))
        assert wrong.value.code == 401
        import mlflow  # a job with the login the export line names

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        exp = mlflow.MlflowClient(url).create_experiment("guarded")
        assert sorted(e["name"] for e in post(url, "experiments/search", {"max_results": 10},
                                              ("admin", password))["experiments"]) == ["Default", "guarded"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0 and exp
    assert (store.parent / "mlflow-auth.db").is_file() and not list(cwd.iterdir())  # users beside the store


def test_a_users_basic_auth_ini_is_used_as_it_is_and_no_login_line_is_guessed(tmp_path, monkeypatch, capsys):
    seen: dict[str, str] = {}

    class Exited:  # a server that exits at once: serve() reports it without waiting
        def poll(self) -> int:
            return 3

    def popen(cmd, env, **kwargs):
        seen.update(env)
        return Exited()

    monkeypatch.setattr(server.subprocess, "Popen", popen)
    monkeypatch.setattr(server, "stop_group", lambda proc: None)
    mine = tmp_path / "mine.ini"
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(mine))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    assert server.serve(store=str(tmp_path / "db/mlflow.db"), artifacts=str(tmp_path / "a")) == 3
    assert seen["MLFLOW_AUTH_CONFIG_PATH"] == str(mine)
    assert not (tmp_path / "db/mlflow-auth.ini").exists()  # the user's file, not one atlib wrote
