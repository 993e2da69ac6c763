"""How right was the progress line's ETA? Replays a finished DAG's runs through atlib.progress.

    python benchmarks/eta_replay.py CONFIG [--results DIR] [--jobs 2] [--after 1]

Each run's start is the first timestamp of its log (MLflow's first line, a few seconds after the job began) and its
end its metrics.json's modification time; the epochs it had logged at a moment are read from its history. At the
moment the ``--after``-th run finished, the estimate the progress line would have printed (atlib.progress: each
pending run's planned work at the measured cost of its kind, running runs by their logged epochs, a teacher before
its students) is set against the time the DAG really took from then on. The old estimate, every unfinished run at
the median seconds per epoch of the finished runs most like it, is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from datetime import datetime
from pathlib import Path

from atlib import preflight, progress
from atlib.plan import load_plan
from atlib.runkey import RunKey

STAMP = re.compile(r"^(\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2})", re.M)


def timeline(plan, logs: Path) -> dict[str, tuple[float, float, dict]]:
    """Run id -> (start, end, metrics) of every finished run."""
    out = {}
    for run_id in plan.runs:
        metrics = Path(plan.run_dir(run_id)) / "metrics.json"
        log = logs / f"{run_id}.log"
        if not metrics.is_file() or not log.is_file():
            continue
        found = STAMP.search(log.read_text(errors="replace"))
        start = datetime.strptime(found.group(1), "%Y/%m/%d %H:%M:%S").timestamp() if found else None
        m = json.loads(metrics.read_text())
        end = metrics.stat().st_mtime
        out[run_id] = (start if start is not None else end - progress.measured_seconds(m), end, m)
    return out


def epochs_by(m: dict, elapsed: float) -> tuple[int, int]:
    """(epochs finished, epochs) of a run ``elapsed`` seconds after its start, from its own history."""
    t, k = float(m.get("startup_seconds") or 0.0), 0
    for row in m.get("history") or []:
        t += row["epoch_seconds"]
        if t > elapsed:
            break
        k += 1
    return k, len(m.get("history") or [])


def old_estimate(plan, done: dict[str, float], running: dict[str, float]) -> float:
    """The earlier rule: every unfinished run at the median seconds per epoch of the finished runs most like it."""
    def groups(run_id: str) -> list[tuple[str, ...]]:
        key = RunKey.parse(run_id)
        t = key.teacher.model if key.teacher is not None else ""
        return [(key.dataset, key.model, t), (key.dataset, key.model), (key.dataset,), ()]

    per: dict[tuple[str, ...], list[float]] = {}
    for r, s in done.items():
        for g in groups(r):
            per.setdefault(g, []).append(s / progress._epochs(plan.runs[r]))
    left = 0.0
    for r, spec in plan.runs.items():
        if r not in done:
            rate = next(statistics.median(per[g]) for g in groups(r) if g in per)
            left += max(0.0, rate * progress._epochs(spec) - running.get(r, 0.0))
    return left


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--after", type=int, default=1, help="replay the moment this many runs had finished")
    args = ap.parse_args()
    plan = load_plan(args.config)
    times = timeline(plan, Path(plan.results) / "logs")
    if len(times) < len(plan.runs):
        raise SystemExit(f"{len(times)} of {len(plan.runs)} runs finished: replay a finished DAG")
    ends = sorted(end for _, end, _ in times.values())
    now, last = ends[args.after - 1], ends[-1]
    done = {r: progress.measured(m, end - start) for r, (start, end, m) in times.items() if end <= now}
    running = {r: now - start for r, (start, end, _) in times.items() if start <= now < end}
    logged = {r: epochs_by(times[r][2], e) for r, e in running.items()}
    left = progress.seconds_left(plan, done, running, preflight.train_images(plan), logged)
    new = progress.wall_left(plan, left, args.jobs)
    old = old_estimate(plan, {r: m.wall for r, m in done.items()}, running) / max(1, min(args.jobs, len(left)))
    real = last - now
    print(f"{args.config}: after run {args.after} of {len(plan.runs)} finished, {len(running)} running; "
          f"the DAG took {progress.duration(real)} more ({real:.0f} s)")
    print(f"  ETA now printed: {progress.duration(new)} ({new:.0f} s, {new / real:.2f}x the real time)")
    print(f"  ETA of the earlier rule: {progress.duration(old)} ({old:.0f} s, {old / real:.2f}x)")


if __name__ == "__main__":
    main()
