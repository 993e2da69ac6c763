"""Progress of a whole DAG: one line per finished run, with done/total and an ETA from the runs' measured speed.

Snakemake's own "N of M steps" counts jobs of every rule alike; here only training runs count, each weighed by what
runs like it took. A :class:`Watcher` thread in the Snakemake process (started by the Snakefile's ``onstart``)
looks at the run folders every few seconds, so it sees jobs on a cluster finish as well as local ones: a job has
started when Snakemake opens its log (``results/logs/<run id>.log``), and finished once its metrics.json is whole.
"""

from __future__ import annotations

import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


def kind(plan: Any, run_id: str) -> str:
    """What a run's step costs like: a teacher's, a distilled student's (the teacher's forward, live or looked
    up), or a plain one's."""
    return "teacher" if run_id in plan.teachers else "distilled" if run_id in plan.teacher_of else "baseline"


def _groups(plan: Any, run_id: str) -> list[tuple[str, ...]]:
    """Runs whose images cost alike, from most to least alike: kind, network, teacher and data; kind, network and
    teacher; kind and network; network; every run."""
    key = RunKey.parse(run_id)
    teacher = key.teacher.model if key.teacher is not None else ""
    k = kind(plan, run_id)
    return [(k, key.model, teacher, key.dataset), (k, key.model, teacher), (k, key.model), (key.model,), ()]


@dataclass(frozen=True)
class Measured:
    """A finished run: its wall seconds (job start to metrics.json, or its own record) and its epochs' share."""

    wall: float
    train: float


def measured(metrics: Mapping[str, Any], wall: float | None = None) -> Measured:
    train = float(metrics.get("train_seconds") or 0.0)
    return Measured(wall if wall is not None else float(metrics.get("startup_seconds") or 0.0) + train, train)


def measured_seconds(metrics: Mapping[str, Any]) -> float:
    """A finished run's own record of its time: start-up (imports, data, model) plus its epochs."""
    return measured(metrics).wall


def planned_work(plan: Any, run_id: str, images: Mapping[str, int | None] | None) -> float:
    """A run's planned image-epochs: its epochs times its training images (epochs alone when the size is unknown)."""
    return _epochs(plan.runs[run_id]) * ((images or {}).get(run_id) or 1)


def seconds_left(plan: Any, done: Mapping[str, Measured], running: Mapping[str, float],
                 images: Mapping[str, int | None] | None = None,
                 epochs_done: Mapping[str, tuple[int, int]] | None = None) -> dict[str, float]:
    """Single-job seconds left of each unfinished run. A pending run costs the finished runs' median overhead
    (start-up, evaluations: wall less epochs) plus its planned image-epochs at the median seconds per image-epoch
    of the finished runs most like it (``_groups``: a distilled student is not priced as a plain one). A running run
    that has logged k of its N epochs has (N - k) epochs left at its own pace; else its estimate less its time."""
    if not done:
        return {r: float("nan") for r in plan.runs if r not in done}
    rates: dict[tuple[str, ...], list[float]] = {}
    for run_id, m in done.items():
        for group in _groups(plan, run_id):
            rates.setdefault(group, []).append(m.train / planned_work(plan, run_id, images))
    overhead = statistics.median(max(0.0, m.wall - m.train) for m in done.values())
    left = {}
    for run_id in plan.runs:
        if run_id in done:
            continue
        rate = next(statistics.median(rates[g]) for g in _groups(plan, run_id) if g in rates)
        estimate = overhead + rate * planned_work(plan, run_id, images)
        elapsed = running.get(run_id)
        k, n = (epochs_done or {}).get(run_id, (0, 0))
        if elapsed is not None and k > 0:
            left[run_id] = elapsed / k * (n - k)
        else:
            left[run_id] = max(0.0, estimate - (elapsed or 0.0))
    return left


def wall_left(plan: Any, left: Mapping[str, float], jobs: int) -> float:
    """Wall seconds left on ``jobs`` job slots: the work shared out, or an unfinished teacher and then its students'
    work, whichever is longer (students wait for their teacher's model)."""
    if not left:
        return 0.0
    spread = sum(left.values()) / max(1, min(jobs, len(left)))
    chains = [left[t] + sum(v for s, v in left.items() if plan.teacher_of.get(s) == t) / max(1, jobs)
              for t in plan.teachers if t in left]
    return max([spread, *chains])


def estimate(plan: Any, seconds: Mapping[str, float | Measured], running: Mapping[str, float]) -> float:
    """Single-job seconds left, from finished runs' seconds (or :class:`Measured`), with no sizes or epoch counts."""
    done = {r: s if isinstance(s, Measured) else Measured(float(s), float(s)) for r, s in seconds.items()}
    return sum(seconds_left(plan, done, running).values())


EPOCH_LINE = re.compile(rb"\] epoch (\d+)/(\d+) loss")


def epochs_logged(log: Path) -> tuple[int, int] | None:
    """(k, N) of a running job's last "epoch k/N" line (atlib.engine's), from the end of its log."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            found = EPOCH_LINE.findall(f.read())
    except OSError:
        return None
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def duration(seconds: float) -> str:
    if seconds != seconds:  # nan: nothing measured yet
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def line(done: int, total: int, wall: float, jobs: int, run_id: str, took: float) -> str:
    """One finished run's line; ``wall``: the wall seconds left (:func:`wall_left`)."""
    if done == total:
        return f"atlib: {done}/{total} runs done; {run_id} took {duration(took)}"
    return (f"atlib: {done}/{total} runs done, ETA {duration(wall)} from each run's planned work at the measured "
            f"cost of its kind ({jobs} jobs at once); {run_id} took {duration(took)}")


class Watcher:
    """Prints :func:`line` for every run of ``plan`` that finishes while it watches (:meth:`poll`, every
    POLL_SECONDS in a daemon thread from :meth:`start` until :meth:`stop`)."""

    def __init__(self, plan: Any, logs: Path | str, jobs: int, out: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, images: Mapping[str, int | None] | None = None) -> None:
        self.plan, self.logs, self.jobs, self.clock = plan, Path(logs), jobs, clock
        self.images = images  # run id -> training images per epoch (atlib.preflight.train_images)
        self.out = out or (lambda text: print(text, file=sys.stdout, flush=True))
        self.seconds: dict[str, Measured] = {}  # finished runs: measured seconds
        self.started: dict[str, float] = {}  # runs seen starting: clock() then
        self.logs_before: dict[str, float | None] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the thread's polls and stop()'s last one
        self._thread: threading.Thread | None = None
        for run_id in plan.runs:
            if (m := finished(run_dir(plan.results, run_id))) is not None:
                self.seconds[run_id] = measured(m)
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
            self.seconds[run_id] = measured(m, now - start if start is not None else None)
            running = {r: now - t for r, t in self.started.items()}
            logged = {r: k for r in running if (k := epochs_logged(self.logs / f"{r}.log")) is not None}
            left = seconds_left(self.plan, self.seconds, running, self.images, logged)
            lines.append(line(len(self.seconds), len(self.plan.runs), wall_left(self.plan, left, self.jobs),
                              self.jobs, run_id, self.seconds[run_id].wall))
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

