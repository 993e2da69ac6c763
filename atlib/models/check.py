"""A plan's torchvision and user networks, checked before any compute (``atlib.preflight`` asks, so ``atlib plan``
and the DAG stop alike): their names, weights entries and files, group paths, and the group lists a method
compares pairwise. Each network is built on the meta device (shapes only: no weights in memory, no arithmetic)
and run once on a batch of the data's image size. Each problem is one line naming the config key.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..method import Method
from ..spec import DataConfig, ModelSpec, family
from . import build_model, tv, without_weight_files


@dataclass(frozen=True)
class Groups:
    """A network's groups on the data: their names (module paths; ``0``, ``1``... for the paper's networks) and
    each one's (height, width)."""

    names: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]
    channels: tuple[int, ...] = ()


def input_shape(data: DataConfig) -> tuple[int, int, int]:
    """One image's (channels, height, width), from the dataset's config alone."""
    if data.name == "synthetic":
        return (data.channels, data.size, data.size)
    if data.name == "imagefolder":
        return (3, data.image_size, data.image_size)
    return (1, 28, 28) if data.name == "fashion-mnist" else (3, 32, 32)


def _classes(data: DataConfig) -> int:
    return {"synthetic": data.num_classes, "cifar100": 100}.get(data.name, 10)  # the count changes no group


def _build(model: ModelSpec, shape: tuple[int, int, int], classes: int) -> nn.Module:
    options = without_weight_files(model.options)  # the weights entry is checked on its own; none is loaded here
    return build_model(model.name, shape[0], classes, image_size=(shape[1], shape[2]), **options)


def _run(model: ModelSpec, shape: tuple[int, int, int], classes: int) -> tuple[nn.Module, list[torch.Tensor]]:
    """The network, and its groups on a zero batch of two images (in eval mode: no batch statistics change)."""
    net = _build(model, shape, classes).eval()
    with torch.no_grad():
        _, groups = net(torch.zeros((2, *shape)))
    return net, groups


def describe(model: ModelSpec, shape: tuple[int, int, int], classes: int) -> Groups:
    """``model``'s groups at the image ``shape``; a bad name, weights entry or group path is a ConfigError."""
    if family(model.name) == "tv" and "weights" in model.options:
        tv.weights_entry(model.name.removeprefix("tv:"), model.options["weights"])
    try:
        with torch.device("meta"):
            net, groups = _run(model, shape, classes)
    except Exception:  # e.g. a user's network that does not run on the meta device: run it for real (a config's
        net, groups = _run(model, shape, classes)  # error is raised again there, as a ConfigError)
    names = getattr(net, "paths", None) or tuple(str(i) for i in range(len(groups)))
    return Groups(tuple(names), tuple((int(g.shape[-2]), int(g.shape[-1])) for g in groups),
                  tuple(int(g.shape[1]) for g in groups))


def _locations(plan: Any) -> dict[str, str]:
    """Run id -> the config key of its model: ``tables.<table>.rows[<index>].student`` (or ``.teacher``)."""
    where: dict[str, str] = {}
    for cell in plan.cells:
        rows = plan.tables[cell.table]["rows"]
        row = f"tables.{cell.table}.rows[{rows.index(cell.row) if cell.row in rows else cell.row}]"
        for run in cell.runs:
            where.setdefault(run, f"{row}.{'teacher' if cell.column == 'teacher' else 'student'}")
            if run in plan.teacher_of:
                where.setdefault(plan.teacher_of[run], f"{row}.teacher")
    return where


def _key(model: ModelSpec, shape: tuple[int, int, int]) -> str:
    return json.dumps([dataclasses.asdict(model), shape], sort_keys=True)


def plan_problems(plan: Any, require_files: bool = False) -> list[str]:
    """One line per problem of the plan's tapped networks (and of the paper's networks they are paired with);
    with ``require_files``, also every torchvision weights file that is not in torch's hub cache or not intact."""
    where = _locations(plan)
    problems: dict[str, None] = {}  # ordered, each once
    described: dict[str, Groups | None] = {}

    def groups(run_id: str, model: ModelSpec, data: DataConfig, role: str) -> Groups | None:
        shape = input_shape(data)
        key = _key(model, shape)
        if key not in described:
            described[key] = None
            try:
                described[key] = describe(model, shape, _classes(data))
            except ConfigError as e:
                problems[f"{where.get(run_id, role)}{str(e).removeprefix('model')}"] = None
        return described[key]

    for run_id, spec in plan.runs.items():
        model, data = ModelSpec.from_config(spec["model"]), DataConfig.from_config(spec["dataset"])
        if model.tapped:
            groups(run_id, model, data, "model")
            if require_files and "weights" in model.options:
                try:
                    tv.require_weights_file(model.name.removeprefix("tv:"), model.options["weights"])
                except ConfigError as e:
                    problems[f"{where.get(run_id, 'model')}{str(e).removeprefix('model')}"] = None
        if spec.get("teacher"):
            if (problem := _pair_problem(run_id, spec, data, where, groups)) is not None:
                problems[problem] = None
    return list(problems)


def _pair_problem(run_id: str, spec: Mapping[str, Any], data: DataConfig, where: Mapping[str, str],
                  groups: Any) -> str | None:
    """A student and teacher whose groups a method compares pairwise: the same number of them, the method's
    ``groups`` indices among them, and equal sizes where the method needs them (F-ActT)."""
    method = Method.from_config(spec.get("method") or "baseline")
    student, teacher = ModelSpec.from_config(spec["model"]), ModelSpec.from_config(spec["teacher"]["model"])
    if not method.compares_groups or not (student.tapped or teacher.tapped):
        return None  # the paper's pairs: the objective checks them when the run is built, as it always has
    s, t = groups(run_id, student, data, "student"), groups(run_id, teacher, data, "teacher")
    if s is None or t is None:
        return None  # already a problem of its own
    at = f"{where.get(run_id, 'student')}.options.groups"
    if len(s.names) != len(t.names):
        return (f"{at}: method {method.name!r} compares the student's groups with the teacher's pairwise, but "
                f"{student.name} has {len(s.names)} ({', '.join(s.names)}) and {teacher.name} has {len(t.names)} "
                f"({', '.join(t.names)}); expected lists of the same length (set options.groups on either)")
    n = len(s.names)
    try:
        compared = method.group_indices(n)
    except ConfigError:
        return (f"{where.get(run_id, 'student')}: method {method.name!r} has groups {list(method.groups)}, but the "
                f"networks have {n} groups; expected indices from 0 to {n - 1} (-1 the last)")
    if method.sizes_must_match():
        for g in sorted(set(compared)):
            if s.sizes[g] != t.sizes[g]:
                return (f"{at}: group {g} is {s.names[g]} {s.sizes[g]} in {student.name} and {t.names[g]} "
                        f"{t.sizes[g]} in {teacher.name}; method {method.name!r} needs equal sizes")
    return None
