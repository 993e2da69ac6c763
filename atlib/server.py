"""``atlib mlflow-server``: one MLflow tracking server that every job logs to over HTTP.

The alternative to sharing the SQLite store on a shared filesystem: jobs get
``MLFLOW_TRACKING_URI=http://HOST:PORT`` (sbatch passes the submitting shell's environment on), and only
the server process writes the SQLite file. Beyond loopback, anyone who reaches the port could read and
rewrite every run: the server then requires logins (MLflow's basic-auth app), unless told ``--insecure``.
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from .tracking import ARTIFACTS, DEFAULT_STORE

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
# mlflow's own default for --allowed-hosts, which passing the option replaces: private networks
PRIVATE_NETS = ("10.*", "192.168.*", *(f"172.{n}.*" for n in range(16, 32)))
READY_SECONDS = 120.0  # ~5 s on an idle machine; far longer when the cores are busy with training
# MLflow's basic-auth app creates its admin from these on its first start (or from an .ini file's settings)
AUTH_ENV = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_CONFIG_PATH")


def public_name(host: str) -> str:
    """The name jobs connect to: a wildcard bind address is nothing to connect to."""
    if host not in WILDCARD:
        return host
    fqdn = socket.getfqdn()  # "localhost" where /etc/hosts lists the host name on 127.0.0.1 after it
    return fqdn if "." in fqdn and not fqdn.startswith("localhost") else socket.gethostname()


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def allowed_hosts(host: str) -> str:
    """The Host headers to accept: beyond loopback, mlflow answers any name it was not told with 403."""
    names = {"localhost", "127.0.0.1", public_name(host), socket.gethostname(), socket.getfqdn()}
    if host not in WILDCARD:
        names.add(host)
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:  # a host name that does not resolve: jobs then use one of the others
        pass
    return ",".join([*sorted(p for n in names for p in (n, f"{n}:*")), *PRIVATE_NETS])


class ServerError(RuntimeError):
    """The server exited before it answered (``code``; ``in_use`` when its port is taken), or never answered."""

    def __init__(self, message: str, code: int | None = None, in_use: bool = False) -> None:
        super().__init__(message)
        self.code, self.in_use = code, in_use


def listening_port(proc: subprocess.Popen) -> int | None:
    """The TCP port that ``proc`` or a process it started listens on: the one the system chose for port 0."""
    import psutil

    try:
        family = [psutil.Process(proc.pid)]
        family += family[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for member in family:
        try:
            sockets = member.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for sock in sockets:
            if sock.status == psutil.CONN_LISTEN:
                return sock.laddr.port
    return None


def _taken(host: str, port: int) -> bool:
    """Whether something else listens on ``host:port`` (asked once the server has failed, never to pick a port)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def wait_ready(proc: subprocess.Popen, host: str, port: int, seconds: float = READY_SECONDS) -> int:
    """The port of a server started on ``port`` (0: any), once its /health answers. ServerError if it exits first
    or answers nothing for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (code := proc.poll()) is not None:
            in_use = port != 0 and _taken(host if host not in WILDCARD else "127.0.0.1", port)
            raise ServerError(f"exited with code {code}" + (f": port {port} is taken" if in_use else ""), code, in_use)
        found = port or listening_port(proc)
        if found:
            try:
                url = url_of("127.0.0.1" if host in WILDCARD else host, found)
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        return found
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.2)
    raise ServerError(f"did not answer in {seconds:.0f} s")


def start(host: str, port: int, store_path: Path, artifacts_path: Path, extra: Sequence[str] = (),
          env: Mapping[str, str] | None = None, **popen: Any) -> tuple[subprocess.Popen, int]:
    """``mlflow server`` (:func:`command`, plus ``extra`` options) in a process group of its own, and its port
    once it answers: ``port`` 0 lets the system choose a free one, so that none is picked and then raced for.
    ServerError, with the server stopped, when it does not come up."""
    cmd, server_env = command(host, port, store_path, artifacts_path)
    proc = subprocess.Popen([*cmd, *extra], env=server_env | dict(env or {}), start_new_session=True, **popen)
    try:
        return proc, wait_ready(proc, host, port)
    except BaseException:
        stop_group(proc)
        raise


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the server and the workers it forked: its process group, which only it and they are in."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def auth_config(store_path: Path) -> Path:
    """MLflow's basic-auth settings with its user database beside the store: its own default is
    ``basic_auth.db`` in whatever folder the server started in. The admin's password stays in the environment."""
    path = store_path.with_name("mlflow-auth.ini")
    path.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = sqlite:///{store_path.with_name('mlflow-auth.db')}\n"
                    "admin_username = admin\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


def command(host: str, port: int, store_path: Path, artifacts_path: Path) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line on a SQLite store, and its environment."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
           "--backend-store-uri", f"sqlite:///{store_path}", "--artifacts-destination", str(artifacts_path),
           "--workers", "1"]  # one worker: the default 4 (and their job runners) hold ~1.5 GB
    return cmd, os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runners


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(host: str = "127.0.0.1", port: int = 5000, store: str = DEFAULT_STORE,
          artifacts: str = ARTIFACTS, insecure: bool = False) -> int:
    """Run ``mlflow server`` on ``store`` until interrupted (Ctrl-C or SIGTERM); 0 then, else its exit code.

    With admin credentials in the environment (``AUTH_ENV``) it requires logins; a non-loopback ``host``
    without them is refused (2) unless ``insecure``."""
    auth = any(os.environ.get(name) for name in AUTH_ENV)
    if host not in LOOPBACK and not (auth or insecure):
        print(f"atlib: mlflow-server: refusing to serve {host} without logins: set MLFLOW_AUTH_ADMIN_PASSWORD "
              "(or MLFLOW_AUTH_CONFIG_PATH, a basic-auth .ini) to require them, or pass --insecure to let anyone "
              f"who reaches port {port} read and change every run", file=sys.stderr)
        return 2
    store_path, artifacts_path = Path(store).resolve(), Path(artifacts).resolve()
    store_path.parent.mkdir(parents=True, exist_ok=True)
    extra: list[str] = []
    env: dict[str, str] = {}
    if host not in LOOPBACK:
        extra += ["--allowed-hosts", allowed_hosts(host)]
    login = ""
    if auth:
        extra += ["--app-name", "basic-auth"]
        if "MLFLOW_AUTH_CONFIG_PATH" not in os.environ:  # a basic-auth .ini of the user's own is used as it is
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config(store_path))
        # the key of the UI's forms' CSRF tokens: one process (--workers 1), so a fresh one per start will do
        if "MLFLOW_FLASK_SERVER_SECRET_KEY" not in os.environ:
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
        if os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):  # else the admin is whoever the user's .ini names
            user = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
            login = f' MLFLOW_TRACKING_USERNAME={user} MLFLOW_TRACKING_PASSWORD="$MLFLOW_AUTH_ADMIN_PASSWORD"'
    previous = signal.signal(signal.SIGTERM, _interrupt)
    proc = None
    try:
        try:  # its own session: the server's log goes to our stderr, and stopping its group ends its workers too
            proc, port = start(host, port, store_path, artifacts_path, extra, env, stdout=2, stderr=2)
        except ServerError as e:
            print(f"atlib: mlflow server {e} (see its messages above)", file=sys.stderr)
            return e.code or 1
        url = url_of(public_name(host), port)
        print(f"MLflow server on {url}: store {store_path}, artifacts {artifacts_path}"
              f"{', logins required' if auth else ''}. Ctrl-C stops it.")
        print("Point the jobs (and `atlib browse`) at it, in the shell that runs snakemake"
              + ("; every job logs in, as the admin or as a user the admin created:" if auth else ":"))
        print(f"export MLFLOW_TRACKING_URI={url}{login}", flush=True)
        code = proc.wait()  # returns only if the server dies
        print(f"atlib: mlflow server exited with code {code}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None:
            stop_group(proc)
        signal.signal(signal.SIGTERM, previous)


def cmd_mlflow_server(args: argparse.Namespace) -> int:
    return serve(args.host, args.port, args.store, args.artifacts, args.insecure)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``mlflow-server`` on the ``atlib`` command line."""
    text = "run an MLflow tracking server on the run store, for jobs that log over HTTP"
    p = subparsers.add_parser(
        "mlflow-server", help=text,
        description="Run `mlflow server` on the SQLite store until interrupted, and print the "
                    "MLFLOW_TRACKING_URI to export before running snakemake, so that every job logs through it.")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 for jobs on other machines)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000; 0: a free one, printed)")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"SQLite file (default {DEFAULT_STORE})")
    p.add_argument("--artifacts", default=ARTIFACTS,
                   help=f"folder for artifacts uploaded through the server (default {ARTIFACTS})")
    p.add_argument("--insecure", action="store_true",
                   help="serve a non-loopback --host without logins (by default it needs MLFLOW_AUTH_ADMIN_PASSWORD "
                        "or MLFLOW_AUTH_CONFIG_PATH, for MLflow's basic-auth app)")
    p.set_defaults(func=cmd_mlflow_server)
    return p
