"""A config through snakemake's SLURM executor plugin on a real single-node SLURM cluster.

scripts/slurm-test-cluster starts munged, slurmctld and slurmd; profiles/slurm submits one sbatch job per
run; the results must be those of the same runs under the local executor (CPU training is deterministic per
seed): the config's three runs are three of the synthetic DAG's, spec for spec.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SCRIPT = str(ROOT / "scripts/slurm-test-cluster")
CONFIG = ROOT / "tests/configs/synthetic-slurm.yaml"
RUNS = 3  # the config's runs: teacher, student baseline, AT student
TIMEOUT = 600  # s for the SLURM run (measured: see docs/cluster.md)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("slurmctld") is None,
                       reason="SLURM is not installed (apt-get install slurmctld slurmd slurm-client munge)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the test cluster runs slurmd as root, so it needs root"),
]


@dataclass
class Cluster:
    dir: Path
    env: dict[str, str]  # what snakemake and the SLURM commands run with: SLURM_CONF points at this cluster


def free_port_pair() -> int:
    """A port P with P and P+1 free now (slurmctld, slurmd): a cluster already on 6817 must not get in the way.
    SLURM cannot take port 0: the daemons bind these later, and a start that lost them is retried."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def without_slurm_vars() -> dict[str, str]:
    # pytest may itself run inside a SLURM job: its variables must not leak into the runs checked here
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}


def recorded_pids(cluster_dir: Path) -> dict[str, int]:
    path = cluster_dir / "pids"
    return {name: int(pid) for name, pid in (line.split() for line in path.read_text().splitlines())} \
        if path.exists() else {}


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # not under pytest's tmp dirs: those are 0700 and munged, as the munge user, must reach its key
    cluster_dir = Path(tempfile.mkdtemp(prefix="atlib-slurm-test-"))
    cluster_dir.chmod(0o755)
    env = without_slurm_vars() | {"ATLIB_SLURM_GPUS": "2"}
    try:
        for _ in range(3):  # slurmctld and slurmd need ports named in slurm.conf: one lost to a race is tried again
            env["ATLIB_SLURM_PORT"] = str(free_port_pair())
            start = subprocess.run([SCRIPT, "start", str(cluster_dir)], env=env, capture_output=True, text=True,
                                   timeout=300)
            logs = [p.read_text(errors="replace") for p in (cluster_dir / "log").glob("*.log")]
            if start.returncode == 0 or not any("Address already in use" in log for log in logs):
                break
            for log in (cluster_dir / "log").glob("*.log"):
                log.unlink()
        assert start.returncode == 0, start.stdout + start.stderr
        yield Cluster(cluster_dir, env | {"SLURM_CONF": str(cluster_dir / "slurm.conf")})
    finally:  # also when start or a test failed: stop whatever start recorded
        started = recorded_pids(cluster_dir)
        stop = subprocess.run([SCRIPT, "stop", str(cluster_dir)], env=env, capture_output=True, text=True,
                              timeout=180)
        left = {name: pid for name, pid in started.items() if is_running(pid)}
        if not left:
            shutil.rmtree(cluster_dir, ignore_errors=True)
        assert stop.returncode == 0 and not left, f"still running: {left}\n{stop.stdout}{stop.stderr}"


def snakemake(workdir: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(CONFIG), *args]


def slurm_jobs(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Every job slurmctld still knows (finished ones for MinJobAge), as scontrol's key=value fields."""
    out = subprocess.run(["scontrol", "--details", "show", "job", "--oneliner"], env=env, capture_output=True,
                         text=True, check=True, timeout=30).stdout
    jobs = [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in out.splitlines() if line.startswith("JobId=")]
    return {job["JobId"]: job for job in jobs}


@dataclass
class Runs:
    slurm: Path  # the SLURM run's working directory
    stdout: str
    seconds: float
    jobs: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def runs(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    slurm_dir = tmp_path_factory.mktemp("slurm")
    started = time.monotonic()
    # --default-resources replaces the profile's placeholders: the test cluster's partition, and no
    # account (it has no accounting). train:gpu=1 makes every job ask SLURM for one of the cluster's
    # dummy GPUs; device auto still trains on the CPU.
    # timeout -s INT: on SIGTERM snakemake would wait for its SLURM jobs; SIGINT makes it cancel them.
    proc = subprocess.run(
        ["timeout", "-s", "INT", "-k", "60", str(TIMEOUT),
         *snakemake(slurm_dir, "--workflow-profile", str(ROOT / "profiles/slurm"),
                    "--default-resources", "slurm_partition=debug", "--set-resources", "train:gpu=1")],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT + 120)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-6000:]
    jobs = slurm_jobs(cluster.env)  # now: slurmctld forgets finished jobs after MinJobAge (300 s)
    print(f"\nSLURM run of {CONFIG.name}: {seconds:.0f} s")
    return Runs(slurm_dir, proc.stdout, seconds, jobs)


def metrics(workdir: Path) -> dict[str, dict]:
    runs = workdir / "results/runs"
    return {str(p.parent.relative_to(runs)): json.loads(p.read_text()) for p in runs.rglob("metrics.json")}


def test_start_twice_starts_nothing_and_status_sees_the_cluster(cluster: Cluster):
    before = recorded_pids(cluster.dir)
    again = subprocess.run([SCRIPT, "start", str(cluster.dir)], env=cluster.env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    assert recorded_pids(cluster.dir) == before and {"slurmctld", "slurmd"} <= before.keys()
    assert all(is_running(pid) for pid in before.values())
    status = subprocess.run([SCRIPT, "status", str(cluster.dir)], env=cluster.env, capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0 and "gpu:2" in status.stdout and "idle" in status.stdout, status.stdout


def test_every_run_was_one_slurm_job_with_the_config_resources(runs: Runs):
    by_run = metrics(runs.slurm)
    assert len(by_run) == RUNS
    job_ids = {m["environment"]["slurm_job_id"] for m in by_run.values()}
    assert None not in job_ids and len(job_ids) == RUNS
    # the cluster saw exactly these jobs: the MLflow experiments, summary and tables (local rules) ran here
    assert set(runs.jobs) == job_ids
    for job in runs.jobs.values():
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        # the config's threads and resources, and the gpu resource as --gpus=1
        assert job["NumCPUs"] == "1" and job["MinMemoryNode"] == "1000M" and job["TimeLimit"] == "00:10:00", job
        assert job["TresPerJob"] == "gres:gpu:1" and job["JOB_GRES"] == "gpu:1", job  # asked for, and given
    assert "localrule mlflow_experiments:" in runs.stdout


def test_mlflow_runs_carry_their_slurm_job_id(runs: Runs):
    import mlflow

    by_run = metrics(runs.slurm)
    client = mlflow.MlflowClient(f"sqlite:///{runs.slurm}/results/mlflow.db")
    found = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert len(found) == RUNS and all(r.info.status == "FINISHED" for r in found)
    for r in found:
        assert r.data.tags["slurm_job_id"] == by_run[r.data.tags["run"]]["environment"]["slurm_job_id"]
    # the AT student, trained in its own job, names the teacher's MLflow run (trained in another)
    student = next(r for r in found if r.data.tags["method"] == "at")
    teacher = client.get_run(student.data.tags["teacher_run"])
    assert teacher.data.tags["model"] == "wrn-10-2" and teacher.data.tags["slurm_job_id"] != student.data.tags[
        "slurm_job_id"]


def test_results_equal_those_of_the_local_executor(runs: Runs, synthetic_dag):
    """The synthetic DAG, run by the local executor, trained this config's three runs, spec for spec."""
    on_slurm, local = metrics(runs.slurm), metrics(synthetic_dag[0])
    assert len(on_slurm) == RUNS and on_slurm.keys() <= local.keys()  # the same run ids, spec for spec
    for run_id, m in on_slurm.items():  # bit-identical CPU training: equal weights, equal errors
        assert m["config"] == local[run_id]["config"], run_id
        assert (m["final_test_error"], m["checkpoint_sha256"]) == (local[run_id]["final_test_error"],
                                                                   local[run_id]["checkpoint_sha256"]), run_id
    cells = pd.read_csv(runs.slurm / "results/synthetic-slurm/tables/table1.csv")
    assert list(cells.column) == ["student", "at", "teacher"] and (cells.n == 1).all()
    for _, cell in cells.iterrows():  # one seed: each cell is its run's error
        assert cell["median"] == pytest.approx(on_slurm[cell.runs]["final_test_error"])
