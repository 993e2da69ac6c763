"""Checks of a plan made before any job starts: from the config and the data files' headers, never by training.

Each problem is one line that names the config key and what is expected. The DAG asks twice (workflow/Snakefile):

- when it is built (:func:`before_dag`, also ``atlib plan``): the config alone (``epochs: 0`` on a model with no
  given weights, a transfer that never starts; a torchvision or user network's name, weights entry, group paths
  and group count, atlib.models.check), and the sizes the config asks of each dataset against what its files
  hold, read from their headers (Fashion-MNIST's IDX headers and labels, CIFAR-10's batch files, an image folder's
  class folders, synthetic data's settings), where the files are there: a dry run may use placeholder roots;
- before the first job (:func:`before_jobs`): the same with every data and weight file required, and, when the jobs
  run on this machine, a CUDA device for ``device: cuda``. On a cluster the device is the job's to find: its
  one-line reason then reaches Snakemake's failure report through :func:`failure_reasons`.

This module imports no torch unless a config asks for CUDA or pretrained weights, or names a torchvision or
user network (``tv:NAME``, ``package.module:factory``).
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .datafiles import FMNIST_FILES, fmnist_files
from .errors import ConfigError
from .rundir import atomic_write_bytes, atomic_write_json, finished, metrics_file, model_file, run_dir, sha256
from .runkey import RunKey
from .spec import DataConfig, DataError, ModelSpec, Recipe

CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_BATCH = 10_000  # images in each of CIFAR-10's python batch files (torchvision checks their MD5 sums)
# torchvision's ImageFolder extensions (torchvision.datasets.folder.IMG_EXTENSIONS)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IDX_SIZES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}  # IDX type code -> bytes per value


@dataclass(frozen=True)
class Holdings:
    """What a dataset's files hold, as far as a plan needs it: image counts, each training class's count,
    the number of classes and one image's shape (C, H, W)."""

    train: int
    test: int
    train_per_class: tuple[int, ...]
    num_classes: int
    input_shape: tuple[int, int, int]


class Missing(Exception):
    """A file the dataset needs is not there (a placeholder root, data to be downloaded by the job)."""


# --- the data files' headers ------------------------------------------------------------------------------------

def idx_header(path: Path) -> tuple[int, ...]:
    """The dimensions an IDX file's header declares (LeCun's MNIST format, optionally gzipped): 16 bytes read."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_SIZES or magic[3] == 0:
                raise DataError(f"{path}: not an IDX file (magic number {magic.hex()})")
            raw = f.read(4 * magic[3])
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable ({e}); reinstall or re-download the dataset") from e
    if len(raw) < 4 * magic[3]:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{magic[3]}I", raw)
    if path.suffix != ".gz" and path.stat().st_size != 4 + len(raw) + IDX_SIZES[magic[2]] * _product(dims):
        raise DataError(f"{path}: its header declares {dims} but the file has {path.stat().st_size} bytes; it is "
                        "truncated or corrupt")
    return dims


def _product(dims: Iterable[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def idx_labels(path: Path) -> bytes:
    """An IDX label file's labels, one byte each (60 kB for Fashion-MNIST's training set)."""
    (n,) = idx_header(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            labels = f.read()[8:]
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable or truncated ({e}); reinstall or re-download the dataset") from e
    if len(labels) != n:
        raise DataError(f"{path}: its header declares {n} labels but it holds {len(labels)}; it is truncated")
    return labels


def _fashion_mnist(root: Path) -> Holdings:
    paths = fmnist_files(root)
    if missing := [FMNIST_FILES[k] for k, p in paths.items() if p is None]:
        raise Missing(f"{root} lacks {', '.join(missing)}")
    dims = {k: idx_header(p) for k, p in paths.items() if p is not None}
    for split in ("train", "test"):
        images, labels = dims[f"{split}_x"], dims[f"{split}_y"]
        if len(images) != 3 or len(labels) != 1 or images[0] != labels[0]:
            raise DataError(f"{root}: {split} images {images} and labels {labels} do not pair up")
    if dims["train_x"][1:] != dims["test_x"][1:]:
        raise DataError(f"{root}: train images are {dims['train_x'][1:]}, test images {dims['test_x'][1:]}")
    assert paths["train_y"] is not None
    counts = Counter(idx_labels(paths["train_y"]))
    if counts and max(counts) >= 10:
        raise DataError(f"{paths['train_y']}: labels must be class indices 0..9, found {max(counts)}")
    _, h, w = dims["train_x"]
    return Holdings(dims["train_x"][0], dims["test_x"][0], tuple(counts[c] for c in range(10)), 10, (1, h, w))


def _cifar10(root: Path) -> Holdings:
    folder = root / "cifar-10-batches-py"
    if missing := [n for n in (*CIFAR_TRAIN, "test_batch") if not (folder / n).is_file()]:
        raise Missing(f"{folder} lacks {', '.join(missing)}")
    # CIFAR-10's published batches: 5,000 training images of each class
    return Holdings(len(CIFAR_TRAIN) * CIFAR_BATCH, CIFAR_BATCH, (5_000,) * 10, 10, (3, 32, 32))


def _cifar100(root: Path) -> Holdings:
    folder = root / "cifar-100-python"
    if missing := [n for n in ("train", "test") if not (folder / n).is_file()]:
        raise Missing(f"{folder} lacks {', '.join(missing)}")
    # CIFAR-100's published files (torchvision checks their MD5 sums): 500 training images of each fine class
    return Holdings(50_000, 10_000, (500,) * 100, 100, (3, 32, 32))


def _images(folder: Path) -> int:
    return sum(1 for e in os.scandir(folder) if e.name.lower().endswith(IMAGE_EXTENSIONS))


def _imagefolder(root: Path, image_size: int, count: bool) -> Holdings:
    """Class folders of train/ and val/; their images are counted only when ``count`` (a size is asked for)."""
    classes = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise Missing(f"{root / split} does not exist")
        classes[split] = sorted(e.name for e in os.scandir(root / split) if e.is_dir())
    if classes["train"] != classes["val"]:
        raise DataError(f"{root}: train/ has {len(classes['train'])} class folders and val/ {len(classes['val'])}, "
                        "or they are named differently; they must match")
    train = tuple(_images(root / "train" / c) for c in classes["train"]) if count else ()
    test = sum(_images(root / "val" / c) for c in classes["val"]) if count else 0
    return Holdings(sum(train), test, train, len(classes["train"]), (3, image_size, image_size))


def _synthetic(cfg: DataConfig) -> Holdings:
    k, n = cfg.num_classes, cfg.synthetic_train
    # atlib.data labels image i with class (a permutation of 0..n-1)[i] % k: n // k of each, the first n % k one more
    per_class = tuple(n // k + (c < n % k) for c in range(k))
    return Holdings(n, cfg.synthetic_test, per_class, k, (cfg.channels, cfg.size, cfg.size))


def holdings(cfg: DataConfig, count: bool = True) -> Holdings:
    """What ``cfg``'s files hold, from their headers; Missing when a file is absent, DataError when one is bad."""
    if cfg.name == "synthetic":
        return _synthetic(cfg)
    root = cfg.path
    assert root is not None
    if not root.is_dir():
        raise Missing(f"{root} does not exist")
    if cfg.name == "fashion-mnist":
        return _fashion_mnist(root)
    if cfg.name == "cifar10":
        return _cifar10(root)
    if cfg.name == "cifar100":
        return _cifar100(root)
    return _imagefolder(root, cfg.image_size, count)


# --- the checks ---------------------------------------------------------------------------------------------------

def _keys(run_id: str) -> tuple[str, str]:
    """The config's dataset and recipe keys of a planned run."""
    key = RunKey.parse(run_id)
    return key.dataset, key.recipe


def _size_problems(key: str, cfg: DataConfig, held: Holdings) -> Iterator[str]:
    where = f"datasets.{key}"
    root = cfg.path or "synthetic data"
    for size, available, what in (("train_size", held.train, "training"), ("test_size", held.test, "test")):
        wanted = getattr(cfg, size)
        if wanted is not None and wanted > available:
            yield (f"{where}.{size}: {wanted} requested, but {root} holds {available} {what} images; expected at most "
                   f"{available}, or null for all of them")
    per_class = getattr(cfg, "per_class", None)
    if per_class is not None and held.train_per_class and per_class > min(held.train_per_class):
        fewest = min(held.train_per_class)
        yield (f"{where}.per_class: {per_class} requested, but {root} holds {fewest} training images of class "
               f"{held.train_per_class.index(fewest)}; expected at most {fewest}")


def _given_weights(model: Mapping[str, Any]) -> bool:
    options = model.get("options") or {}
    return bool(options.get("pretrained") or options.get("weights"))  # a file, or a torchvision weights entry


def config_problems(plan: Any) -> list[str]:
    """What the config alone says is wrong: a recipe of ``epochs: 0`` (evaluate a given model) on a model with no
    given weights, or on a student of a transfer method (nothing would be transferred); a method whose
    ``start_epoch`` lies beyond its recipe's epochs (the transfer would never start)."""
    problems: dict[tuple[str, ...], str] = {}
    unweighted: dict[str, list[str]] = {}  # recipe -> its models with nothing to evaluate
    for run_id, spec in plan.runs.items():
        _, recipe = _keys(run_id)
        epochs = Recipe.from_config(spec.get("recipe") or {}).epochs
        model = ModelSpec.from_config(spec["model"]).slug
        method = spec.get("method") or {}
        name = method.get("name", "baseline")
        if epochs == 0 and not _given_weights(spec["model"]):
            unweighted.setdefault(recipe, []).append(model)
        elif epochs == 0 and spec.get("teacher"):
            problems[("transfer", recipe, name)] = (
                f"recipes.{recipe}.epochs: 0 trains nothing, so method {name!r} (run {run_id}) would transfer "
                "nothing; expected epochs >= 1 for a student")
        start = method.get("start_epoch", 0)
        if epochs and start > epochs:
            problems[("start", recipe, name, str(start))] = (
                f"start_epoch: {start} (method {name!r}, run {run_id}), but recipe {recipe!r} trains {epochs} epochs, "
                f"so the transfer would never start; expected at most {epochs}")
    for recipe, models in unweighted.items():
        problems[("weights", recipe)] = (
            f"recipes.{recipe}.epochs: 0 evaluates a given model, but {', '.join(sorted(set(models)))} "
            "has no given weights; expected epochs >= 1, or models with weights to evaluate "
            "(options: {pretrained: FILE}, or {weights: ENTRY} for tv: models)")
    return list(problems.values())


def data_problems(plan: Any, require_files: bool) -> list[str]:
    """The sizes each dataset of the plan is asked for against what its files hold, and a teacher trained on other
    data against its students' classes and image shape. Without ``require_files``, a dataset or weight file that
    is not there is passed over (a dry run on placeholder roots); with it, each is one problem, except a missing
    dataset root, which :func:`atlib.plan.missing_data` reports."""
    problems: list[str] = []
    datasets: dict[str, DataConfig] = {}
    for run_id, spec in plan.runs.items():
        datasets.setdefault(_keys(run_id)[0], DataConfig.from_config(spec["dataset"]))
    held: dict[str, Holdings] = {}
    for key, cfg in datasets.items():
        count = cfg.train_size is not None or cfg.test_size is not None or getattr(cfg, "per_class", None) is not None
        try:
            held[key] = holdings(cfg, count)
        except Missing as e:
            if require_files and not getattr(cfg, "download", False) and cfg.path is not None and cfg.path.is_dir():
                problems.append(f"datasets.{key}.root: {e}; expected the {cfg.name} files there")
            continue
        except (DataError, ConfigError, OSError) as e:
            problems.append(f"datasets.{key}.root: {e}")
            continue
        problems += _size_problems(key, cfg, held[key])
    for student, teacher in plan.teacher_of.items():
        s_key, t_key = _keys(student)[0], _keys(teacher)[0]
        if s_key == t_key or s_key not in held or t_key not in held:
            continue
        s, t = held[s_key], held[t_key]
        for what, mine, theirs in (("classes", s.num_classes, t.num_classes),
                                   ("image shape", s.input_shape, t.input_shape)):
            if mine != theirs:
                problems.append(f"datasets.{t_key}: a teacher trained on it has {theirs} {what}, but it teaches "
                                f"students of {s_key}, which has {mine}; expected a teacher_dataset with the same "
                                f"{what}")
    if require_files:
        problems += weight_problems(plan)
    return list(dict.fromkeys(problems))


def weight_problems(plan: Any) -> list[str]:
    """A model's given weights (``options.pretrained``) that are not on this machine: atlib never downloads them."""
    given = {(spec["model"]["name"], spec["model"]["options"]["pretrained"])
             for spec in plan.runs.values() if (spec["model"].get("options") or {}).get("pretrained")}
    if not given:
        return []
    from .models.resnet import IMAGENET_FILES, pretrained_path  # torch: only for configs that name weights

    problems = []
    for name, pretrained in sorted(given):
        path = pretrained_path(name.replace("-", ""), str(pretrained))
        if path.is_file():
            continue
        expected = (f"torchvision's {IMAGENET_FILES[name.replace('-', '')]} there" if pretrained == "imagenet"
                    else "the weight file there")
        problems.append(f"options.pretrained: {pretrained!r} of {name} is not at {path}; expected {expected} "
                        "(atlib never downloads weights)")
    return problems


def cuda_problem(plan: Any) -> str | None:
    """``device: cuda`` on a machine without a CUDA device, for jobs that run on this machine."""
    if not any(spec.get("device") == "cuda" for spec in plan.runs.values()):
        return None
    import torch  # only here: most configs say auto or cpu

    if torch.cuda.is_available():
        return None
    return ("device: 'cuda' requested, but this machine has no CUDA device and the jobs run here; expected auto "
            "(CUDA where there is one) or cpu, or a cluster profile whose jobs run where the GPUs are")


def model_problems(plan: Any, require_files: bool) -> list[str]:
    """The torchvision and user networks of the plan (``tv:NAME``, ``package.module:factory``): names, weights
    entries (and, with ``require_files``, their files), group paths, and group lists a method compares
    (atlib.models.check). Torch is imported only for a plan that names such a network."""
    if not any(ModelSpec.from_config(spec["model"]).tapped for spec in plan.runs.values()):
        return []
    from .models.check import plan_problems

    return plan_problems(plan, require_files)


def before_dag(plan: Any) -> list[str]:
    """The checks made when the DAG is built and by ``atlib plan``: the config, its networks, and the data files
    that are there."""
    return config_problems(plan) + model_problems(plan, require_files=False) + data_problems(plan, require_files=False)


def before_jobs(plan: Any, local: bool) -> list[str]:
    """The checks made before the first job: every data and weight file, and CUDA when the jobs run here."""
    problems = data_problems(plan, require_files=True) + model_problems(plan, require_files=True)
    if local and (cuda := cuda_problem(plan)):
        problems.append(cuda)
    return problems


# --- a failed job's reason, from its log --------------------------------------------------------------------------

def reason(log: Path) -> str | None:
    """A failed job's one-line reason: the last ``atlib: error:`` line of its log, else its last line (a
    traceback's exception); None when the log is empty or missing."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line for line in lines if line.startswith("atlib: error:")]
    return (errors or lines or [None])[-1]


def failure_reasons(plan: Any, logs: Path | str, since: float) -> list[str]:
    """One line per run of the plan that failed since ``since`` (a time.time()): its log
    (``logs/<run id>.log``) changed since then and the run is not finished. For a job on a cluster, whose
    output Snakemake does not show, this is where its reason reaches the person who started the DAG."""
    lines = []
    for run_id in plan.runs:
        log = Path(logs) / f"{run_id}.log"
        try:
            changed = log.stat().st_mtime >= since
        except OSError:
            continue
        if changed and finished(run_dir(plan.results, run_id)) is None and (why := reason(log)):
            lines.append(f"atlib: run {run_id} failed: {why.removeprefix('atlib: error: ')} (log: {log})")
    return lines


def train_images(plan: Any) -> dict[str, int | None]:
    """Run id -> its training images per epoch, from the files' headers (None where they cannot be read): what the
    progress line prices each pending run's planned work by."""
    sizes: dict[str, int | None] = {}
    out = {}
    for run_id, spec in plan.runs.items():
        key = json.dumps(spec["dataset"], sort_keys=True)
        if key not in sizes:
            cfg = DataConfig.from_config(spec["dataset"])
            try:
                held = holdings(cfg, count=False)
            except (Missing, DataError, OSError):
                sizes[key] = None
            else:
                k = len(held.train_per_class) or held.num_classes
                pool = held.train - (cfg.validation_per_class or 0) * k
                sizes[key] = cfg.per_class * k if cfg.per_class else min(pool, cfg.train_size or pool)
        out[run_id] = sizes[key]
    return out


def install_shipped(plan: Any) -> list[str]:
    """Put each shipped run (``plan.shipped``) in its run folder before the DAG, so it is not trained: its model.pt
    checked against the config's SHA-256 and its metrics.json's, its metrics.json's run id and settings against the
    plan's. A run already finished is left alone. Returns one line per problem; nothing is copied for a bad one.
    The copy forgets the MLflow run of the store it was trained in (``atlib mlflow-sync`` gives it one here)."""
    from .spec import RunSpec, compact_dict

    problems = []
    for run_id, (source, sha) in plan.shipped.items():
        folder = run_dir(plan.results, run_id)
        if finished(folder) is not None:
            continue
        where = f"shipped.{run_id}"
        model, metrics = model_file(source), metrics_file(source)
        if not model.is_file() or not metrics.is_file():
            problems.append(f"{where}.from: {source} must hold {model.name} and {metrics.name}")
            continue
        digest = sha256(model)
        record = json.loads(metrics.read_text())
        if digest != sha or record.get("checkpoint_sha256") != sha:
            problems.append(f"{where}.sha256: {model} has SHA-256 {digest[:12]}..., the config expects {sha[:12]}... "
                            f"(its metrics.json records {str(record.get('checkpoint_sha256'))[:12]}...)")
            continue
        planned = {k: v for k, v in plan.runs[run_id].items() if k != "tracking"}
        trained = {k: v for k, v in compact_dict(RunSpec.from_dict(record["config"])).items() if k != "tracking"}
        if record.get("run_id") != run_id or trained != planned:
            problems.append(f"{where}: {metrics} was trained as {record.get('run_id')} with other settings than the "
                            "config plans for this run")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        data = model.read_bytes()
        atomic_write_bytes(model_file(folder), lambda f, data=data: f.write(data))
        atomic_write_json({**record, "mlflow_run_id": None}, metrics_file(folder))  # last: the run is finished
    return problems
