import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from atlib import engine
from atlib.engine import NonFiniteLoss, TeacherError, train
from atlib.errors import ConfigError
from atlib.spec import RunSpec

DATA = {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 128, "size": 16}


def spec(**over) -> RunSpec:
    base = {"run_id": "t", "dataset": DATA, "model": "wrn-10-1", "seed": 3, "threads": 1,
            "recipe": {"epochs": 2, "batch_size": 64, "lr": 0.05}, "tracking": {"enabled": False}}
    return RunSpec.from_dict({**base, **over})


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    train(spec(model="wrn-10-2", run_id="teacher"), out, quiet)
    return out


def strip_times(m: dict) -> dict:
    return [{k: v for k, v in h.items() if k not in ("epoch_seconds", "images_per_second")} for h in m["history"]]


def test_same_seed_gives_identical_metrics_bit_for_bit(tmp_path):
    a = train(spec(), tmp_path / "a", quiet)
    b = train(spec(), tmp_path / "b", quiet)
    assert strip_times(a) == strip_times(b)
    assert a["checkpoint_sha256"] == b["checkpoint_sha256"]
    c = train(spec(seed=4), tmp_path / "c", quiet)
    assert strip_times(c) != strip_times(a)


def test_metrics_json_contract(teacher_dir, tmp_path):
    m = train(spec(method={"name": "at+kd", "beta_schedule": "linear"},
                   teacher={"run_dir": str(teacher_dir), "model": "wrn-10-2"}), tmp_path, quiet)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["final_test_error"] == m["final_test_error"] == m["history"][-1]["test_error"]
    assert on_disk["best_test_error"] == min(h["test_error"] for h in m["history"])
    row = on_disk["history"][0]
    for key in ("train_loss", "train_error", "test_error", "lr", "epoch_seconds", "images_per_second",
                "loss/ce", "loss/kd", "loss/at/g0", "loss/at/g1", "loss/at/g2", "beta"):
        assert key in row, key
    # each epoch logs beta at its first batch: 256 images in batches of 64 are 4 batches an epoch, and
    # progress = batches done / (all batches - 1), so epoch 2 starts at 4/7 and beta = 1000 * (1 - 4/7)
    assert [h["beta"] for h in on_disk["history"]] == pytest.approx([1000.0, 1000.0 * 3 / 7])
    assert on_disk["config"]["method"]["name"] == "at+kd"
    assert on_disk["environment"]["torch"] == torch.__version__
    assert on_disk["teacher"]["sha256"] == json.loads((teacher_dir / "metrics.json").read_text())["checkpoint_sha256"]
    assert not (tmp_path / "checkpoint.pt").exists()


def test_teacher_is_frozen_and_unchanged(teacher_dir, tmp_path):
    before = torch.load(teacher_dir / "model.pt", weights_only=True)["state_dict"]
    train(spec(method="kd", teacher={"run_dir": str(teacher_dir), "model": "wrn-10-2"}), tmp_path, quiet)
    after = torch.load(teacher_dir / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("change, match", [
    ({"teacher_model": "wrn-16-2"}, "records model"),
    ({"dataset": {**DATA, "num_classes": 5}}, "records num_classes"),
    ({"max_error": 1.0}, "above the gate"),
])
def test_mismatched_teacher_is_refused_before_training(teacher_dir, tmp_path, change, match):
    teacher = {"run_dir": str(teacher_dir), "model": change.get("teacher_model", "wrn-10-2")}
    if "max_error" in change:
        teacher["max_error"] = change["max_error"]
    s = spec(method="at", teacher=teacher, **({"dataset": change["dataset"]} if "dataset" in change else {}))
    with pytest.raises(TeacherError, match=match):
        train(s, tmp_path / "student", quiet)
    assert not (tmp_path / "student").exists()


def test_modified_teacher_checkpoint_is_refused(teacher_dir, tmp_path):
    copy = tmp_path / "teacher"
    copy.mkdir()
    (copy / "metrics.json").write_bytes((teacher_dir / "metrics.json").read_bytes())
    (copy / "model.pt").write_bytes((teacher_dir / "model.pt").read_bytes() + b"\0")
    with pytest.raises(TeacherError, match="SHA-256"):
        train(spec(method="at", teacher={"run_dir": str(copy), "model": "wrn-10-2"}), tmp_path / "s", quiet)


def test_non_finite_loss_names_epoch_and_step(tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, step \d+"):
        train(spec(recipe={"epochs": 1, "batch_size": 64, "lr": 1e30}), tmp_path, quiet)
    assert not (tmp_path / "metrics.json").exists()


def test_killed_run_resumes_to_the_same_result(tmp_path):
    """Kill a real training process after its first checkpoint; the rerun ends where an uninterrupted run ends."""
    s = spec(recipe={"epochs": 4, "batch_size": 32, "lr": 0.05})
    reference = train(s, tmp_path / "ref", quiet)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(s.to_dict()))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "atlib", "train", str(spec_file), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming after epoch" in done.stdout
    resumed = json.loads((out / "metrics.json").read_text())
    assert strip_times(resumed) == strip_times(reference)
    assert resumed["checkpoint_sha256"] == reference["checkpoint_sha256"]


def test_frozen_groups_and_batch_norm_do_not_change(tmp_path):
    from atlib.models import build_model

    recipe = {"epochs": 1, "batch_size": 64, "lr": 0.05, "freeze_bn": True, "freeze_groups": [0]}
    train(spec(recipe=recipe), tmp_path, quiet)
    torch.manual_seed(3)  # the spec's seed: the weights the run started from
    init = build_model("wrn-10-1", 1, 10).state_dict()
    final = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    for k, v in final.items():
        frozen = k.startswith("groups.0.") or ".bn" in k or k.startswith("bn.")
        assert torch.equal(v, init[k]) == frozen, k


def test_flip_only_augmentation_never_shifts(tmp_path):
    from atlib.data import load, set_augmentation
    from atlib.spec import DataConfig

    source = load(DataConfig.from_config(DATA))
    set_augmentation(source, "flip")
    x, _ = next(source.train_batches(0, 0, len(source.train_x)))
    originals = source.normalise(source.train_x)
    flipped = originals.flip(-1)
    matches = [(torch.isclose(xi, originals).flatten(1).all(1) | torch.isclose(xi, flipped).flatten(1).all(1)).any()
               for xi in x[:32]]
    assert all(matches)  # every augmented image is an original or its mirror image: no crop offsets
    with pytest.raises(ConfigError, match="freeze_groups"):
        train(spec(model="nin-thin", recipe={"epochs": 1, "freeze_groups": [0]}), tmp_path / "nin", quiet)


def test_beta_progress_runs_from_0_on_the_first_batch_to_exactly_1_on_the_last(teacher_dir, tmp_path, monkeypatch):
    # 200 images in batches of 64 are 4 batches (the last of 8 images), 3 epochs: 12 batches in all, so
    # progress is k / 11 for batch k and a linear beta is 1000 * (1 - k / 11), 0 on the very last batch
    seen = []
    real = engine.train_step

    def record(objective, optimizer, x, y, progress, amp, transfer, taught):
        seen.append((len(y), progress))
        return real(objective, optimizer, x, y, progress, amp, transfer, taught)

    monkeypatch.setattr(engine, "train_step", record)
    train(spec(dataset={**DATA, "train_size": 200}, recipe={"epochs": 3, "batch_size": 64, "lr": 0.05},
               method={"name": "at+kd", "beta_schedule": "linear"},
               teacher={"run_dir": str(teacher_dir), "model": "wrn-10-2"}), tmp_path, quiet)
    assert [n for n, _ in seen] == [64, 64, 64, 8] * 3
    assert [p for _, p in seen] == [k / 11 for k in range(12)]
    assert seen[-1][1] == 1.0


def test_a_frozen_stem_stays_and_the_rest_learns(tmp_path):
    from atlib.models import build_model

    train(spec(recipe={"epochs": 1, "batch_size": 64, "lr": 0.05, "freeze_stem": True}), tmp_path, quiet)
    torch.manual_seed(3)  # the spec's seed: the weights the run started from
    init = build_model("wrn-10-1", 1, 10).state_dict()
    final = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    for k, v in final.items():
        assert torch.equal(v, init[k]) == k.startswith("conv0."), k  # WRN's stem: its first convolution


def test_a_stem_freeze_on_a_model_without_a_stem_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="recipe.freeze_stem: this model has no stem"):
        train(spec(model="nin-thin", recipe={"epochs": 1, "freeze_stem": True}), tmp_path / "run", quiet)
    assert not (tmp_path / "run").exists()


def test_the_recipes_init_draws_the_students_weights(tmp_path):
    from atlib.engine import build_run

    authors = build_run(spec(recipe={"epochs": 1, "init": "authors"})).student
    default = build_run(spec(recipe={"epochs": 1})).student
    bn_weights = [m.weight for m in authors.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(((w >= 0) & (w < 1)).all() and not torch.equal(w, torch.ones_like(w)) for w in bn_weights)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight))
               for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(authors.conv0.weight, default.conv0.weight)  # WRN's convolutions are drawn alike


def test_a_cpu_run_computes_in_fp32_whatever_the_recipe_says(tmp_path):
    from contextlib import nullcontext

    from atlib.engine import build_run

    metrics = {}
    for precision in ("bf16", "fp32"):
        s = spec(recipe={"epochs": 1, "batch_size": 64, "lr": 0.05, "precision": precision})
        run = build_run(s)
        assert run.precision == "fp32" and isinstance(run.amp(), nullcontext)
        metrics[precision] = train(s, tmp_path / precision, quiet)
        assert metrics[precision]["environment"]["precision"] == "fp32"
    assert strip_times(metrics["bf16"]) == strip_times(metrics["fp32"])
    with pytest.raises(ConfigError, match="recipe.precision: expected one of bf16, fp32"):
        spec(recipe={"precision": "fp16"})
