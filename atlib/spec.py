"""Configs: a run spec and its parts (method, dataset, model, recipe), validated before any compute.

This module imports no torch: the plan (and so `snakemake -n`) reads every config without it.

A spec is plain data (YAML/JSON round-trips through :meth:`RunSpec.to_dict`/:meth:`RunSpec.from_dict`),
written by the plan for every job and by hand for a single ``atlib train``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .importpath import IMPORT_PATH
from .method import Method

DEVICES = ("auto", "cpu", "cuda")
# crop+flip: the dataset's standard crop (CIFAR/Fashion-MNIST: reflect-pad 4 and crop; an image folder: ImageNet's
# random-resized crop); scale+crop+flip (image folders): shorter side to 256/224 of image_size, random crop
# (the paper's CUB/Scenes recipe); crop+jitter+lighting+flip (image folders): fb.resnet.torch's ImageNet training
# transform (the random-resized crop, colour jitter 0.4, PCA lighting 0.1, flip); flip: flips only (Table 3); none.
AUGMENTATIONS = ("crop+flip", "scale+crop+flip", "crop+jitter+lighting+flip", "flip", "none")
FOLDER_ONLY = ("scale+crop+flip", "crop+jitter+lighting+flip")  # they resize or recolour an image folder's images
# Names that become parts of run ids, hence of paths under results/ and of MLflow searches: no separators,
# no "..", no quotes, no spaces. The schema's propertyNames patterns say the same.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
RUN_ID_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,@-]*")  # a planned part may add key=value, lists, @
LABEL_FORBIDDEN = re.compile(r"[\'\"\\\x00-\x1f]")  # labels are free text, but go into MLflow tags and searches


def check_name(value: Any, where: str) -> str:
    """``value`` if it is a safe name (letters, digits, ``. _ + -``; not starting with a dot or dash)."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not a valid name; use letters, digits and . _ + - "
                          "(starting with a letter or digit): it becomes part of file paths and MLflow searches")
    return value


def check_label(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or LABEL_FORBIDDEN.search(value):
        raise ConfigError(f"{where}: {value!r} is not a valid label; no quotes, backslashes or control "
                          "characters: it goes into MLflow tags and searches")
    return value


def check_run_id(value: Any, where: str = "run_id") -> str:
    """A run id is a relative path of safe parts: it names the run's folder under results/runs/."""
    parts = str(value).split("/")
    if not all(RUN_ID_PART.fullmatch(p) for p in parts):
        raise ConfigError(f"{where}: {value!r} is not a valid run id; expected '/'-separated parts of "
                          "letters, digits and . _ + = , @ - (no '..', no leading '/', no quotes or spaces)")
    return str(value)


# --- datasets ---------------------------------------------------------------------------------

NAMES: tuple[str, ...] = ("cifar10", "cifar100", "fashion-mnist", "imagefolder", "synthetic")
DEFAULT_ROOTS: dict[str, str] = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",  # Debian's dataset-fashion-mnist
    "cifar10": "data/cifar10",
    "cifar100": "data/cifar100",
}

_COMMON = {"name", "train_size", "test_size", "per_class", "subset_seed"}
_IN_MEMORY = _COMMON | {"validation_per_class"}  # a held-out split of the training file: in-memory datasets
KEYS: dict[str, frozenset[str]] = {
    "cifar10": frozenset(_IN_MEMORY | {"root", "download"}),
    "cifar100": frozenset(_IN_MEMORY | {"root", "download"}),
    "fashion-mnist": frozenset(_IN_MEMORY | {"root", "download"}),
    "imagefolder": frozenset(_COMMON | {"root", "image_size"}),
    "synthetic": frozenset(_IN_MEMORY | {"num_classes", "channels", "size",
                                         "synthetic_train", "synthetic_test"}),
}


class DataError(ValueError):
    """A dataset that is missing or corrupt on disk; the message names the path and how to get it."""


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to use and how much of it; the defaults are the paper's full datasets."""

    name: str
    root: str | None = None
    download: bool = False
    train_size: int | None = None
    test_size: int | None = None
    # A class-balanced training subset: N images of each class instead of the first train_size. Without
    # subset_seed they are each class's first N in file order; with an integer the draw is random under that
    # seed, and "run" draws with the run's seed, so seeds vary the subset and a paired method seed shares it.
    per_class: int | None = None
    subset_seed: int | str | None = None
    # Validation: N images of each class held out of the training file, the same ones for every run and seed
    # (a fixed draw), never in any training subset; every evaluation reports their error beside the test's.
    validation_per_class: int | None = None
    image_size: int = 224
    num_classes: int = 10
    channels: int = 1
    size: int = 16
    synthetic_train: int = 512
    synthetic_test: int = 256

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "dataset") -> DataConfig:
        """Build from a config mapping; a key the dataset does not take is an error, not silently unused."""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{where}: expected a mapping with at least a 'name', got {cfg!r}")
        name = cfg.get("name")
        if name not in NAMES:
            raise ConfigError(f"{where}.name: expected one of {', '.join(NAMES)}, got {name!r}")
        known = {f.name for f in fields(cls)}
        for key in cfg:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key; "
                                  f"expected one of {', '.join(sorted(KEYS[name]))}")
            if key not in KEYS[name]:
                raise ConfigError(f"{where}.{key}: not used by dataset {name!r}; "
                                  f"it takes {', '.join(sorted(KEYS[name]))}")
        data = cls(**dict(cfg))
        data.check(where)
        return data

    def check(self, where: str = "dataset") -> None:
        """Reject impossible values early, naming the offending key."""
        def bad(key: str, expected: str) -> ConfigError:
            return ConfigError(f"{where}.{key}: expected {expected}, got {getattr(self, key)!r}")

        if self.name not in NAMES:
            raise bad("name", f"one of {', '.join(NAMES)}")
        if self.root is not None and not isinstance(self.root, str | os.PathLike):
            raise bad("root", "a directory path")
        if self.name == "imagefolder" and self.root is None:
            raise ConfigError(f"{where}.root: required for imagefolder (a directory with train/ and val/)")
        if not isinstance(self.download, bool):
            raise bad("download", "true or false")
        if self.download and self.name not in ("cifar10", "cifar100", "fashion-mnist"):
            raise bad("download", "false: only cifar10, cifar100 and fashion-mnist can be downloaded")
        for key in ("train_size", "test_size", "per_class", "validation_per_class"):
            if getattr(self, key) is not None and not _is_int(getattr(self, key), 1):
                raise bad(key, "an integer >= 1 or null (all)")
        if self.per_class is not None and self.train_size is not None:
            raise bad("per_class", "no train_size beside it (per_class sets the training subset's size)")
        if self.subset_seed is not None:
            if self.per_class is None:
                raise bad("subset_seed", "null unless per_class is set (it draws the per-class subset)")
            if self.subset_seed != "run" and not _is_int(self.subset_seed, 0):
                raise bad("subset_seed", "an integer >= 0, 'run' (the run's seed) or null (each class's first N)")
        minima = {"image_size": 8, "num_classes": 2, "channels": 1, "size": 4,
                  "synthetic_train": 1, "synthetic_test": 1}
        for key, low in minima.items():
            if not _is_int(getattr(self, key), low):
                raise bad(key, f"an integer >= {low}")

    @property
    def path(self) -> Path | None:
        """The dataset's directory after defaults; None for synthetic data."""
        root = self.root if self.root is not None else DEFAULT_ROOTS.get(self.name)
        return None if root is None else Path(root)


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low



# --- model names ------------------------------------------------------------------------------

KNOWN = ("wrn-<depth>-<width> (depth = 6n+4, e.g. wrn-16-1, wrn-16-2, wrn-40-1, wrn-40-2)",
         "nin-wide", "nin-thin", "resnet-18", "resnet-34", "preresnet-18", "preresnet-34",
         "tv:<torchvision classifier> (e.g. tv:resnet50, tv:mobilenet_v3_small; `atlib models` lists them)",
         "<package.module>:<factory> (your own network)")
OPTIONS = {"wrn": set(), "nin": {"batchnorm", "relu_before_pool", "group_outputs"}, "resnet": {"pretrained"},
           "preresnet": set(), "tv": {"weights", "groups"}, "factory": {"groups"}}
# Families whose attention groups are modules named by path (atlib.models.tap): checking them needs torch.
TAPPED = ("tv", "factory")
TV_NAME = re.compile(r"tv:[a-z][a-z0-9_]*")  # "tv:" is torchvision's: a user's module is never called tv
MODULE_PATH = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")  # as nn.Module.named_modules() names a module
WEIGHTS = re.compile(r"[A-Z][A-Z0-9_]*")  # an entry of a torchvision weights enum: IMAGENET1K_V1, DEFAULT


def family(name: str) -> str:
    """The model family of a registry name, or a ValueError listing the known names."""
    if re.fullmatch(r"wrn-\d+-\d+", name):
        depth = int(name.split("-")[1])
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"unknown model {name!r}: WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...)")
        return "wrn"
    if name in ("nin-wide", "nin-thin"):
        return "nin"
    if name in ("resnet-18", "resnet-34"):
        return "resnet"
    if name in ("preresnet-18", "preresnet-34"):
        return "preresnet"
    if name.startswith("tv:"):
        if TV_NAME.fullmatch(name):
            return "tv"  # whether torchvision has it: atlib.models.tv (torch), from the plan's preflight
        raise ValueError(f"unknown model {name!r}: tv: takes a torchvision model name, e.g. tv:resnet50")
    if IMPORT_PATH.fullmatch(name):
        return "factory"
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(KNOWN)}")


def name_slug(name: str) -> str:
    """A model name as a run id shows it (no colons): ``tv:mobilenet_v3_small`` -> ``tv-mobilenet_v3_small``,
    ``mypkg.nets:small`` -> ``mypkg.nets.small`` (a factory's always holds a dot, which no other name does, so
    no two names meet); the paper's names are unchanged."""
    if name.startswith("tv:"):
        return "tv-" + name[3:]
    return name.replace(":", ".")


def _check_tapped_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``groups`` (module paths, each once) and ``weights`` (an enum entry's name), as far as a name's form
    tells; whether they exist in the network is atlib.models' check (torch). Groups become a list, as JSON
    gives them back from a run's metrics.json (the teacher gate compares the two)."""
    options = dict(options)
    if "groups" in options:
        groups = options["groups"]
        if (not isinstance(groups, list | tuple) or not groups
                or not all(isinstance(g, str) and MODULE_PATH.fullmatch(g) for g in groups)):
            raise ConfigError(f"{where}.groups: expected a non-empty list of module paths (e.g. [layer2, layer3, "
                              f"layer4]), got {groups!r}")
        if len(set(groups)) != len(groups):
            raise ConfigError(f"{where}.groups: {list(groups)} names a module twice; expected each group once")
        options["groups"] = list(groups)
    weights = options.get("weights")
    if "weights" in options and not (isinstance(weights, str) and WEIGHTS.fullmatch(weights)):
        raise ConfigError(f"{where}.weights: expected the name of a torchvision weights entry (e.g. IMAGENET1K_V1 "
                          f"or DEFAULT), got {weights!r}")
    return options




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
        options = dict(cfg.get("options") or {})
        check_keys(options, OPTIONS[fam], f"{where}.options")
        if fam in TAPPED:
            options = _check_tapped_options(options, f"{where}.options")
        spec = cls(name=str(cfg["name"]), options=options)
        for key, value in spec.options.items():
            if not RUN_ID_PART.fullmatch(f"{key}={_fmt(value)}"):
                raise ConfigError(f"{where}.options.{key}: {value!r} cannot name a run; use letters, digits "
                                  "and . _ + - (a path shows its file name)")
        return spec

    @property
    def slug(self) -> str:
        """The name (:func:`name_slug`), plus any option: a path component that tells two configurations apart.
        A path-valued option (e.g. ``pretrained: weights/resnet34-b627a593.pth``) shows its file's stem, a list
        its items joined by commas (``groups=layer2,layer3``)."""
        return "-".join([name_slug(self.name), *(f"{k}={_fmt(v)}" for k, v in sorted(self.options.items()))])

    @property
    def tapped(self) -> bool:
        """Whether its groups are modules named by path (torchvision's and a user's networks)."""
        return family(self.name) in TAPPED


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list | tuple):
        return ",".join(_fmt(x) for x in v)
    return Path(v).stem if isinstance(v, str) and "/" in v else str(v)


# torch: PyTorch's initialisation (batch-norm weights 1), or a network's own where its constructor draws it;
# authors: the authors' code; fb: fb.resnet.torch's (fan-out convolutions, batch-norm weights 1): atlib/models/init.py
INITS: tuple[str, ...] = ("torch", "authors", "fb")
# which test error a run's table reports: its last epoch's, or its best epoch's (fb.resnet.torch's "Finished"
# line: the lowest top-1 and the top-5 of that epoch)
REPORTED: tuple[str, ...] = ("final", "best")
# bf16: autocast on CUDA; fp32: IEEE single precision on CUDA (TF32 off). A CPU computes in fp32 either way.
PRECISIONS: tuple[str, ...] = ("bf16", "fp32")


@dataclass(frozen=True)
class Recipe:
    """The optimisation recipe; defaults are the authors' CIFAR recipe, except ``init`` and ``precision``,
    whose defaults (PyTorch's initialisation, bf16 on CUDA) config/paper.yaml overrides."""

    epochs: int = 200  # 0: a given model (e.g. a pretrained teacher) that is only evaluated
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)  # fractions of the epochs: 60/120/160 of 200
    gamma: float = 0.2
    # A drop zeroes SGD's momentum, as the authors' cifar.py and imagenet.py build a new optimizer at each;
    # fb.resnet.torch keeps one optimState, so its momentum runs on through a drop (false).
    momentum_reset: bool = True
    reported: str = "final"  # which epoch's test error the tables show beside the paper's: see REPORTED
    eval_batch_size: int = 512
    eval_every: int = 1  # test every N epochs (and always after the last): a full test set costs a CPU run a lot
    augment: str = "crop+flip"  # "flip": Table 3's flips only; "none"
    freeze_bn: bool = False  # Table 4: BN in eval mode, its affine parameters fixed
    freeze_groups: tuple[int, ...] = ()  # Table 4: [0] fixes the first group of residual blocks
    freeze_stem: bool = False  # the first convolution (and its BN): the paper names only BN and the first group
    # How the weights that are not loaded are drawn: "torch" or "authors" (see INITS). A pretrained network
    # keeps its weights either way; only its new layers (a classifier for other classes) are drawn.
    init: str = "torch"
    # CUDA's arithmetic: "bf16" autocast (tensor cores; a test bounds its maps and losses against fp32) or
    # "fp32", what the authors trained in. benchmarks/gpu_check.py measures the difference on a short run.
    precision: str = "bf16"
    # torch.compile the training step's objective (student and teacher forward, losses, and their backward):
    # true, false, or "auto": where the run's planned steps reach COMPILE_BREAK_EVEN (cold, or warm when this
    # architecture's compiled artifacts are already in the project's cache, atlib.compiled). Off by default: it pays
    # only in long runs. CPU, 1 thread, WRN-16-1, batch 128 (benchmarks/train_step.py --compile): steady 1.62x eager
    # (baseline) and 1.31x (AT) after 34 s and 53 s of compiling, so it breaks even after 145 and 221 steps; a last
    # partial batch, or a beta schedule (a new progress each step), compiles a second graph. CUDA: not yet measured.
    compile: bool | str = False
    # Compute the teacher's outputs once per input before training where the inputs are finite (augment flip or
    # none; atlib.teacher_cache), within teacher_cache_mb of memory on the run's device; else the live teacher.
    teacher_cache: bool = True
    teacher_cache_mb: float = 1024.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "recipe") -> Recipe:
        cfg = dict(cfg)
        check_keys(cfg, _fields(cls), where)
        if "milestones" in cfg:
            cfg["milestones"] = tuple(float(m) for m in cfg["milestones"])
        if "freeze_groups" in cfg:
            cfg["freeze_groups"] = tuple(cfg["freeze_groups"])
        r = cls(**cfg)
        if r.augment not in AUGMENTATIONS:
            raise ConfigError(f"{where}.augment: expected one of {', '.join(AUGMENTATIONS)}, got {r.augment!r}")
        if r.compile not in (True, False, "auto"):
            raise ConfigError(f"{where}.compile: expected true, false or auto, got {r.compile!r}")
        for key in ("freeze_stem", "nesterov", "momentum_reset", "teacher_cache"):
            if not isinstance(getattr(r, key), bool):
                raise ConfigError(f"{where}.{key}: expected true or false, got {getattr(r, key)!r}")
        if r.init not in INITS:
            raise ConfigError(f"{where}.init: expected one of {', '.join(INITS)}, got {r.init!r}")
        if r.reported not in REPORTED:
            raise ConfigError(f"{where}.reported: expected one of {', '.join(REPORTED)}, got {r.reported!r}")
        if r.precision not in PRECISIONS:
            raise ConfigError(f"{where}.precision: expected one of {', '.join(PRECISIONS)}, got {r.precision!r}")
        if any(not isinstance(g, int) or g < 0 for g in r.freeze_groups):
            raise ConfigError(f"{where}.freeze_groups: expected group indices >= 0, got {list(r.freeze_groups)}")
        for key in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
            low = 0 if key == "epochs" else 1
            if not _is_int(getattr(r, key), low):
                raise ConfigError(f"{where}.{key}: expected an integer >= {low}, got {getattr(r, key)!r}")
        for key in ("lr", "momentum", "weight_decay", "gamma", "teacher_cache_mb"):
            if not (isinstance(getattr(r, key), (int, float)) and getattr(r, key) >= 0):
                raise ConfigError(f"{where}.{key}: expected a number >= 0, got {getattr(r, key)!r}")
        if any(not 0 < m < 1 for m in r.milestones):
            raise ConfigError(f"{where}.milestones: expected fractions in (0, 1), got {list(r.milestones)}")
        return r

    def drops(self, epoch: int) -> int:
        """How many learning-rate drops have happened by (0-based) ``epoch``.

        The authors' code counts epochs from 1 and lowers the rate at the start of epoch 60 (of 200), which is
        0-based epoch 59: a milestone m drops the rate from 0-based epoch round(m * epochs) - 1 on.
        """
        return sum(epoch + 1 >= round(m * self.epochs) for m in self.milestones)

    def compiles(self, steps: int, warm: bool) -> bool:
        """Whether a run of ``steps`` planned steps compiles its step: ``compile: auto`` where the steps reach the
        measured break-even, the warm one when the architecture's compiled artifacts are already cached."""
        if self.compile != "auto":
            return bool(self.compile)
        return steps >= COMPILE_BREAK_EVEN["warm" if warm else "cold"]

    def evaluates(self, epoch: int) -> bool:
        """Whether the test set is evaluated after (0-based) ``epoch``."""
        return (epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** self.drops(epoch)

    def drops_at(self, epoch: int) -> bool:
        """Whether the learning rate drops at the start of (0-based) ``epoch``."""
        return epoch > 0 and self.drops(epoch) != self.drops(epoch - 1)

    def resets_momentum(self, epoch: int) -> bool:
        """The authors build a new optimizer at each drop, so SGD's momentum starts again from zero (unless
        ``momentum_reset`` is off, as in fb.resnet.torch)."""
        return self.momentum_reset and self.drops_at(epoch)


# Steps after which a compiled step has paid for its compilation (CPU, 1 thread, WRN-16-1 from WRN-16-2 under AT,
# batch 128, 1x28x28; benchmarks/train_step.py --compile, 2026-12-05, docs/performance.md): a cold cache, 37.7 s of
# compiling for 1.45x steady, and a second process whose artifacts are in atlib.compiled's cache, 4.0 s for 1.50x.
COMPILE_BREAK_EVEN = {"cold": 262, "warm": 25}


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
    method: Method = field(default_factory=lambda: Method.from_config("baseline"))
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
        check_keys(tracking, {"enabled", "experiment", "tags", "store", "attention_every"}, "tracking")
        spec = cls(
            run_id=check_run_id(cfg["run_id"]),
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


def _changes(obj: Any, default: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if getattr(obj, f.name) != getattr(default, f.name)}


def data_dict(cfg: DataConfig) -> dict[str, Any]:
    """The dataset keys that differ from the defaults: a dataset only takes the keys it uses."""
    return {"name": cfg.name, **_changes(cfg, DataConfig(name=cfg.name))}


def compact_dict(spec: RunSpec) -> dict[str, Any]:
    """The spec with only what differs from the defaults in its dataset, recipe and method.

    The plan hands this form to each job: Snakemake reruns a job when it changes, so a new option
    with a default that keeps the old behaviour retrains nothing.
    """
    d = spec.to_dict()
    d["recipe"] = _plain(_changes(spec.recipe, Recipe()))
    default = Method.from_config(spec.method.name).params()
    d["method"] = {k: v for k, v in d["method"].items() if k == "name" or _plain(default.get(k)) != v}
    return d


def _plain(x: Any) -> Any:
    """Tuples to lists, recursively, so a spec dumps to YAML/JSON and reloads equal."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
