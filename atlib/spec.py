"""A run spec: everything one training run needs, validated before any compute is spent.

A spec is plain data (YAML/JSON round-trips through :meth:`RunSpec.to_dict`/:meth:`RunSpec.from_dict`),
written by the plan for every job and by hand for a single ``atlib train``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .data import DataConfig
from .losses import ConfigError, Method
from .models import OPTIONS, family

DEVICES = ("auto", "cpu", "cuda")


def check_keys(cfg: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = set(cfg) - set(allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                          f"expected some of: {', '.join(sorted(allowed))}")


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | str, where: str = "model") -> ModelSpec:
        cfg = {"name": cfg} if isinstance(cfg, str) else dict(cfg)
        check_keys(cfg, _fields(cls), where)
        if "name" not in cfg:
            raise ConfigError(f"{where}.name: missing model name")
        try:
            fam = family(str(cfg["name"]))
        except ValueError as e:
            raise ConfigError(f"{where}.name: {e}") from None
        spec = cls(name=str(cfg["name"]), options=dict(cfg.get("options") or {}))
        check_keys(spec.options, OPTIONS[fam], f"{where}.options")
        return spec

    @property
    def slug(self) -> str:
        """The name, plus any option: a path component that tells two configurations apart."""
        return "-".join([self.name, *(f"{k}={_fmt(v)}" for k, v in sorted(self.options.items()))])


def _fmt(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


@dataclass(frozen=True)
class Recipe:
    """The optimisation recipe; defaults are the authors' CIFAR recipe."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)  # fractions of the epochs: 60/120/160 of 200
    gamma: float = 0.2
    eval_batch_size: int = 512

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "recipe") -> Recipe:
        cfg = dict(cfg)
        check_keys(cfg, _fields(cls), where)
        if "milestones" in cfg:
            cfg["milestones"] = tuple(float(m) for m in cfg["milestones"])
        r = cls(**cfg)
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if not (isinstance(getattr(r, key), int) and getattr(r, key) >= 1):
                raise ConfigError(f"{where}.{key}: expected an integer >= 1, got {getattr(r, key)!r}")
        for key in ("lr", "momentum", "weight_decay", "gamma"):
            if not (isinstance(getattr(r, key), (int, float)) and getattr(r, key) >= 0):
                raise ConfigError(f"{where}.{key}: expected a number >= 0, got {getattr(r, key)!r}")
        if any(not 0 < m < 1 for m in r.milestones):
            raise ConfigError(f"{where}.milestones: expected fractions in (0, 1), got {list(r.milestones)}")
        return r

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(epoch >= round(m * self.epochs) for m in self.milestones)


@dataclass(frozen=True)
class TeacherRef:
    """Where the teacher run lives and what it must be."""

    run_dir: str
    model: ModelSpec
    max_error: float | None = None  # refuse a teacher whose final test error (%) is above this

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "teacher") -> TeacherRef:
        check_keys(cfg, _fields(cls), where)
        for key in ("run_dir", "model"):
            if key not in cfg:
                raise ConfigError(f"{where}.{key}: missing")
        max_error = cfg.get("max_error")
        if max_error is not None and not (isinstance(max_error, (int, float)) and 0 <= max_error <= 100):
            raise ConfigError(f"{where}.max_error: expected a test error in [0, 100] (%), got {max_error!r}")
        return cls(str(cfg["run_dir"]), ModelSpec.from_config(cfg["model"], f"{where}.model"), max_error)


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    dataset: DataConfig
    model: ModelSpec
    method: Method = Method()
    recipe: Recipe = Recipe()
    seed: int = 0
    teacher: TeacherRef | None = None
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: torch's default
    tracking: dict[str, Any] = field(default_factory=dict)  # experiment, tags, store; {"enabled": False} off

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> RunSpec:
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"run spec: expected a mapping, got {type(cfg).__name__}")
        check_keys(cfg, _fields(cls), "run spec")
        for key in ("run_id", "dataset", "model"):
            if key not in cfg:
                raise ConfigError(f"{key}: missing")
        seed = cfg.get("seed", 0)
        if not (isinstance(seed, int) and seed >= 0):
            raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
        device = cfg.get("device", "auto")
        if device not in DEVICES:
            raise ConfigError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")
        tracking = dict(cfg.get("tracking") or {})
        check_keys(tracking, {"enabled", "experiment", "tags", "store"}, "tracking")
        spec = cls(
            run_id=str(cfg["run_id"]),
            dataset=DataConfig.from_config(cfg["dataset"], "dataset"),
            model=ModelSpec.from_config(cfg["model"], "model"),
            method=Method.from_config(cfg.get("method", "baseline"), "method"),
            recipe=Recipe.from_config(cfg.get("recipe") or {}, "recipe"),
            seed=seed,
            teacher=TeacherRef.from_config(cfg["teacher"]) if cfg.get("teacher") else None,
            device=device,
            threads=cfg.get("threads"),
            tracking=tracking,
        )
        if spec.method.needs_teacher and spec.teacher is None:
            raise ConfigError(f"teacher: method {spec.method.name!r} needs a teacher, and none is configured")
        return spec

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method"] = self.method.params()
        d["dataset"] = data_dict(self.dataset)
        return _plain(d)


def data_dict(cfg: DataConfig) -> dict[str, Any]:
    """The dataset keys that differ from the defaults: a dataset only takes the keys it uses."""
    default = DataConfig(name=cfg.name)
    return {"name": cfg.name, **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                                 if getattr(cfg, f.name) != getattr(default, f.name)}}


def _plain(x: Any) -> Any:
    """Tuples to lists, recursively, so a spec dumps to YAML/JSON and reloads equal."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
