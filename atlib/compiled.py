"""Compiled training steps whose artifacts outlive the process.

``torch.compile`` spends tens of seconds on a CPU before its first step (docs/performance.md). Inductor keeps what it
compiled (its FX graph and AOTAutograd caches) in ``TORCHINDUCTOR_CACHE_DIR``; atlib points that at a folder it
owns, ``.cache/atlib/compile`` under the run's working directory (``ATLIB_COMPILE_CACHE`` overrides), so a second run
of the same architecture, in another process, finds its graphs compiled. A marker per architecture says the cache
is warm, which moves ``compile: auto``'s break-even (atlib.spec.COMPILE_BREAK_EVEN).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

CACHE = Path(".cache") / "atlib" / "compile"


def cache_dir() -> Path:
    return Path(os.environ.get("ATLIB_COMPILE_CACHE", CACHE)).resolve()


def architecture(spec: Any, input_shape: tuple[int, ...], device: torch.device) -> str:
    """What a compiled step's graphs depend on: the networks, the method, the batch, the input, device and torch."""
    what = {"student": spec.model.name, "options": spec.model.options, "method": spec.method.params(),
            "teacher": spec.teacher.model.name if spec.teacher else None, "batch": spec.recipe.batch_size,
            "input": list(input_shape), "device": device.type, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _marker(key: str) -> Path:
    return cache_dir() / f"compiled-{key}.json"


def is_warm(key: str) -> bool:
    """Whether a run of this architecture has compiled into the cache before."""
    return _marker(key).is_file()


def compile_in_place(objective: nn.Module) -> None:
    """Compile the objective's forward (and so its backward) in place, its artifacts in the project's cache.
    In place (nn.Module.compile): checkpoints keep their keys, and evaluation runs the student eagerly."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # read by inductor when it first compiles
    objective.compile()


def mark_warm(key: str, first_epoch_seconds: float) -> None:
    """Record, after a compiled run's first epoch, that this architecture's graphs are in the cache."""
    _marker(key).write_text(json.dumps({"first_epoch_seconds": first_epoch_seconds}))
