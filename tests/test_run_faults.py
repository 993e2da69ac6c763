"""A resumed, re-tracked or doubly started run never reports what it did not do (real processes)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from atlib.engine import train
from atlib.spec import RunSpec

DATA = {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 64, "size": 16}


def spec_dict(**over) -> dict:
    base = {"run_id": "r", "dataset": DATA, "model": "wrn-10-1", "threads": 1, "seed": 1,
            "recipe": {"epochs": 4, "batch_size": 32, "lr": 0.05}, "tracking": {"enabled": False}}
    return {**base, **over}


def quiet(_: str) -> None:
    pass


def history(m: dict) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("epoch_seconds", "images_per_second")} for h in m["history"]]


def start(spec: dict, out: Path, tmp: Path) -> tuple[subprocess.Popen, list[str]]:
    path = tmp / f"spec-{out.name}.json"
    path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "atlib", "train", str(path), "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), cmd


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


def test_student_checkpoint_from_an_older_teacher_is_set_aside(tmp_path):
    teacher_dir = tmp_path / "teacher"
    train(RunSpec.from_dict(spec_dict(run_id="t", model="wrn-10-2", seed=0)), teacher_dir, quiet)
    student = spec_dict(method="at", teacher={"run_dir": str(teacher_dir), "model": "wrn-10-2"})
    out = tmp_path / "student"
    proc, cmd = start(student, out, tmp_path)
    wait_for(out / "checkpoint.pt", proc)
    proc.kill()
    proc.wait()
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert not any(k.startswith("teacher.") for k in ckpt["objective"])  # the teacher lives in its own run
    # the teacher is trained again (another seed): its model.pt and SHA-256 change
    train(RunSpec.from_dict(spec_dict(run_id="t", model="wrn-10-2", seed=5)), tmp_path / "teacher2", quiet)
    for name in ("model.pt", "metrics.json"):
        (teacher_dir / name).write_bytes((tmp_path / "teacher2" / name).read_bytes())
    new_sha = json.loads((teacher_dir / "metrics.json").read_text())["checkpoint_sha256"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "set aside as checkpoint.stale" in done.stdout and "resuming" not in done.stdout
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["teacher"]["sha256"] == new_sha
    # ... and it is exactly a student trained from scratch against the new teacher
    fresh = train(RunSpec.from_dict(student), tmp_path / "fresh", quiet)
    assert history(resumed) == history(fresh)


def test_a_changed_spec_under_the_same_run_id_starts_over(tmp_path):
    out = tmp_path / "run"
    proc, _ = start(spec_dict(recipe={"epochs": 6, "batch_size": 32, "lr": 0.05}), out, tmp_path)
    wait_for(out / "checkpoint.pt", proc)
    proc.kill()
    proc.wait()
    messages: list[str] = []
    changed = RunSpec.from_dict(spec_dict(recipe={"epochs": 6, "batch_size": 32, "lr": 0.02}))
    m = train(changed, out, messages.append)
    assert any("another spec" in line for line in messages) and (out / "checkpoint.stale").exists()
    assert history(m) == history(train(changed, tmp_path / "fresh", quiet))


def test_a_second_writer_is_refused_without_touching_the_run(tmp_path):
    from atlib.rundir import run_lock

    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"the first writer's checkpoint")
    with run_lock(out):  # this test process is the first writer
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        _, cmd = start(spec_dict(), out, tmp_path)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert second.returncode == 2 and "being trained by another process" in second.stderr, second.stderr
    assert "pid " in second.stderr and after == before


def test_sigterm_marks_the_run_killed_and_a_rerun_ends_as_an_uninterrupted_run(tmp_path):
    data = {**DATA, "synthetic_train": 1024}
    store = tmp_path / "mlflow.db"
    spec = spec_dict(dataset=data, recipe={"epochs": 8, "batch_size": 32, "lr": 0.05},
                     tracking={"store": str(store), "experiment": "faults", "attention_every": 0})
    reference = train(RunSpec.from_dict({**spec, "tracking": {"enabled": False}}), tmp_path / "reference", quiet)
    out = tmp_path / "run"
    first, cmd = start(spec, out, tmp_path)
    wait_for(out / "checkpoint.pt", first)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM and "terminated by SIGTERM" in err, err
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    (killed,) = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert killed.info.status == "KILLED"
    (out / ".metrics.json.999.tmp").write_bytes(b"{half")  # an atomic write interrupted for good
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "resuming after epoch" in done.stdout, done.stderr
    resumed = json.loads((out / "metrics.json").read_text())
    assert history(resumed) == history(reference)
    assert not list(out.glob(".*.tmp"))
    (run,) = client.search_runs([killed.info.experiment_id])
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"


def test_make_reproduce_clears_only_the_lock_of_a_dead_snakemake(tmp_path):
    import os

    from conftest import SNAKEMAKE

    from atlib.workdir import clear_stale_locks, live_snakemake_pids

    (tmp_path / "Snakefile").write_text('rule slow:\n    output: "done"\n    shell: "sleep 120; touch {output}"\n')
    cmd = [SNAKEMAKE, "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path), "--cores", "1"]
    live = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    locks = tmp_path / ".snakemake" / "locks"
    deadline = time.time() + 120
    while not (locks.is_dir() and any(locks.iterdir())) and time.time() < deadline:
        time.sleep(0.1)
    held = sorted(locks.iterdir())
    assert held and live.pid in live_snakemake_pids(tmp_path)
    assert clear_stale_locks(tmp_path) == [] and sorted(locks.iterdir()) == held  # a live run keeps its lock
    os.killpg(live.pid, signal.SIGKILL)  # killed hard: its lock files stay behind
    live.wait()
    assert sorted(locks.iterdir()) == held and live_snakemake_pids(tmp_path) == []
    assert clear_stale_locks(tmp_path) == held and not any(locks.iterdir())
    dry = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "cannot be locked" not in dry.stdout + dry.stderr
