"""The GPU check and what it relies on, shown without a GPU: the check's smoke run, jobs spreading over
(fake) cards, and the compiled training step on the CPU."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from atlib.engine import train
from atlib.errors import ConfigError
from atlib.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]

# A job on a machine with two fake cards: only the card-counting and free-memory functions are stubbed (card 1
# has more free memory). It waits for the go file, so that all jobs choose at the same moment, prints the card
# resolve_device gives it, and keeps it until its stdin closes.
JOB = """
import sys, time
from pathlib import Path
import torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 2
torch.cuda.mem_get_info = lambda i=None: ((8 if i == 1 else 4) << 30, 16 << 30)
from atlib.engine import resolve_device
print("ready", flush=True)
while not Path(sys.argv[1]).exists():
    time.sleep(0.001)
print(resolve_device("auto").index, flush=True)
sys.stdin.read()
"""


def cards_of_jobs_started_together(n: int, tmp_path: Path) -> list[int]:
    go = tmp_path / "go"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the card locks live in this test's folder
    jobs = [subprocess.Popen([sys.executable, "-c", JOB, str(go)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env) for _ in range(n)]
    try:
        for job in jobs:
            line = job.stdout.readline().strip()
            assert line == "ready", line
        go.touch()
        return [int(job.stdout.readline()) for job in jobs]
    finally:
        for job in jobs:
            if not go.exists():
                job.kill()  # never released: do not wait for it, let the assertion above speak
            job.communicate(timeout=120)


@pytest.mark.slow
def test_jobs_started_together_take_different_cards(tmp_path):
    # both see card 1 with the most free memory; picking by free memory alone put both there
    assert sorted(cards_of_jobs_started_together(2, tmp_path)) == [0, 1]


@pytest.mark.slow
def test_a_job_beyond_the_cards_shares_the_one_with_most_free_memory(tmp_path):
    assert sorted(cards_of_jobs_started_together(3, tmp_path)) == [0, 1, 1]


DATA = {"name": "synthetic", "synthetic_train": 64, "synthetic_test": 32, "size": 8}


def spec(**over) -> RunSpec:
    base = {"run_id": "c", "dataset": DATA, "model": "wrn-10-1", "seed": 5, "threads": 1, "device": "cpu",
            "recipe": {"epochs": 2, "batch_size": 32}, "tracking": {"enabled": False}}
    return RunSpec.from_dict({**base, **over})


def quiet(_: str) -> None:
    pass


@pytest.mark.slow  # compiling takes about a minute on a busy 2-core machine
def test_compiled_training_gives_the_eager_losses(tmp_path):
    teacher = tmp_path / "teacher"
    train(spec(model="wrn-10-2", recipe={"epochs": 0}), teacher, quiet)
    student = {"method": "at", "teacher": {"run_dir": str(teacher), "model": "wrn-10-2"}}
    eager = train(spec(**student), tmp_path / "eager", quiet)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = train(spec(**student, recipe={"epochs": 2, "batch_size": 32, "compile": True}), tmp_path / "c", quiet)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # it did compile
    for a, b in zip(compiled["history"], eager["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["loss/at/g2"] == pytest.approx(b["loss/at/g2"], rel=1e-3)
    assert compiled["final_test_error"] == pytest.approx(eager["final_test_error"], abs=100 / 32)  # an image


def test_compile_takes_true_false_or_auto_only():
    assert spec(recipe={"compile": True}).recipe.compile and not spec().recipe.compile
    assert spec(recipe={"compile": "auto"}).recipe.compile == "auto"
    with pytest.raises(ConfigError, match="recipe.compile"):
        spec(recipe={"compile": "yes"})


@pytest.mark.slow
def test_smoke_run_writes_both_summaries(tmp_path):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--threads", "1", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    md = (tmp_path / "gpu_check.md").read_text()
    assert r["smoke"] and r["device_name"] and set(r["parts"]) == {"jobs", "train_step", "projection", "precision",
                                                                      "tests"}
    assert all("error" not in part for part in r["parts"].values())
    tests = r["parts"]["tests"]
    assert tests["returncode"] == 0 and tests["failed"] == tests["errors"] == 0
    if not torch.cuda.is_available():
        assert tests["skipped"] == len(tests["cases"]) >= 4
    steps = r["parts"]["train_step"]["runs"]
    assert {(s["student"], m) for s in steps for m in s["methods"]} >= {
        (s, m) for s in ("wrn-16-1", "wrn-16-2") for m in ("baseline", "at", "kd", "at+kd")}
    for row in (row for step in steps for row in step["methods"].values()):  # the ratio is of the two speeds
        assert row["atlib_over_reference"] == pytest.approx(row["atlib"] / row["reference"], rel=1e-9)
    jobs = r["parts"]["jobs"]["levels"]
    assert [lv["jobs"] for lv in jobs] == [1, 2] and all(len(lv["cards"]) == lv["jobs"] for lv in jobs)
    for level in jobs:  # the aggregate sums the jobs' speeds, and the speed-up is over the lone job's
        assert level["aggregate_images_per_second"] == pytest.approx(sum(level["per_job_images_per_second"]))
        assert level["speedup_over_one_job"] == pytest.approx(level["aggregate_images_per_second"]
                                                              / jobs[0]["aggregate_images_per_second"])
        assert level["different_cards"] == (len(set(level["cards"])) == level["jobs"])
    assert jobs[0]["speedup_over_one_job"] == 1
    projection = r["parts"]["projection"]
    # Table 1: 6 models' baselines (students and teachers) and 4 rows x 4 transfer methods, 5 seeds each
    assert projection["runs"] == (6 + 4 * 4) * 5 and projection["nin_runs"] + projection["wrn_runs"] == 110
    assert projection["train_images"] == 110 * 200 * 50_000
    for row in projection["rows"]:  # 200 epochs, each tested; the hours those images take at the measured speeds
        assert row["epochs"] == row["evaluations"] == 200 * row["runs"]
        hours = (row["epochs"] * 50_000 / row["step_images_per_second"]
                 + row["evaluations"] * 10_000 / row["eval_images_per_second"]) / 3600
        assert row["single_stream_hours"] == pytest.approx(hours)
    assert projection["single_stream_hours"] == pytest.approx(sum(r["single_stream_hours"] for r in projection["rows"]))
    factor = projection.get("concurrency_factor", 1.0)  # the jobs' loop efficiency times their best speed-up
    if "concurrency_factor" in projection:
        assert factor == pytest.approx(projection["loop_efficiency"] * projection["concurrency_speedup"])
    assert projection["projected_hours"] == pytest.approx(projection["single_stream_hours"] / factor)
    assert projection["meets_goal"] == (projection["projected_hours"] <= projection["goal_hours"])
    precision = r["parts"]["precision"]
    assert set(precision["runs"]) == {"bf16", "fp32", "bf16_seed1"} and "bf16_minus_fp32" in precision
    gradient = precision["gradient"]
    assert gradient["method"] == "symmetry" and set(gradient["runs"]) == {"bf16", "fp32"}
    if not torch.cuda.is_available():  # a CPU computes in fp32 whatever the recipe says: each pair is equal
        for runs, diff in ((precision["runs"], precision["bf16_minus_fp32"]),
                           (gradient["runs"], gradient["bf16_minus_fp32"])):
            assert runs["bf16"] == runs["fp32"] and diff == 0
            assert runs["bf16"]["precision"] == "fp32"
    for heading in ("## jobs", "## train_step", "## projection", "## precision", "## tests"):
        assert heading in md
    print(f"smoke run: {time.perf_counter() - t0:.0f} s")


def test_without_cuda_and_without_smoke_it_refuses_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "--smoke" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_compile_auto_follows_the_break_even_on_planned_specs():
    """config/fewshot2.yaml's runs under compile: auto, their planned steps by hand (batch 128, a last partial batch
    trained): 10 per class, 100 images, 200 epochs of 1 step = 200; 30 per class, 300 images, 100 x 3 = 300; 100 per
    class, 50 x 8 = 400; the teacher, 58,000 images, 12 x 454 = 5,448."""
    from atlib.plan import load_plan
    from atlib.spec import COMPILE_BREAK_EVEN, Recipe

    plan = load_plan(str(Path(__file__).resolve().parents[1] / "config" / "fewshot2.yaml"))
    steps = {"fewshot2-10pc": 200, "fewshot2-30pc": 300, "fewshot2-100pc": 400, "teacher-12epochs": 5448}
    cold, warm = COMPILE_BREAK_EVEN["cold"], COMPILE_BREAK_EVEN["warm"]
    assert warm < cold
    for run_id, spec in plan.runs.items():
        name = run_id.split("/")[1].removesuffix("-x2")
        n = steps[name] * (2 if run_id.split("/")[1].endswith("-x2") else 1)
        recipe = Recipe.from_config({**spec["recipe"], "compile": "auto"})
        assert recipe.compiles(n, warm=False) == (n >= cold) and recipe.compiles(n, warm=True) == (n >= warm)
    auto = Recipe.from_config({"compile": "auto"})
    assert not auto.compiles(cold - 1, warm=False) and auto.compiles(cold, warm=False)
    assert Recipe.from_config({"compile": True}).compiles(1, warm=False)
    assert not Recipe.from_config({}).compiles(10**6, warm=True)
