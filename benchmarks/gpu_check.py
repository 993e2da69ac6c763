"""Everything a lent GPU should tell about atlib, in one invocation of at most 8 minutes on one H100.

    python benchmarks/gpu_check.py --out DIR [--minutes 8]   # on a CUDA machine
    python benchmarks/gpu_check.py --smoke --out DIR         # anywhere: tiny sizes, shows the check itself works

Where atlib is not installed, run it from the repository's root with PYTHONPATH=. (it needs torch and PyYAML,
not MLflow or Snakemake).

Only what the repository carries is used (synthetic CIFAR-shaped data, config/paper.yaml). Parts, in the
order they run (jobs first: nothing in this process may hold a card while the jobs choose theirs):

  jobs        aggregate images/s of 1, 2 and 4 concurrent WRN-16-1 AT jobs (separate `atlib train` processes,
              as the profiles/gpu Snakemake profile runs them) and which card each took
  train_step  benchmarks/train_step.py: atlib against the plain loop, images/s of baseline, AT, KD and AT+KD for
              WRN-16-1 and WRN-16-2 students in bf16 and fp32; WRN-16-1 AT compiled (compile seconds, steady
              images/s, whole-run speed-up: whether the recipe's `compile` should be on for CUDA)
  projection  wall time of config/paper.yaml's Table 1 (every run of atlib.plan.build_plan, teachers included)
              at the measured images/s, against the goal of 6 hours on one H100
  precision   the same short run with the recipe's precision fp32 and bf16 (and bf16 with another seed, for the
              seed noise), and a pair of Table 3's double backpropagation (symmetry norm, BN-free NIN-thin) in
              both: test errors. config/paper.yaml trains in fp32 until this shows bf16 leaves them in the noise
  tests       pytest tests/test_cuda.py (bf16 vs fp32 maps and losses, channels_last, a resumed CUDA run,
              the compiled step on CUDA)

DIR/gpu_check.json and DIR/gpu_check.md are rewritten after every part, so a part that fails (its error is
recorded) or a run stopped at its time limit leaves the finished parts' results; DIR also gets the tests'
cuda-tests.xml, and nothing else (the runs train in a temporary folder). Without CUDA and without --smoke the
script refuses in one line.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import train_step as bench
import yaml
from common import autocast, device_name, on_device, parser

from atlib.engine import NonFiniteLoss, train
from atlib.models import build_model
from atlib.plan import build_plan
from atlib.spec import Recipe, RunSpec

ROOT = Path(__file__).resolve().parents[1]
GOAL_HOURS = 6.0  # Table 1 on one H100: about 50k images/s aggregate of WRN-16-1 AT steps
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
METHODS = ("baseline", "at", "kd", "at+kd")
STUDENTS = (("wrn-16-1", "wrn-16-2"), ("wrn-16-2", "wrn-40-2"))  # (student, teacher) as in Table 1


@dataclass(frozen=True)
class Sizes:
    batch: int  # train_step and projection steps
    steps: int
    rounds: int
    eval_batch: int
    image: int  # synthetic CIFAR-shaped data of the jobs and precision runs: 3 x image x image
    job_images: int
    job_epochs: int
    job_threads: int  # as config/paper.yaml's threads
    concurrency: tuple[int, ...]
    run_images: int  # precision runs
    run_classes: int
    run_epochs: int
    student: str  # jobs and precision runs
    teacher: str
    compile: bool
    tests_timeout: int


FULL = Sizes(batch=128, steps=20, rounds=3, eval_batch=512, image=32, job_images=20_000, job_epochs=4,
             job_threads=4, concurrency=(1, 2, 4), run_images=5000, run_classes=100, run_epochs=3,
             student="wrn-16-1", teacher="wrn-16-2", compile=True, tests_timeout=300)
# compile is off in the smoke run: compiling on a CPU takes minutes
SMOKE = Sizes(batch=2, steps=1, rounds=1, eval_batch=4, image=8, job_images=64, job_epochs=2, job_threads=1,
              concurrency=(1, 2), run_images=64, run_classes=10, run_epochs=1, student="wrn-10-1",
              teacher="wrn-10-2", compile=False, tests_timeout=120)


def synthetic(s: Sizes, train_images: int, test_images: int, classes: int = 10) -> dict[str, Any]:
    return {"name": "synthetic", "channels": 3, "size": s.image, "num_classes": classes,
            "synthetic_train": train_images, "synthetic_test": test_images}


def quiet(_: str) -> None:
    pass


# --- jobs -------------------------------------------------------------------------------------

# `atlib train` as the profile runs it, after printing the card that resolve_device gives this process:
# resolve_device keeps a process's card, so the run trains on that card.
JOB = ("import sys; from atlib.engine import resolve_device; print('card', resolve_device('auto'), flush=True); "
       "from atlib.cli import main; sys.exit(main(sys.argv[1:]))")


def jobs(s: Sizes, out: Path) -> dict[str, Any]:
    teacher_dir = out / "runs/teacher"
    data = synthetic(s, s.job_images, 256)
    # a given (0-epoch) teacher on the CPU: only its forward cost matters here, and the CPU holds no card
    train(RunSpec.from_dict({"run_id": "teacher", "dataset": data, "model": s.teacher, "device": "cpu",
                             "recipe": {"epochs": 0}, "tracking": {"enabled": False}}), teacher_dir, quiet)
    levels = []
    for k in s.concurrency:
        procs = []
        for i in range(k):
            run = out / f"runs/jobs{k}-{i}"
            spec = {"run_id": f"jobs{k}-{i}", "dataset": data, "model": s.student, "method": "at", "seed": i,
                    "teacher": {"run_dir": str(teacher_dir), "model": s.teacher}, "threads": s.job_threads,
                    "recipe": {"epochs": s.job_epochs, "eval_every": s.job_epochs}, "tracking": {"enabled": False}}
            run.mkdir(parents=True, exist_ok=True)
            (run / "spec.json").write_text(json.dumps(spec))
            cmd = [sys.executable, "-c", JOB, "train", str(run / "spec.json"), "--out", str(run)]
            procs.append((run, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                text=True)))
        t0 = time.perf_counter()
        outputs = [p.communicate(timeout=300)[0] for _, p in procs]
        wall = time.perf_counter() - t0
        for (run, p), text in zip(procs, outputs, strict=True):
            if p.returncode != 0:
                raise RuntimeError(f"job {run.name} failed ({p.returncode}): {text[-2000:]}")
        cards = [next(line.split()[1] for line in text.splitlines() if line.startswith("card ")) for text in outputs]
        per_job = []
        for run, _ in procs:
            history = json.loads((run / "metrics.json").read_text())["history"]
            steady = history[1:] or history  # the first epoch pays the warm-up (kernels loaded, memory pooled)
            per_job.append(statistics.median(h["images_per_second"] for h in steady))
        levels.append({"jobs": k, "aggregate_images_per_second": sum(per_job), "per_job_images_per_second": per_job,
                       "wall_images_per_second": k * s.job_images * s.job_epochs / wall, "wall_seconds": wall,
                       "cards": cards, "different_cards": len(set(cards)) == k})
    base = levels[0]["aggregate_images_per_second"]
    for level in levels:
        level["speedup_over_one_job"] = level["aggregate_images_per_second"] / base
    return {"student": s.student, "teacher": s.teacher, "method": "at", "batch": Recipe().batch_size,
            "image": s.image, "threads_per_job": s.job_threads,
            "visible_cards": torch.cuda.device_count(), "levels": levels,
            "best": max(levels, key=lambda lv: lv["aggregate_images_per_second"])}


# --- train_step -------------------------------------------------------------------------------

def train_steps(s: Sizes, device: torch.device) -> dict[str, Any]:
    precisions = ("bf16", "fp32") if device.type == "cuda" else ("fp32",)  # the CPU engine trains in fp32
    runs = [bench.measure(device, student, teacher, METHODS, s.batch, s.steps, s.rounds, precision)
            for student, teacher in STUDENTS for precision in precisions]
    result: dict[str, Any] = {"runs": runs}
    if s.compile:
        result["compiled"] = bench.measure(device, "wrn-16-1", "wrn-16-2", ("at",), s.batch, s.steps, s.rounds,
                                           precisions[0], compile=True)
    else:
        result["compiled"] = {"skipped": "smoke run: compiling on a CPU takes minutes"}
    return result


# --- projection -------------------------------------------------------------------------------

def eval_images_per_second(model_name: str, s: Sizes, device: torch.device, precision: str) -> float:
    """Forward-only images/s at the eval batch size, as atlib.engine.evaluate runs the test set."""
    model = on_device(build_model(model_name, 3, 10), device).eval()
    x = torch.randn(s.eval_batch, 3, 32, 32, device=device)
    amp = autocast(device, precision)

    def step() -> None:
        with torch.inference_mode(), amp():
            model(x)

    return s.eval_batch / bench.timed(step, max(2, s.steps), device)


def projection(s: Sizes, device: torch.device, jobs_result: dict[str, Any] | None) -> dict[str, Any]:
    plan = build_plan(yaml.safe_load((ROOT / "config/paper.yaml").read_text()))
    ids = {r for cell in plan.cells if cell.table == "table1" for r in cell.runs}
    ids |= {plan.teacher_of[r] for r in ids if r in plan.teacher_of}
    groups: dict[tuple[str, str, str | None], dict[str, int]] = {}
    precisions = set()
    for rid in ids:
        spec = RunSpec.from_dict(plan.runs[rid])
        key = (spec.model.name, spec.method.name, spec.teacher.model.name if spec.teacher else None)
        g = groups.setdefault(key, {"runs": 0, "epochs": 0, "evaluations": 0})
        g["runs"] += 1
        g["epochs"] += spec.recipe.epochs
        g["evaluations"] += sum(spec.recipe.evaluates(e) for e in range(spec.recipe.epochs))
        precisions.add(spec.recipe.precision)
    (planned,) = precisions  # one precision for the whole table
    precision = planned if device.type == "cuda" else "fp32"  # what the engine computes in on this device
    eval_ips = {m: eval_images_per_second(m, s, device, precision) for m in {k[0] for k in groups}}
    rows = []
    for (student, method, teacher), g in sorted(groups.items(), key=str):
        measured = bench.measure(device, student, teacher or student, (method,), s.batch, s.steps, s.rounds,
                                 precision)
        ips = measured["methods"][method]["atlib"]
        seconds = g["epochs"] * CIFAR_TRAIN / ips + g["evaluations"] * CIFAR_TEST / eval_ips[student]
        rows.append({"student": student, "method": method, "teacher": teacher, **g,
                     "train_images": g["epochs"] * CIFAR_TRAIN, "step_images_per_second": ips,
                     "eval_images_per_second": eval_ips[student], "single_stream_hours": seconds / 3600})
    one_stream = sum(r["single_stream_hours"] for r in rows)
    result: dict[str, Any] = {
        "precision": precision, "runs": sum(r["runs"] for r in rows),
        "train_images": sum(r["train_images"] for r in rows),
        "nin_runs": sum(r["runs"] for r in rows if r["student"].startswith("nin")),
        "wrn_runs": sum(r["runs"] for r in rows if r["student"].startswith("wrn")),
        "rows": rows, "single_stream_hours": one_stream, "goal_hours": GOAL_HOURS}
    # The steps above are timed alone, inputs ready on the card. The jobs measured WRN-16-1 AT from WRN-16-2
    # in the real loop (augmentation, bookkeeping), alone and with k sharing the card: their best aggregate
    # over the lone step's images/s (loop efficiency x concurrency speed-up) scales every run alike.
    reference = next(r for r in rows if (r["student"], r["method"], r["teacher"]) == ("wrn-16-1", "at", "wrn-16-2"))
    if jobs_result and "best" in jobs_result and (jobs_result["student"], jobs_result["image"]) == ("wrn-16-1", 32):
        one, best = jobs_result["levels"][0], jobs_result["best"]
        result["loop_efficiency"] = one["aggregate_images_per_second"] / reference["step_images_per_second"]
        result["concurrency_speedup"] = best["speedup_over_one_job"]
        result["jobs_at_best"] = best["jobs"]
        result["concurrency_factor"] = result["loop_efficiency"] * result["concurrency_speedup"]
        result["projected_hours"] = one_stream / result["concurrency_factor"]
    else:
        result["projected_hours"] = one_stream
        result["note"] = "no jobs measurement of WRN-16-1 AT on 32x32 images: one stream of lone steps assumed"
    result["meets_goal"] = result["projected_hours"] <= GOAL_HOURS
    return result


# --- precision --------------------------------------------------------------------------------

# Table 3's student and recipe: double backpropagation through a network without batch norm
GRADIENT_MODEL = {"name": "nin-thin", "options": {"batchnorm": False, "relu_before_pool": False}}
GRADIENT_RECIPE = {"weight_decay": 0.0, "augment": "flip", "init": "authors"}


def precision_run(s: Sizes, out: Path, name: str, model: Any, method: str, seed: int, recipe: dict[str, Any]
                  ) -> dict[str, Any]:
    """One short run; a divergence is a result too (bf16 may diverge where fp32 does not)."""
    spec = RunSpec.from_dict({"run_id": name, "dataset": synthetic(s, s.run_images, 2000, s.run_classes),
                              "model": model, "method": method, "seed": seed, "device": "auto",
                              "recipe": {"epochs": s.run_epochs, **recipe}, "tracking": {"enabled": False}})
    try:
        m = train(spec, out / "runs/precision" / name, quiet)
    except NonFiniteLoss as e:
        return {"test_error": None, "train_loss": [], "diverged": str(e)}
    return {"test_error": m["final_test_error"], "train_loss": [h["train_loss"] for h in m["history"]],
            "precision": m["environment"]["precision"]}


def difference(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    return None if a["test_error"] is None or b["test_error"] is None else a["test_error"] - b["test_error"]


def precision_runs(s: Sizes, out: Path) -> dict[str, Any]:
    """The recipe's ``precision`` on the same run: bf16 autocast against IEEE fp32 (TF32 off), everything else equal.
    On a CPU every run is fp32 (the smoke run: plumbing only, and the pairs must be equal)."""
    runs = {name: precision_run(s, out, name, s.student, "baseline", seed, {"precision": precision})
            for name, seed, precision in (("bf16", 0, "bf16"), ("fp32", 0, "fp32"), ("bf16_seed1", 1, "bf16"))}
    gradient = {precision: precision_run(s, out, f"symmetry-{precision}", GRADIENT_MODEL, "symmetry", 0,
                                         {**GRADIENT_RECIPE, "precision": precision}) for precision in ("bf16", "fp32")}
    return {"student": s.student, "epochs": s.run_epochs, "train_images": s.run_images, "classes": s.run_classes,
            "bf16_effective": torch.cuda.is_available(), "runs": runs,
            "bf16_minus_fp32": difference(runs["bf16"], runs["fp32"]),
            "seed_noise": difference(runs["bf16_seed1"], runs["bf16"]),
            "gradient": {"model": GRADIENT_MODEL, "method": "symmetry", "runs": gradient,
                         "bf16_minus_fp32": difference(gradient["bf16"], gradient["fp32"])}}


# --- tests ------------------------------------------------------------------------------------

def tests(s: Sizes, out: Path, seconds: float) -> dict[str, Any]:
    xml = out / "cuda-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests/test_cuda.py", f"--junitxml={xml}"]
    timeout = min(s.tests_timeout, seconds)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # the tests that finished, one line each (-v)
        done = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        raise RuntimeError(f"stopped after {timeout:.0f} s; finished: {done.strip()[-3000:]}") from None
    suite = ET.parse(xml).getroot().find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        cases.append({"name": case.get("name"), "seconds": float(case.get("time", 0)),
                      "outcome": "passed" if outcome is None else {"failure": "failed"}.get(outcome.tag, outcome.tag),
                      "message": "" if outcome is None else (outcome.get("message") or "")[:500]})
    counts = {f"{k}{'s' if k == 'error' else ''}": sum(c["outcome"] == k for c in cases)
              for k in ("passed", "failed", "error", "skipped")}
    return {"returncode": proc.returncode, **counts, "cases": cases, "summary": proc.stdout.strip().splitlines()[-1:]}


# --- summaries --------------------------------------------------------------------------------

def markdown(r: dict[str, Any]) -> str:
    lines = [f"# GPU check: {r['device_name']}", "",
             f"{'smoke run (tiny sizes, not a measurement)' if r['smoke'] else 'full run'}, torch {r['torch']}, "
             f"device {r['device']}, {r['seconds']:.0f} s", ""]
    for name, part in r["parts"].items():
        lines += [f"## {name} ({part.get('seconds', 0):.0f} s)", ""]
        if "error" in part:
            lines += [f"FAILED: {part['error']}", ""]
        elif name == "tests":
            lines += [f"{part['passed']} passed, {part['failed']} failed, {part['errors']} errors, "
                      f"{part['skipped']} skipped", ""]
            lines += [f"- {c['outcome']}: {c['name']} ({c['seconds']:.1f} s) {c['message']}" for c in part["cases"]]
            lines.append("")
        elif name == "train_step":
            for run in part["runs"]:
                lines += bench.report(run) + [""]
            if "methods" in part["compiled"]:
                lines += ["compiled (recipe compile: true):"] + bench.report(part["compiled"]) + [""]
            else:
                lines += [f"compiled: {part['compiled']['skipped']}", ""]
        elif name == "jobs":
            lines += ["| jobs | aggregate img/s | per job | vs 1 job | wall img/s | cards | different cards |",
                      "|---:|---:|---|---:|---:|---|---|"]
            lines += [f"| {lv['jobs']} | {lv['aggregate_images_per_second']:.0f} | "
                      f"{', '.join(f'{v:.0f}' for v in lv['per_job_images_per_second'])} | "
                      f"{lv['speedup_over_one_job']:.2f} | {lv['wall_images_per_second']:.0f} | "
                      f"{' '.join(lv['cards'])} | {lv['different_cards']} |" for lv in part["levels"]]
            lines += ["", f"{part['visible_cards']} visible card(s); {part['student']} AT from {part['teacher']}, "
                      f"{part['threads_per_job']} threads per job", ""]
        elif name == "projection":
            lines += ["| student | method | teacher | runs | epochs | step img/s | eval img/s | hours, one stream |",
                      "|---|---|---|---:|---:|---:|---:|---:|"]
            lines += [f"| {p['student']} | {p['method']} | {p['teacher'] or ''} | {p['runs']} | {p['epochs']} | "
                      f"{p['step_images_per_second']:.0f} | {p['eval_images_per_second']:.0f} | "
                      f"{p['single_stream_hours']:.2f} |" for p in part["rows"]]
            lines += ["", f"{part['runs']} runs ({part['wrn_runs']} WRN, {part['nin_runs']} NIN), "
                      f"{part['train_images']:.3g} training images; one stream {part['single_stream_hours']:.2f} h; "
                      f"projected {part['projected_hours']:.2f} h "
                      + (f"(x{part['loop_efficiency']:.2f} for the real loop, x{part['concurrency_speedup']:.2f} "
                         f"for {part['jobs_at_best']} concurrent jobs) "
                         if "concurrency_factor" in part else f"({part['note']}) ")
                      + f"against the goal of {part['goal_hours']:.0f} h: "
                      + ("met" if part["meets_goal"] else "NOT met"), ""]
        elif name == "precision":
            gradient = part["gradient"]
            runs = [*part["runs"].items(), *((f"symmetry {k}", v) for k, v in gradient["runs"].items())]
            lines += [f"- {k}: diverged ({v['diverged']})" if "diverged" in v else
                      f"- {k}: test error {v['test_error']:.2f}%, train loss "
                      f"{' '.join(f'{x:.4f}' for x in v['train_loss'])}" for k, v in runs]
            lines += ["", f"bf16 - fp32: {points(part['bf16_minus_fp32'])}; seed 1 - seed 0 (bf16): "
                      f"{points(part['seed_noise'])} ({part['student']}, {part['epochs']} epochs, "
                      f"{part['train_images']} images, {part['classes']} classes; bf16 in effect: "
                      f"{part['bf16_effective']}); symmetry norm on a BN-free NIN-thin, bf16 - fp32: "
                      f"{points(gradient['bf16_minus_fp32'])}", ""]
    return "\n".join(lines)


def points(value: float | None) -> str:
    return "n/a (a run diverged)" if value is None else f"{value:+.2f} points"


def write(r: dict[str, Any], out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(r, indent=1))
    (out / "gpu_check.md").write_text(markdown(r))


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device: the check itself works")
    ap.add_argument("--minutes", type=float, default=8, help="the time the whole check has (default 8)")
    args = ap.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; on a CPU only --smoke runs (it checks the script, not a GPU)")
    if args.threads:
        torch.set_num_threads(args.threads)
    s = SMOKE if args.smoke else FULL
    # the current card, without resolve_device's lock: the jobs must choose their cards as if alone
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    deadline = t0 + 60 * args.minutes - 20  # the tests, last, stop in time to write their part
    r: dict[str, Any] = {"device": str(device), "device_name": device_name(device), "smoke": args.smoke,
                         "torch": torch.__version__, "sizes": asdict(s), "parts": {}}
    work = Path(tempfile.mkdtemp(prefix="atlib-gpu-check-"))  # the runs: DIR keeps only the summaries
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("jobs", lambda: jobs(s, work)),
        ("train_step", lambda: train_steps(s, device)),
        ("projection", lambda: projection(s, device, r["parts"].get("jobs"))),
        ("precision", lambda: precision_runs(s, work)),
        ("tests", lambda: tests(s, args.out, deadline - time.perf_counter())),
    ]
    try:
        for name, part in parts:
            start = time.perf_counter()
            print(f"gpu_check: {name} ...", flush=True)
            try:
                result = part()
            except Exception as e:  # recorded: the other parts still run and report
                result = {"error": f"{type(e).__name__}: {e}"}
            result["seconds"] = time.perf_counter() - start
            r["parts"][name] = result
            r["seconds"] = time.perf_counter() - t0
            write(r, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(r))
    failed = [n for n, p in r["parts"].items() if "error" in p or p.get("returncode")]
    sys.exit(f"gpu_check: failed parts: {', '.join(failed)}" if failed else 0)


if __name__ == "__main__":
    main()
