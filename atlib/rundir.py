"""The run directory: the one owner of a run's files.

    results/runs/<run id>/
        checkpoint.pt   every epoch, by atomic replace; removed once the run is complete
        model.pt        final weights and what they are (model, dataset, classes)
        metrics.json    the contract with reporting: final/best error, per-epoch history, config, environment
        run.lock        held by the process training the run

Importing this module imports no torch (the plan, the DAG and the tables read runs without it); the
functions that read or write tensors import it when called.
``atlib.models.load_run_model`` builds a run's network from what this module reads.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigError

METRICS, MODEL, CHECKPOINT, LOCK = "metrics.json", "model.pt", "checkpoint.pt", "run.lock"


def run_dir(results: str | Path, run_id: str) -> Path:
    """Where run ``run_id`` lives under a results folder."""
    return Path(results) / "runs" / run_id


def metrics_file(folder: Path | str) -> Path:
    return Path(folder) / METRICS


def model_file(folder: Path | str) -> Path:
    return Path(folder) / MODEL


def checkpoint_file(folder: Path | str) -> Path:
    return Path(folder) / CHECKPOINT


class RunBusy(ConfigError):
    """Another process is training into the same run directory."""


@contextmanager
def run_lock(folder: Path | str) -> Iterator[None]:
    """Hold ``run.lock`` for the run's whole life: a second writer (a resubmitted SLURM job meeting its
    orphaned predecessor, a second snakemake) is refused. The kernel drops the lock when its holder dies,
    even by SIGKILL, so a stale lock never blocks a rerun."""
    with open(Path(folder) / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunBusy(f"run {folder} is being trained by another process ({f.read().strip() or 'pid unknown'}); "
                          "wait for it or stop it") from None
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {platform.node()}\n")
        f.flush()
        yield


def sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path | str, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same folder and rename it: readers never see a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(obj: Any, path: Path | str) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def atomic_save(obj: Any, path: Path | str) -> None:
    import torch

    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def remove_stale_temporaries(folder: Path | str) -> None:
    """Temporary files of atomic writes that a killed process never renamed."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def read_metrics(folder: Path | str) -> dict[str, Any]:
    """A run's metrics.json as written; raises OSError or ValueError when it is missing or unreadable."""
    return json.loads((Path(folder) / METRICS).read_text())


def finished(folder: Path | str) -> dict[str, Any] | None:
    """A finished run's metrics: its metrics.json is readable and records a final test error. None otherwise."""
    try:
        m = read_metrics(folder)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("final_test_error") is not None else None


def broken(folder: Path | str) -> str | None:
    """What is wrong with a run that has a metrics.json, or None when it is whole (or has none yet)."""
    folder = Path(folder)
    if not (folder / METRICS).exists():
        return None
    try:
        m = read_metrics(folder)
    except (OSError, ValueError) as e:
        return f"is unreadable ({e})"
    model = folder / MODEL
    if not isinstance(m, dict) or m.get("final_test_error") is None:
        return "has no final_test_error"
    if not model.exists():
        return f"has no {MODEL} beside it"
    if m.get("checkpoint_bytes") not in (None, model.stat().st_size):
        return f"records a {MODEL} of {m['checkpoint_bytes']} bytes, found {model.stat().st_size}"
    return None


def set_aside_metrics(folder: Path | str) -> None:
    """Move a broken metrics.json out of the way, so the run is trained again instead of feeding a table."""
    path = Path(folder) / METRICS
    path.replace(path.with_name(f"{METRICS}.corrupt"))


def save_model(folder: Path | str, meta: dict[str, Any], state_dict: dict[str, Any]) -> Path:
    """model.pt: the final weights (on the CPU) and what they are."""
    path = Path(folder) / MODEL
    atomic_save({"meta": meta, "state_dict": {k: v.cpu() for k, v in state_dict.items()}}, path)
    return path


def load_state(folder: Path | str, device: Any = "cpu") -> dict[str, Any]:
    """The state dict of a run's model.pt."""
    import torch

    return torch.load(Path(folder) / MODEL, map_location=device, weights_only=True)["state_dict"]


def write_metrics(folder: Path | str, metrics: dict[str, Any]) -> Path:
    """metrics.json, written last: its presence says the run is finished."""
    atomic_write_json(metrics, metrics_file(folder))
    return metrics_file(folder)


def save_checkpoint(folder: Path | str, state: dict[str, Any]) -> None:
    atomic_save(state, checkpoint_file(folder))


def remove_checkpoint(folder: Path | str) -> None:
    checkpoint_file(folder).unlink(missing_ok=True)


def load_checkpoint_file(folder: Path | str, device: Any) -> dict[str, Any] | None:
    """checkpoint.pt's content, None when there is none; raises when it is unreadable."""
    import torch

    path = Path(folder) / CHECKPOINT
    return torch.load(path, map_location=device, weights_only=True) if path.exists() else None


def set_aside_checkpoint(folder: Path | str, reason: str) -> Path:
    """Move checkpoint.pt to checkpoint.<reason> (``corrupt``, ``stale``): the run starts over."""
    path = Path(folder) / CHECKPOINT
    target = path.with_suffix(f".{reason}")
    path.replace(target)
    return target
