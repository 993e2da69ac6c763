"""Progress of a whole DAG: one line per finished run, with done/total and an ETA from the runs' measured speed.

Snakemake's own "N of M steps" counts jobs of every rule alike; here only training runs count, each weighed by what
runs like it took. A :class:`Watcher` thread in the Snakemake process (started by the Snakefile's ``onstart``)
looks at the run folders every few seconds, so it sees jobs on a cluster finish as well as local ones: a job has
started when Snakemake opens its log (``results/logs/<run id>.log``), and finished once its metrics.json is whole.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .rundir import finished, run_dir
from .runkey import RunKey
from .spec import Recipe

POLL_SECONDS = 2.0


def jobs_at_once(local: bool, cores: int | None, nodes: int | None, threads: int, gpu_per_job: int = 0,
                 gpu_slots: int | None = None) -> int:
    """How many training jobs Snakemake runs side by side: on this machine its cores over each job's threads (and
    its ``gpu`` slots over each job's), on a cluster its ``--jobs``."""
    if not local:
        return max(1, nodes or 1)
    n = max(1, (cores or 1) // max(1, threads))
    if gpu_per_job and gpu_slots:
        n = min(n, max(1, gpu_slots // gpu_per_job))
    return n


def _epochs(spec: Mapping[str, Any]) -> int:
    return max(1, Recipe.from_config(spec.get("recipe") or {}).epochs)  # epochs 0: one evaluation, about an epoch


def _groups(run_id: str, spec: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """What makes runs alike in speed, from most to least alike: data, student and teacher; data and student;
    data; every run."""
    key = RunKey.parse(run_id)
    teacher = key.teacher.model if key.teacher is not None else ""
    return [(key.dataset, key.model, teacher), (key.dataset, key.model), (key.dataset,), ()]


def measured_seconds(metrics: Mapping[str, Any]) -> float:
    """A finished run's own record of its time: start-up (imports, data, model) plus its epochs."""
    return float(metrics.get("startup_seconds") or 0.0) + float(metrics.get("train_seconds") or 0.0)


def estimate(plan: Any, seconds: Mapping[str, float], running: Mapping[str, float]) -> float:
    """Single-job seconds left: each run not in ``seconds`` (run id -> measured seconds of the finished ones) at the
    median seconds per epoch of the finished runs most like it, less what ``running`` ones (run id -> seconds since
    they started) have done."""
    per_epoch: dict[tuple[str, ...], list[float]] = {}
    for run_id, s in seconds.items():
        spec = plan.runs[run_id]
        for group in _groups(run_id, spec):
            per_epoch.setdefault(group, []).append(s / _epochs(spec))
    if not per_epoch:
        return float("nan")
    left = 0.0
    for run_id, spec in plan.runs.items():
        if run_id in seconds:
            continue
        rate = next(statistics.median(per_epoch[g]) for g in _groups(run_id, spec) if g in per_epoch)
        left += max(0.0, rate * _epochs(spec) - running.get(run_id, 0.0))
    return left


def duration(seconds: float) -> str:
    if seconds != seconds:  # nan: nothing measured yet
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def line(done: int, total: int, left: float, jobs: int, run_id: str, took: float) -> str:
    if done == total:
        return f"atlib: {done}/{total} runs done; {run_id} took {duration(took)}"
    return (f"atlib: {done}/{total} runs done, ETA {duration(left / max(1, min(jobs, total - done)))} at the finished "
            f"runs' speed ({jobs} jobs at once); {run_id} took {duration(took)}")


class Watcher:
    """Prints :func:`line` for every run of ``plan`` that finishes while it watches (:meth:`poll`, every
    POLL_SECONDS in a daemon thread from :meth:`start` until :meth:`stop`)."""

    def __init__(self, plan: Any, logs: Path | str, jobs: int, out: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plan, self.logs, self.jobs, self.clock = plan, Path(logs), jobs, clock
        self.out = out or (lambda text: print(text, file=sys.stdout, flush=True))
        self.seconds: dict[str, float] = {}  # finished runs: measured seconds
        self.started: dict[str, float] = {}  # runs seen starting: clock() then
        self.logs_before: dict[str, float | None] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the thread's polls and stop()'s last one
        self._thread: threading.Thread | None = None
        for run_id in plan.runs:
            if (m := finished(run_dir(plan.results, run_id))) is not None:
                self.seconds[run_id] = measured_seconds(m)
            else:
                self.logs_before[run_id] = self._log_mtime(run_id)

    def _log_mtime(self, run_id: str) -> float | None:
        try:
            return (self.logs / f"{run_id}.log").stat().st_mtime
        except OSError:
            return None

    def poll(self) -> list[str]:
        """Note runs that started or finished since the last poll; one line (printed and returned) per finished."""
        with self._lock:
            return self._poll()

    def _poll(self) -> list[str]:
        now, lines = self.clock(), []
        for run_id in list(self.logs_before):
            if run_id not in self.started and self._log_mtime(run_id) != self.logs_before[run_id]:
                self.started[run_id] = now  # Snakemake opened its log: the job began (within a poll)
            m = finished(run_dir(self.plan.results, run_id))
            if m is None:
                continue
            del self.logs_before[run_id]
            start = self.started.pop(run_id, None)
            self.seconds[run_id] = now - start if start is not None else measured_seconds(m)
            running = {r: now - t for r, t in self.started.items()}
            left = estimate(self.plan, self.seconds, running)
            lines.append(line(len(self.seconds), len(self.plan.runs), left, self.jobs, run_id, self.seconds[run_id]))
        for text in lines:
            self.out(text)
        return lines

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="atlib-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, after a last look: the line of a run that finished just now is not lost."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL_SECONDS)
        self.poll()

