"""What a run is called and carries in MLflow: its name in the runs list, its description, MLflow's own tags, and
its run spec as flat parameters."""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from typing import Any

NOTE = "mlflow.note.content"  # the run's Markdown description, shown on its Overview page
MAX_TAG = 8000  # MLflow's longest tag value (mlflow.utils.validation.MAX_TAG_VAL_LENGTH)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (a bare container)
        return "unknown"


def _slug(model: Mapping[str, Any] | str) -> str:
    from ..spec import ModelSpec

    m = {"name": model} if isinstance(model, str) else model
    return ModelSpec(m["name"], dict(m.get("options") or {})).slug


def run_name(config: Mapping[str, Any]) -> str:
    """The name the runs list shows, from a run spec dict (``RunSpec.to_dict()``, metrics.json's ``config``):
    method variant, seed, student←teacher and recipe, e.g. ``at · s3 · wrn-16-1←wrn-16-2 · quick``.

    The seed comes before the pair: MLflow 3.17's runs list cuts names after about 25 characters, and runs of one
    cell differ only in their seed. The recipe is there because a dataset's experiment may hold a model and seed
    under two recipes (config/paper.yaml trains nin-wide seed 0 under ``paper`` and ``table3``)."""
    method = config.get("method") or "baseline"
    tags = (config.get("tracking") or {}).get("tags") or {}
    pair = _slug(config["model"])
    if config.get("teacher"):
        pair += f"←{_slug(config['teacher']['model'])}"
    parts = [str(tags.get("variant") or (method if isinstance(method, str) else method["name"])),
             f"s{config.get('seed', 0)}", pair]
    return " · ".join(parts + ([str(tags["recipe"])] if tags.get("recipe") else []))


def run_note(config: Mapping[str, Any], teacher_run: str | None = None) -> str:
    """A paragraph of Markdown that says what a run is: its pair, method and parameters, data, recipe and
    teacher run (a link to it). Shown as the run's description in MLflow's UI."""
    method = config.get("method") or "baseline"
    method = {"name": method} if isinstance(method, str) else method
    # sorted: metrics.json (which sync reads) keeps its keys sorted, a RunSpec in its fields' order
    params = ", ".join(f"{k}={v}" for k, v in sorted(method.items()) if k != "name" and v is not None)
    data = config.get("dataset") or {}
    sizes = ", ".join(f"{k.removesuffix('_size')} {v}" for k, v in data.items() if k.endswith("_size") and v)
    r = config.get("recipe") or {}
    recipe = (config.get("tracking") or {}).get("tags", {}).get("recipe", "")
    text = f"**{method['name']}**{f' ({params})' if params else ''}: student {_slug(config['model'])}"
    if config.get("teacher"):
        link = f" (MLflow run [{teacher_run[:8]}](#/runs/{teacher_run}))" if teacher_run else ""
        text += f" taught by {_slug(config['teacher']['model'])} from `{config['teacher']['run_dir']}`{link}"
    else:
        text += ", trained alone: a teacher or a baseline"
    text += (f". Seed {config.get('seed', 0)}, on {data.get('name', '?')}{f' ({sizes})' if sizes else ''}, "
             f"recipe {recipe + ': ' if recipe else ''}{r.get('epochs', '?')} epochs, "
             f"batch {r.get('batch_size', '?')}, lr {r.get('lr', '?')}. Run id `{config.get('run_id', '?')}`.")
    return text


def standard_tags(config: Mapping[str, Any], teacher_run: str | None, commit: str | None) -> dict[str, str]:
    """MLflow's own tags, which its UI shows in its fields: git commit, user, description."""
    tags = {"mlflow.user": _user(), NOTE: run_note(config, teacher_run)[:MAX_TAG]}
    return tags | ({"mlflow.source.git.commit": commit} if commit else {})


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:6000]
    return out
