"""A Snakemake working directory: which Snakemake processes live in it, and its stale locks.

``make reproduce`` must not remove the lock of a ``snakemake`` started by hand in the same folder (it
would then let two DAGs write one results/), but must clear the lock a killed run left behind. Snakemake's
lock files record no process, so a lock is stale exactly when no live Snakemake process works in the folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def live_snakemake_pids(workdir: Path | str) -> list[int]:
    """Processes (other than this one) running Snakemake with ``workdir`` as their working directory."""
    target = Path(workdir).resolve()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:  # gone, or not ours to inspect
            continue
        # `snakemake ...` or `python .../snakemake ...`: the program or its script is named snakemake
        if any(Path(a.decode(errors="replace")).name == "snakemake" for a in argv[:2]) and cwd == target:
            pids.append(int(proc.name))
    return sorted(pids)


def clear_stale_locks(workdir: Path | str) -> list[Path]:
    """Remove Snakemake's locks in ``workdir`` when no Snakemake process lives there; returns what was removed."""
    locks = Path(workdir, ".snakemake", "locks")
    if not locks.is_dir() or live_snakemake_pids(workdir):
        return []
    removed = sorted(p for p in locks.iterdir() if p.is_file())
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
