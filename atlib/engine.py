"""One training loop for teachers and students.

A run is built (:func:`build_run`: data, networks, the method's objective, the optimizer; every check
before any file is written), then trained epoch by epoch into its run directory (``atlib.rundir``),
resuming from its checkpoint when one is there, with the same MLflow run.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import STARTED, __version__, compiled, rundir, teacher_cache
from .data import Source, load, set_augmentation
from .errors import ConfigError
from .losses import Objective, Step
from .models import build_model, num_parameters, without_weight_files
from .spec import RunSpec, compact_dict, data_dict
from .tracking import Lineage, NullTracker, Tracker, run_name, standard_tags, tracking_uri

Log = Callable[[str], None]


class TeacherError(ConfigError):
    """A teacher checkpoint that does not match the student's config."""


class NonFiniteLoss(RuntimeError):
    pass


class Terminated(BaseException):
    """SIGTERM (e.g. SLURM's time limit): stop at once, keep the last epoch's checkpoint for a resume."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while training, so the run is marked KILLED, not left RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def spec_sha256(spec: RunSpec) -> str:
    """What a checkpoint was trained under: the resolved spec, except where its run is logged. Its compact form
    (what differs from the defaults), so a new option whose default keeps the old behaviour stales nothing."""
    settings = {k: v for k, v in compact_dict(spec).items() if k != "tracking"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


# --- environment ------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested, but no CUDA device is available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    return torch.device("cuda", claim_gpu(count, tempfile.gettempdir()) if count > 1 else 0)


@functools.cache  # a process that trains several runs keeps the card it holds
def claim_gpu(count: int, lock_dir: str) -> int:
    """The visible card this process trains on, held for the process's life by an exclusive flock on
    ``lock_dir/atlib-gpu-<index>.lock``. Several jobs per machine (profiles/gpu) started at the same moment
    all see the same free memory, so picking by free memory put them all on one card; a lock has one
    holder, so they take different cards. The first card nobody holds is taken; when every card is held,
    the one with the most free memory is shared. The kernel drops a lock when its holder dies, even by
    SIGKILL. A lock names a visible index: jobs under different CUDA_VISIBLE_DEVICES lists should not share a
    lock folder, or they avoid cards that are in fact free."""
    for index in range(count):
        try:
            # read-only: a lock file another user created (mode 0644) can still be locked
            fd = os.open(Path(lock_dir) / f"atlib-gpu-{index}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError:
            continue  # a lock this user cannot open: leave that card to the fallback below
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return index  # fd stays open, unreferenced, until the process exits: so does the lock
    free = [torch.cuda.mem_get_info(i)[0] for i in range(count)]
    return max(range(count), key=free.__getitem__)


@functools.cache  # asked by the run's tags and its environment record: one subprocess per process
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "atlib": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "host": platform.node(), "git_commit": git_commit(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# --- teacher ----------------------------------------------------------------------------------

def check_teacher(spec: RunSpec, source: Source) -> dict[str, Any]:
    """Refuse a teacher that is not the one the config names, before any model is built."""
    ref = spec.teacher
    assert ref is not None
    folder = Path(ref.run_dir)
    model, metrics = rundir.model_file(folder), rundir.metrics_file(folder)
    for path in (model, metrics):
        if not path.is_file():
            raise TeacherError(f"teacher.run_dir: {path} does not exist; train the teacher first")
    try:
        recorded = rundir.read_metrics(folder)
    except ValueError as e:
        raise TeacherError(f"teacher.run_dir: {metrics} is not valid JSON ({e})") from None
    expected = {"model": ref.model.name, "model_options": _what_it_is(ref.model.options),
                "dataset": spec.dataset.name, "num_classes": source.num_classes,
                "input_shape": list(source.input_shape)}
    if isinstance(recorded.get("model_options"), dict):
        recorded = {**recorded, "model_options": _what_it_is(recorded["model_options"])}
    for key, want in expected.items():
        if recorded.get(key) != want:
            raise TeacherError(f"teacher: {metrics} records {key} = {recorded.get(key)!r}, "
                               f"the config expects {want!r}")
    digest = rundir.sha256(model)
    if digest != recorded.get("checkpoint_sha256"):
        raise TeacherError(f"teacher: {model} has SHA-256 {digest[:12]}..., its run recorded "
                           f"{str(recorded.get('checkpoint_sha256'))[:12]}...: the file changed after training")
    err = recorded.get("final_test_error")
    if ref.max_error is not None and (err is None or err > ref.max_error):
        raise TeacherError(f"teacher.max_error: teacher {folder} has test error {err}%, above the gate "
                           f"of {ref.max_error}%")
    return {"sha256": digest, "run_id": recorded.get("mlflow_run_id"), "test_error": err}


def _what_it_is(options: dict[str, Any]) -> dict[str, Any]:
    """A model's options but its groups: they say where a student reads the network, not what it is, so a teacher
    trained under other groups (or its defaults) teaches under the ones the student's config names."""
    return {k: v for k, v in options.items() if k != "groups"}


def load_teacher(spec: RunSpec, source: Source, device: torch.device) -> nn.Module:
    assert spec.teacher is not None
    # its weights are its run's model.pt: a weight file it started from need not be on this machine
    teacher = build_model(spec.teacher.model.name, source.input_shape[0], source.num_classes,
                          image_size=source.input_shape[1:], **without_weight_files(spec.teacher.model.options))
    teacher.load_state_dict(rundir.load_state(spec.teacher.run_dir, device))
    return teacher.to(device).eval().requires_grad_(False)


# --- loop -------------------------------------------------------------------------------------

def evaluate(model: nn.Module, source: Source, batch_size: int, amp: Any,
             batches: Iterator[tuple[Tensor, Tensor]] | None = None) -> tuple[float, float]:
    """(top-1 error %, top-5 error %) on the test set, or on ``batches``."""
    model.eval()
    wrong1 = wrong5 = n = 0
    with torch.inference_mode(), amp():
        for x, y in batches if batches is not None else source.test_batches(batch_size):
            logits, _ = model(x)
            top = logits.topk(min(5, logits.shape[1]), 1).indices
            wrong1 += (top[:, 0] != y).sum()
            wrong5 += (~(top == y[:, None]).any(1)).sum()
            n += len(y)
    model.train()
    return 100.0 * float(wrong1) / n, 100.0 * float(wrong5) / n


def _progress(total: int, desc: str) -> Any:
    if sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, leave=False, unit="batch")
    return None


@dataclass
class Run:
    """Everything a run needs before its first epoch, built and checked by :func:`build_run`."""

    spec: RunSpec
    device: torch.device
    source: Source
    student: nn.Module
    teacher: nn.Module | None
    teacher_info: dict[str, Any] | None  # SHA-256, MLflow run and test error of the teacher
    objective: Objective
    optimizer: torch.optim.Optimizer
    cache: teacher_cache.TeacherCache | None = None  # the teacher's outputs per input, computed once
    teacher_outputs: dict[str, Any] | None = None  # which path the teacher's outputs take: cached, live, none
    compile_info: dict[str, Any] | None = None  # whether the step is compiled, over how many steps, from a warm cache

    @property
    def precision(self) -> str:
        """The arithmetic the run trains in: the recipe's on CUDA, fp32 on the CPU."""
        return self.spec.recipe.precision if self.device.type == "cuda" else "fp32"

    def amp(self) -> Any:
        # bf16 autocast on CUDA: tensor-core precision for convolutions; plain float32 otherwise
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext()


def set_fp32_math(device: torch.device, precision: str) -> None:
    """fp32 is IEEE single precision, as on the authors' GPUs: cuDNN computes fp32 convolutions in TF32 by
    default on Ampere and newer cards, so the recipe's fp32 turns it off; bf16 keeps PyTorch's default (set
    either way, so that runs in one process do not inherit each other's setting)."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = precision != "fp32"


def build_run(spec: RunSpec) -> Run:
    """Data, networks, objective and optimizer of a run; every check of its config happens here."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = resolve_device(spec.device)
    source = load(spec.dataset)  # a missing dataset fails here, before any model exists
    set_augmentation(source, spec.recipe.augment)
    teacher_info = check_teacher(spec, source) if spec.teacher else None
    source = source.to(device)

    seed_everything(spec.seed)  # the student's initial weights, then any adapter's, come from the seed
    student = build_model(spec.model.name, source.input_shape[0], source.num_classes, init=spec.recipe.init,
                          image_size=source.input_shape[1:], **spec.model.options)
    student = freeze(student, spec.recipe).to(device)
    teacher = load_teacher(spec, source, device) if spec.teacher else None
    set_fp32_math(device, spec.recipe.precision)
    if device.type == "cuda":
        # channels_last: the tensor-core friendly layout for convolutions under bf16
        student = student.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher = teacher.to(memory_format=torch.channels_last)
    objective = Objective(spec.method, student, teacher, source.input_shape, device)
    key = compiled.architecture(spec, source.input_shape, device)
    warm = compiled.is_warm(key)
    steps = source.train_steps(spec.recipe.batch_size) * spec.recipe.epochs
    compiles = spec.recipe.compiles(steps, warm)
    if compiles:
        compiled.compile_in_place(objective)  # its cost and effect: atlib.spec.Recipe.compile
    optimizer = make_optimizer([p for p in objective.parameters() if p.requires_grad], spec.recipe)
    run = Run(spec, device, source, student, teacher, teacher_info, objective, optimizer)
    run.compile_info = {"compiled": compiles, "planned_steps": steps, "cache_warm": warm, "architecture": key}
    run.cache, run.teacher_outputs = teacher_cache.prepare(objective, source, spec.recipe, run.amp)
    return run


def make_optimizer(params: list[nn.Parameter], recipe: Any) -> torch.optim.SGD:
    """The recipe's SGD: torch's update is Torch's optim.sgd with dampening 0 (the weight decay added to the
    gradient, the buffer b = momentum * b + g, and with Nesterov the step g + momentum * b), as fb.resnet.torch
    runs it (nesterov true) and the authors' cifar.py and imagenet.py (nesterov false)."""
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                           nesterov=recipe.nesterov)


def run_tags(spec: RunSpec, teacher_info: dict[str, Any] | None) -> dict[str, str]:
    """The MLflow tags of a run: what it is, where its teacher is, and where it ran; MLflow's own tags too
    (git commit, user, a description), which its UI shows in its fields."""
    commit = git_commit()
    tags = {"role": "student" if spec.teacher else "teacher-or-baseline", "dataset": spec.dataset.name,
            "model": spec.model.slug, "method": spec.method.name, "seed": str(spec.seed),
            "run": spec.run_id, "git_commit": str(commit)}
    tags |= standard_tags(spec.to_dict(), teacher_info and teacher_info["run_id"], commit)
    if teacher_info and spec.teacher:
        tags |= {"teacher_run": str(teacher_info["run_id"]), "teacher_sha256": teacher_info["sha256"],
                 "teacher_dir": spec.teacher.run_dir}
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return tags | {k: str(v) for k, v in spec.tracking.get("tags", {}).items()}


def lineage(run: Run) -> Lineage:
    """What the run learns from, for MLflow: the digest of exactly the images of each split, and the teacher."""
    spec, info = run.spec, run.teacher_info or {}
    data = {split: (run.source.digest(split), n) for split, n in (("train", run.source.train_size),
                                                                  ("test", run.source.test_size))}
    return Lineage(data_dict(spec.dataset), data, info.get("run_id"), info.get("sha256"),
                   spec.teacher.model.slug if spec.teacher else None)


def train(spec: RunSpec, out_dir: Path, log: Log = print) -> dict[str, Any]:
    """Train (or resume) one run into ``out_dir`` and return its metrics."""
    run = build_run(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: every config check has passed
    with rundir.run_lock(out_dir), sigterm_raises():
        rundir.remove_stale_temporaries(out_dir)
        return train_epochs(run, out_dir, log)


def train_epochs(run: Run, out_dir: Path, log: Log = print) -> dict[str, Any]:
    """The epochs of a built run, from its checkpoint if it has one, then model.pt and metrics.json."""
    spec, r, student, source = run.spec, run.spec.recipe, run.student, run.source
    identity = {"spec_sha256": spec_sha256(spec), "teacher_sha256": run.teacher_info and run.teacher_info["sha256"]}
    start, history, best, mlflow_id = 0, [], float("inf"), None
    state = load_checkpoint(out_dir, run.objective, run.optimizer, run.device, log, identity)
    if state is not None:
        start, history, best = state["epoch"], state["history"], state["best"]
        log(f"[{spec.run_id}] resuming after epoch {start}/{r.epochs} from {rundir.checkpoint_file(out_dir)}")

    tags = run_tags(spec, run.teacher_info)  # also in metrics.json: atlib mlflow-sync tags a run it creates alike
    if run.teacher_outputs and run.teacher_outputs["path"] != "none":
        tags["teacher_outputs"] = run.teacher_outputs["path"]
        detail = ", ".join(f"{k} {v}" for k, v in run.teacher_outputs.items() if k != "path")
        log(f"[{spec.run_id}] teacher outputs: {run.teacher_outputs['path']} ({detail})")
    tracker: Tracker | NullTracker = NullTracker()
    if spec.tracking.get("enabled", True):
        tracker = Tracker(tracking_uri(spec.tracking.get("store")), spec.tracking.get("experiment", "atlib"),
                          run_name(spec.to_dict()), tags, spec.to_dict(),
                          resume=state is not None, system_metrics=True, lineage=lineage(run))
        mlflow_id = tracker.run_id
    # A fixed test batch whose attention maps (student beside teacher) go to MLflow a few times per
    # run, as image 'attention' at step = epoch, so the UI's slider shows the maps converging; off with
    # tracking.attention_every: 0.
    every = spec.tracking.get("attention_every", max(1, r.epochs // 5))
    probe = next(source.test_batches(8)) if every and spec.tracking.get("enabled", True) else None
    startup = time.perf_counter() - STARTED  # imports, data load, model build, MLflow: all but the epochs
    try:
        for epoch in range(start, r.epochs):
            row = _train_epoch(run.objective, run.optimizer, source, spec, epoch, run.amp, log, run.cache)
            info = run.compile_info or {}
            if info.get("compiled") and not info["cache_warm"] and epoch == start:
                compiled.mark_warm(info["architecture"], row["epoch_seconds"])  # later processes: a warm cache
            if r.evaluates(epoch):
                row["test_error"], row["test_error_top5"] = evaluate(student, source, r.eval_batch_size, run.amp)
                best = min(best, row["test_error"])
                if (held := source.validation_batches(r.eval_batch_size)) is not None:
                    row["validation_error"] = evaluate(student, source, r.eval_batch_size, run.amp, held)[0]
            history.append(row)
            tracker.log_metrics(epoch + 1, row)
            if probe is not None and ((epoch + 1) % every == 0 or epoch + 1 == r.epochs):
                from .maps import attention_snapshot

                maps = attention_snapshot(student, run.teacher, probe[0], y=probe[1])
                tracker.log_image(maps, "attention", epoch + 1)
            rundir.save_checkpoint(out_dir, {"objective": trained_state(run.objective),
                                             "optimizer": run.optimizer.state_dict(), "epoch": epoch + 1,
                                             "history": history, "best": best, **identity})
            eta = (r.epochs - epoch - 1) * row["epoch_seconds"]
            test = f" test err {row['test_error']:.2f}%" if "test_error" in row else ""
            test += f" val err {row['validation_error']:.2f}%" if "validation_error" in row else ""
            log(f"[{spec.run_id}] epoch {epoch + 1}/{r.epochs} loss {row['train_loss']:.4f} "
                f"train err {row['train_error']:.2f}%{test} "
                f"{row['images_per_second']:.0f} img/s ETA {eta:.0f}s")
    except BaseException as e:
        tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt | Terminated) else "FAILED")
        raise

    meta = {"model": spec.model.name, "model_options": spec.model.options, "dataset": spec.dataset.name,
            "num_classes": source.num_classes, "input_shape": list(source.input_shape)}
    model_path = rundir.save_model(out_dir, meta, student.state_dict())
    last = history[-1] if history else {}
    if r.epochs == 0:  # a given model (e.g. a pretrained teacher): evaluated, not trained
        last = dict(zip(("test_error", "test_error_top5"), evaluate(student, source, r.eval_batch_size, run.amp),
                        strict=True))
        best = last["test_error"]
    # the epoch fb.resnet.torch reports: the first with the lowest top-1 error, and its top-5 error
    tested = [h for h in history if h.get("test_error") is not None]
    best_row = min(tested, key=lambda h: h["test_error"]) if tested else last
    metrics = {
        **meta, "run_id": spec.run_id, "seed": spec.seed, "method": spec.method.name,
        "final_test_error": last.get("test_error"), "final_test_error_top5": last.get("test_error_top5"),
        **({"final_validation_error": last["validation_error"]} if "validation_error" in last else {}),
        "best_test_error": best if last else None, "best_test_error_top5": best_row.get("test_error_top5"),
        "best_epoch": best_row.get("epoch"), "epochs": len(history), "history": history,
        "num_parameters": num_parameters(student), "checkpoint_sha256": rundir.sha256(model_path),
        "checkpoint_bytes": model_path.stat().st_size,
        "train_seconds": sum(h["epoch_seconds"] for h in history), "startup_seconds": startup,
        "teacher": run.teacher_info, "teacher_outputs": run.teacher_outputs, "compile": run.compile_info,
        "mlflow_run_id": mlflow_id,
        "config": spec.to_dict(),
        "environment": {**environment(run.device), "precision": run.precision}, "tags": tags,
    }
    tracker.log_artifact(rundir.write_metrics(out_dir, metrics))
    if spec.teacher is None:  # a teacher or a baseline (tag role=teacher-or-baseline): its weights may teach
        tracker.log_artifact(model_path)
    tracker.finish()
    rundir.remove_checkpoint(out_dir)
    return metrics


def frozen_modules(model: nn.Module, recipe: Any) -> list[nn.Module]:
    """The modules a recipe freezes: the groups named by ``freeze_groups``, the first convolution with
    ``freeze_stem``, and every BN layer with ``freeze_bn``."""
    groups = getattr(model, "groups", None)
    if recipe.freeze_groups and (groups is None or max(recipe.freeze_groups) >= len(groups)):
        raise ConfigError(f"recipe.freeze_groups: {list(recipe.freeze_groups)} does not name groups of this model "
                          f"({len(groups) if groups is not None else 'none'} freezable groups)")
    out = [groups[g] for g in recipe.freeze_groups] if recipe.freeze_groups else []
    if getattr(recipe, "freeze_stem", False):
        stem = getattr(model, "stem", None)
        if stem is None:
            raise ConfigError("recipe.freeze_stem: this model has no stem (a first convolution before its groups)")
        out.append(stem)
    if recipe.freeze_bn:
        out += [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return out


def freeze(model: nn.Module, recipe: Any) -> nn.Module:
    for module in frozen_modules(model, recipe):
        module.requires_grad_(False)
    return model


def trained_state(objective: nn.Module) -> dict[str, Tensor]:
    """The objective's state without the frozen teacher: the teacher lives in its own run's model.pt."""
    return {k: v for k, v in objective.state_dict().items() if not k.startswith("teacher.")}


def load_checkpoint(folder: Path, objective: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                    log: Log, identity: dict[str, Any]) -> dict[str, Any] | None:
    """Restore a run's last epoch. A truncated or corrupt checkpoint, or one trained under another spec or
    teacher than ``identity`` names, is set aside and the run starts over."""
    path = rundir.checkpoint_file(folder)
    try:
        state = rundir.load_checkpoint_file(folder, device)
    except Exception as e:  # any unreadable checkpoint: recompute rather than crash the DAG
        rundir.set_aside_checkpoint(folder, "corrupt")
        log(f"warning: checkpoint {path} is unreadable ({type(e).__name__}: {e}); training from scratch")
        return None
    if state is None:
        return None
    changed = [k for k, v in identity.items() if state.get(k) != v]
    if changed:
        rundir.set_aside_checkpoint(folder, "stale")
        log(f"warning: checkpoint {path} was trained under another {' and '.join(k.split('_')[0] for k in changed)} "
            "than this run's; set aside as checkpoint.stale, training from scratch")
        return None
    try:
        missing, unexpected = objective.load_state_dict(state["objective"], strict=False)
        if unexpected or any(not k.startswith("teacher.") for k in missing):
            raise KeyError(f"missing {missing}, unexpected {unexpected}")
        optimizer.load_state_dict(state["optimizer"])
    except Exception as e:
        rundir.set_aside_checkpoint(folder, "corrupt")
        log(f"warning: checkpoint {path} does not fit this run ({type(e).__name__}: {e}); training from scratch")
        return None
    return state


def train_step(objective: Objective, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, progress: float,
               amp: Any = nullcontext, transfer: bool = True, taught: dict[str, Tensor] | None = None) -> Step:
    """One optimisation step of any method (the unit that benchmarks/train_step.py times); ``taught``: the batch's
    teacher targets looked up in the run's cache, or None to run the teacher."""
    with amp():
        out = objective(x, y, progress=progress, transfer=transfer, taught=taught)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out


def progress(epoch: int, step: int, steps: int, epochs: int) -> float:
    """How far training is at (0-based) ``step`` of ``epoch``, each epoch ``steps`` batches long: 0 on the first
    batch, 1 on the last, evenly in between (a linear beta decays from beta to 0 over the batches trained)."""
    done, total = epoch * steps + step, epochs * steps
    return done / (total - 1) if total > 1 else 0.0


def start_epoch(optimizer: torch.optim.Optimizer, recipe: Any, epoch: int) -> float:
    """Set the learning rate of (0-based) ``epoch``; at a drop, forget SGD's momentum as the authors'
    code does by building a new optimizer. Returns the learning rate."""
    lr = recipe.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    if recipe.resets_momentum(epoch):
        for state in optimizer.state.values():
            state.pop("momentum_buffer", None)  # SGD starts a missing buffer from the next gradient
    return lr


def _train_epoch(objective: Objective, optimizer: torch.optim.Optimizer, source: Source, spec: RunSpec,
                 epoch: int, amp: Any, log: Log, cache: teacher_cache.TeacherCache | None = None
                 ) -> dict[str, float]:
    r = spec.recipe
    lr = start_epoch(optimizer, r, epoch)
    transfer = spec.method.transfers(epoch)
    objective.train()
    if objective.teacher is not None:
        objective.teacher.eval()
    for module in frozen_modules(objective.student, r):
        module.eval()  # frozen parts keep their running statistics too
    steps = source.train_steps(r.batch_size)
    bar = _progress(steps, f"epoch {epoch + 1}/{r.epochs}")
    # Sums stay on the device: one host sync per epoch instead of one per step (a GPU trick, not measured yet:
    # no GPU so far; on the CPU there is nothing to wait for).
    device = next(objective.student.parameters()).device
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    term_sums: dict[str, Tensor] = {}
    seen = 0
    t0 = time.perf_counter()
    for step, (x, y, views) in enumerate(source.viewed_batches(epoch, spec.seed, r.batch_size)):
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        taught = cache.rows(views) if cache is not None and transfer and views is not None else None
        out = train_step(objective, optimizer, x, y, progress(epoch, step, steps, r.epochs), amp, transfer, taught)
        n = len(y)
        loss = out.loss.detach()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        loss_sum += loss * n
        wrong += (out.logits.detach().argmax(1) != y).sum()
        for k, v in out.terms.items():
            term_sums[k] = term_sums.get(k, 0) + v * n
        seen += n
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if int(first_bad) >= 0:
        raise NonFiniteLoss(f"[{spec.run_id}] non-finite loss at epoch {epoch + 1}, step {int(first_bad) + 1}; "
                            f"lower the learning rate or beta")
    row = {"epoch": epoch + 1, "lr": lr, "train_loss": float(loss_sum) / seen,
           "train_error": 100.0 * float(wrong) / seen, "epoch_seconds": seconds,
           "images_per_second": seen / seconds}
    row |= {f"loss/{k}": float(v) / seen for k, v in term_sums.items()}
    beta = spec.method.logged_beta(progress(epoch, 0, steps, r.epochs))  # None: a constant weight, or none
    if beta is not None:
        row["beta"] = beta if transfer else 0.0
    return row
