import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SYNTHETIC = ROOT / "tests/configs/synthetic.yaml"


def snakemake(workdir: Path, *args: str, config: Path = SYNTHETIC, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real snakemake executable on the project's Snakefile, in ``workdir``."""
    cmd = [SNAKEMAKE, "-s", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), "--cores", "2", *args]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def synthetic_dag(tmp_path_factory, request) -> tuple[Path, subprocess.CompletedProcess]:
    """The synthetic config run once, uninterrupted, by the local executor: once per test session, also when
    pytest-xdist's workers share the session (`make test`): the first to ask runs it under a lock in their
    common folder, the others wait for the lock and read what it left. Tests change only copies of it."""
    if not hasattr(request.config, "workerinput"):  # one process: a folder of its own
        workdir = tmp_path_factory.mktemp("dag")
        proc = snakemake(workdir)
    else:
        shared = tmp_path_factory.getbasetemp().parent  # the session's folder, above each worker's own
        workdir, record = shared / "dag", shared / "dag.json"
        with open(shared / "dag.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held while one worker runs the DAG; bounded by the test's timeout
            if not record.exists():
                workdir.mkdir()
                done = snakemake(workdir)
                record.write_text(json.dumps({"returncode": done.returncode, "stdout": done.stdout}))
        ran = json.loads(record.read_text())
        proc = subprocess.CompletedProcess([SNAKEMAKE], ran["returncode"], ran["stdout"])
    assert proc.returncode == 0, proc.stdout[-4000:]
    return workdir, proc


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """A new MLflow SQLite store, made once: making one (its schema migrations) takes seconds."""
    import mlflow

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def store_in(folder: Path, empty_store: Path) -> Path:
    """A copy of the empty store in ``folder``: a store of a test's own, without the seconds of making one."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(empty_store, folder / "mlflow.db"))
