"""Images per second of atlib's training step against a plain PyTorch loop, same process, interleaved.

    python benchmarks/train_step.py [--steps 5] [--rounds 3] [--batch 128] [--threads N]
        [--student wrn-16-1] [--teacher wrn-16-2] [--methods baseline at ...] [--precision fp32|bf16]
        [--compile] [--run-steps 96 78000] [--input 3 32 32] [--views 4000] [--json FILE]

The reference is what one would write by hand: student forward, loss, backward, SGD step, the
teacher forward under no_grad, the AT and KD terms inline as in the authors' utils.py. Rounds
alternate atlib and reference so that clock drift and other load hit both alike; the medians are
compared. Inputs are CIFAR-sized (3x32x32), already on the device, so only the step is measured;
on CUDA models and inputs are channels_last, as in atlib.engine.train, and ``--precision`` is a recipe's:
``bf16`` runs both under bf16 autocast, ``fp32`` in IEEE single precision (TF32 off).

Each method that reads a teacher is also timed with its teacher targets looked up, as a run with finite inputs
trains (atlib.teacher_cache: recipe ``teacher_cache``, augment flip or none): a cache of ``--views`` inputs
(default 4,000, 200 images per class of 10 classes, flipped) whose rows a step gathers by a random set of
indices; "cached/plain" is its images/s over atlib's plain student step (baseline) of the same round.

``--compile`` adds atlib's step with the objective compiled as the recipe option ``compile: true`` does
(torch.compile, in place): its compile seconds (the first steps' time beyond the steady step time, the
recompile that a changing ``progress`` triggers included) apart from its steady-state images/s, the
ratio to eager, the steps after which compiling has paid for itself, and the speed-up over a whole run of
each ``--run-steps`` length (default: 96, a config/quick.yaml student; 78000, a 200-epoch CIFAR run).
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import PRECISIONS, at_objective, autocast, device_name, device_of, on_device, parser, sgd, teacher_model

from atlib.compiled import compile_in_place
from atlib.engine import train_step
from atlib.models import build_model
from atlib.teacher_cache import TeacherCache

METHODS = ("baseline", "at", "factt", "kd", "at+kd")
WARMUP = 3  # compiled steps timed one by one: the first compiles, the second recompiles for a changed progress


def reference_step(method: str, student, teacher, adapters, optimizer, x, y) -> None:
    logits, gs = student(x)
    if method in ("kd", "at+kd"):
        with torch.no_grad():
            yt, gt = teacher(x)
        p = F.log_softmax(logits / 4, 1)
        q = F.softmax(yt / 4, 1)
        loss = F.kl_div(p, q, reduction="batchmean") * 16 * 0.9 + F.cross_entropy(logits, y) * 0.1
    else:
        loss = F.cross_entropy(logits, y)
        if method != "baseline":
            with torch.no_grad():
                yt, gt = teacher(x)
    if method in ("at", "at+kd"):
        def at(a):
            return F.normalize(a.float().pow(2).mean(1).view(a.size(0), -1))
        loss = loss + 1e3 * sum((at(s) - at(t)).pow(2).mean() for s, t in zip(gs, gt, strict=True))
    if method == "factt":
        loss = loss + 1e3 * sum((F.normalize(a(s).flatten(1)) - F.normalize(t.flatten(1))).pow(2).mean()
                                for a, s, t in zip(adapters, gs, gt, strict=True))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps, after one warm-up step."""
    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def first_steps(step: Callable[[], None], device: torch.device) -> list[float]:
    """Seconds of each of the first WARMUP steps: where a compiled step pays its compilation."""
    out = []
    for _ in range(WARMUP):
        t0 = time.perf_counter()
        step()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def measure(device: torch.device, student: str = "wrn-16-1", teacher: str = "wrn-16-2",
            methods: tuple[str, ...] = METHODS, batch: int = 128, steps: int = 5, rounds: int = 3,
            precision: str = "fp32", compile: bool = False, run_steps: tuple[int, ...] = (96, 78000),
            shape: tuple[int, int, int] = (3, 32, 32), views: int = 4000) -> dict[str, Any]:
    """Median images/s of atlib's step and the reference (and atlib compiled, and atlib with the teacher's targets
    looked up) for each method."""
    torch.manual_seed(0)
    x = torch.randn(batch, *shape, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    t_model = teacher_model(device, teacher, shape[0])
    amp = autocast(device, precision)
    counter = itertools.count()

    def progress() -> float:  # as in training: a new value every step
        return next(counter) % 1000 / 1000

    setups: dict[str, dict[str, Callable[[], None]]] = {}
    warm: dict[str, list[float]] = {}
    for m in methods:
        objective, opt = at_objective(device, m, t_model, student, shape)
        ref_student = on_device(build_model(student, shape[0], 10), device)
        with torch.no_grad():
            widths = [g.shape[1] for g in ref_student(x[:2])[1]], [g.shape[1] for g in t_model(x[:2])[1]]
        adapters = torch.nn.ModuleList(torch.nn.Conv2d(cs, ct, 1, bias=False) for cs, ct in zip(*widths, strict=True))
        adapters = on_device(adapters, device)
        ref_opt = sgd(list(ref_student.parameters()) + (list(adapters.parameters()) if m == "factt" else []))

        def ref(m=m, s=ref_student, a=adapters, p=ref_opt) -> None:
            with amp():
                reference_step(m, s, t_model, a, p, x, y)

        setups[m] = {"atlib": lambda o=objective, p=opt: train_step(o, p, x, y, progress(), amp), "reference": ref}
        if objective.method.needs_teacher:
            cache = pooled_cache(objective, x, y, views, amp)
            c_objective, c_opt = at_objective(device, m, t_model, student, shape)

            def cached(o=c_objective, p=c_opt, c=cache) -> None:
                pick = torch.randint(0, views, (batch,), device=device)  # as a shuffled epoch's lookups
                train_step(o, p, x, y, progress(), amp, taught=c.rows(pick))
            setups[m]["cached"] = cached
        if compile:
            c_objective, c_opt = at_objective(device, m, t_model, student, shape)
            compile_in_place(c_objective)  # as a run compiles: its artifacts in the project's cache
            setups[m]["compiled"] = lambda o=c_objective, p=c_opt: train_step(o, p, x, y, progress(), amp)
            warm[m] = first_steps(setups[m]["compiled"], device)

    times: dict[str, dict[str, list[float]]] = {m: {k: [] for k in setups[m]} for m in methods}
    for i in range(rounds):
        for m in methods:
            names = list(setups[m])
            # rotate which goes first, so none always pays for switching to another model
            for name in names[i % len(names):] + names[:i % len(names)]:
                times[m][name].append(timed(setups[m][name], steps, device))

    out: dict[str, Any] = {"device": str(device), "device_name": device_name(device),
                           "threads": torch.get_num_threads(), "student": student, "teacher": teacher,
                           "precision": precision, "batch": batch, "input": list(shape),
                           "steps": steps, "rounds": rounds,
                           "torch": torch.__version__, "methods": {}}
    for m in methods:
        t = {k: statistics.median(v) for k, v in times[m].items()}
        row = {"atlib": batch / t["atlib"], "reference": batch / t["reference"], "atlib_over_reference":
               t["reference"] / t["atlib"]}
        if compile:
            compile_s = max(0.0, sum(warm[m]) - WARMUP * t["compiled"])
            saved = t["atlib"] - t["compiled"]
            row |= {"compiled": batch / t["compiled"], "compiled_over_eager": t["atlib"] / t["compiled"],
                    "compile_seconds": compile_s,
                    "break_even_steps": compile_s / saved if saved > 0 else None,  # None: never
                    "whole_run_speedup": {str(n): n * t["atlib"] / (compile_s + n * t["compiled"]) for n in run_steps}}
        if "cached" in t:
            row |= {"cached": batch / t["cached"]}
        out["methods"][m] = row
    plain = out["methods"].get("baseline", {}).get("atlib")
    for row in out["methods"].values():
        if "cached" in row and plain:
            row["cached_over_plain"] = row["cached"] / plain
    return out


def pooled_cache(objective: Any, x: torch.Tensor, y: torch.Tensor, views: int, amp: Any) -> TeacherCache:
    """A cache of ``views`` rows of the method's teacher targets (the batch's rows repeated: what is timed is the
    gather, not the values)."""
    with torch.no_grad(), amp():
        targets = objective.method.teacher_targets(objective, x, y)
    reps = -(-views // len(x))
    return TeacherCache({k: v.repeat(reps, *([1] * (v.dim() - 1)))[:views].contiguous() for k, v in targets.items()})


def report(r: dict[str, Any]) -> list[str]:
    compiled = any("compiled" in row for row in r["methods"].values())
    cached = any("cached" in row for row in r["methods"].values())
    lines = [f"device {r['device']} {r['device_name']} ({r['threads']} threads), {r['student']} from {r['teacher']}, "
             f"inputs {'x'.join(map(str, r['input']))}, {r['precision']}, batch {r['batch']}, "
             f"{r['rounds']} rounds x {r['steps']} steps, median images/s",
             f"{'method':10s} {'atlib':>10s} {'reference':>10s} {'atlib/ref':>10s}"
             + (f" {'cached':>10s} {'cached/plain':>12s}" if cached else "")
             + (f" {'compiled':>10s} {'comp/eager':>10s} {'compile s':>10s} {'break-even':>10s}  whole run"
                if compiled else "")]
    for m, row in r["methods"].items():
        line = f"{m:10s} {row['atlib']:10.1f} {row['reference']:10.1f} {row['atlib_over_reference']:10.3f}"
        if cached:
            line += (f" {row['cached']:10.1f} {row.get('cached_over_plain', float('nan')):12.3f}" if "cached" in row
                     else f" {'':10s} {'':12s}")
        if compiled:
            runs = ", ".join(f"{n} steps {s:.3f}x" for n, s in row["whole_run_speedup"].items())
            even = "never" if row["break_even_steps"] is None else f"{row['break_even_steps']:.0f}"
            line += (f" {row['compiled']:10.1f} {row['compiled_over_eager']:10.3f} {row['compile_seconds']:10.1f} "
                     f"{even:>10s}  {runs}")
        lines.append(line)
    if "at" in r["methods"] and "kd" in r["methods"]:
        lines.append(f"AT step time / KD step time: {r['methods']['kd']['atlib'] / r['methods']['at']['atlib']:.3f}")
    return lines


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--student", default="wrn-16-1")
    ap.add_argument("--teacher", default="wrn-16-2")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ap.add_argument("--compile", action="store_true", help="also time atlib's step compiled (recipe compile: true)")
    ap.add_argument("--run-steps", type=int, nargs="+", default=[96, 78000],
                    help="run lengths (steps) for the whole-run speed-up of --compile")
    ap.add_argument("--input", type=int, nargs=3, default=[3, 32, 32], metavar=("C", "H", "W"),
                    help="input shape (Fashion-MNIST: 1 28 28)")
    ap.add_argument("--views", type=int, default=4000, help="rows of the teacher cache the cached steps look up")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    r = measure(device_of(args), args.student, args.teacher, tuple(args.methods), args.batch, args.steps,
                args.rounds, args.precision, args.compile, tuple(args.run_steps), tuple(args.input), args.views)
    print("\n".join(report(r)))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
