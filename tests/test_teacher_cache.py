"""The teacher's outputs computed once per input: the views, the lookups, and the objective they give."""

from contextlib import nullcontext

import pytest
import torch

from atlib import teacher_cache
from atlib.data import load, set_augmentation
from atlib.engine import train
from atlib.losses import Objective
from atlib.methods import REGISTRY, Method
from atlib.models import build_model
from atlib.spec import DataConfig, RunSpec

DATA = {"name": "synthetic", "synthetic_train": 96, "synthetic_test": 32, "size": 16}
TEACHER_METHODS = sorted(name for name, cls in REGISTRY.items() if cls.needs_teacher)


def source(augment: str):
    s = load(DataConfig.from_config(DATA))
    set_augmentation(s, augment)
    return s


def test_every_teacher_method_is_covered():
    assert {"at", "kd", "at+kd", "factt", "sp", "grad-at"} <= set(TEACHER_METHODS)


@pytest.mark.parametrize("augment, views", [("none", 1), ("flip", 2), ("crop+flip", None)])
def test_views_per_image(augment, views):
    assert source(augment).views_per_image == views


def test_a_batch_is_its_views_looked_up():
    """Each image a training batch holds is, pixel for pixel, the view its index names in all_views's order."""
    s = source("flip")
    every = torch.cat([x for x, _ in s.all_views(50)])
    labels = torch.cat([y for _, y in s.all_views(50)])
    assert len(every) == 2 * 96
    # view 2i is image i as stored; view 2i+1 is its mirror image
    assert torch.equal(every[1::2], every[0::2].flip(-1))
    seen = set()
    for epoch in range(2):
        for x, y, v in s.viewed_batches(epoch, seed=5, batch_size=40):
            assert torch.equal(x, every[v]) and torch.equal(y, labels[v])
            seen |= set(v.tolist())
    assert {i // 2 for i in seen} == set(range(96))  # every image, some in both orientations
    assert any(i % 2 for i in seen) and any(i % 2 == 0 for i in seen)


def test_viewed_batches_are_the_training_batches():
    s = source("flip")
    for (x, y), (xv, yv, _) in zip(s.train_batches(1, 7, 32), s.viewed_batches(1, 7, 32), strict=True):
        assert torch.equal(x, xv) and torch.equal(y, yv)


def objective(name: str) -> Objective:
    torch.manual_seed(0)
    student = build_model("wrn-10-1", 1, 10)
    teacher = build_model("wrn-10-2", 1, 10).eval().requires_grad_(False)
    return Objective(Method.from_config(name), student, teacher, (1, 16, 16))


@pytest.mark.parametrize("name", TEACHER_METHODS)
def test_cached_and_live_objectives_agree(name):
    """The teacher targets looked up equal the live teacher's bit for bit on this CPU (eval mode: each image's row
    depends on it alone), and so do the loss and the student's gradient."""
    s = source("flip")
    obj = objective(name)
    cache = teacher_cache.build(obj, s, batch_size=64, amp=nullcontext)
    x, y, views = next(s.viewed_batches(0, 3, 48))

    def loss_and_grads(taught):
        obj.zero_grad()
        out = obj(x, y, progress=0.25, taught=taught)
        out.loss.backward()
        return out.loss.detach(), [p.grad.clone() for p in obj.student.parameters()]

    live_rows = obj.method.teacher_targets(obj, x, y)
    assert live_rows.keys() == cache.targets.keys()
    assert all(torch.equal(cache.rows(views)[k], live_rows[k]) for k in live_rows)
    live, live_grads = loss_and_grads(None)
    cached, cached_grads = loss_and_grads(cache.rows(views))
    assert torch.equal(cached, live)
    assert all(torch.equal(a, b) for a, b in zip(cached_grads, live_grads, strict=True))


def test_at_caches_maps_not_activations():
    """AT reads a C-th of each teacher group: its map F(A) of H x W, one number per position."""
    s = source("flip")
    obj = objective("at")
    cache = teacher_cache.build(obj, s, 64, nullcontext)
    # wrn-10-2 on 16x16 inputs: groups of 16x16, 8x8 and 4x4 positions; 96 images x 2 views
    assert {k: tuple(v.shape) for k, v in cache.targets.items()} == {
        "g0": (192, 16, 16), "g1": (192, 8, 8), "g2": (192, 4, 4)}
    assert cache.bytes == 192 * (256 + 64 + 16) * 4


def spec(**recipe) -> dict:
    return {"dataset": DATA, "model": "wrn-10-1", "seed": 3, "threads": 1, "tracking": {"enabled": False},
            "recipe": {"epochs": 2, "batch_size": 32, "lr": 0.05, **recipe}}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(RunSpec.from_dict({**spec(augment="flip"), "run_id": "teacher", "model": "wrn-10-2"}), out, lambda _: None)
    return out


def student(teacher_dir, method="at+kd", **recipe) -> RunSpec:
    return RunSpec.from_dict({**spec(**recipe), "run_id": "s", "method": method,
                              "teacher": {"run_dir": str(teacher_dir), "model": "wrn-10-2"}})


def test_a_run_records_its_path_and_matches_the_live_run(teacher_dir, tmp_path):
    lines: list[str] = []
    cached = train(student(teacher_dir, augment="flip"), tmp_path / "c", lines.append)
    live = train(student(teacher_dir, augment="flip", teacher_cache=False), tmp_path / "l", lambda _: None)
    assert cached["teacher_outputs"]["path"] == "cached" and cached["teacher_outputs"]["inputs"] == 192
    assert live["teacher_outputs"] == {"path": "live", "reason": "recipe.teacher_cache is false"}
    assert sum("teacher outputs: cached" in line for line in lines) == 1
    timeless = [[{k: v for k, v in h.items() if k not in ("epoch_seconds", "images_per_second")}
                 for h in m["history"]] for m in (cached, live)]
    assert timeless[0] == timeless[1]  # bit for bit: every loss term and error of every epoch
    assert cached["checkpoint_sha256"] == live["checkpoint_sha256"]


def test_random_crops_never_use_the_cache(teacher_dir, tmp_path):
    m = train(student(teacher_dir, augment="crop+flip"), tmp_path, lambda _: None)
    assert m["teacher_outputs"]["path"] == "live"
    assert "random crops" in m["teacher_outputs"]["reason"]


def test_the_memory_bound_falls_back_to_the_live_teacher_in_one_line(teacher_dir, tmp_path):
    lines: list[str] = []
    m = train(student(teacher_dir, method="factt", augment="flip", teacher_cache_mb=0.5), tmp_path, lines.append)
    said = [line for line in lines if "teacher outputs" in line]
    assert m["teacher_outputs"]["path"] == "live" and len(said) == 1
    # F-ActT keeps whole activations: 192 inputs x (32*16*16 + 64*8*8 + 128*4*4) floats x 4 bytes = 10.5 MiB
    assert "192 inputs would need 10.5 MB, above recipe.teacher_cache_mb = 0.5" in said[0]
