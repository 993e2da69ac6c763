"""What only a CUDA device can show: bf16 against fp32, channels_last against contiguous, a resumed CUDA run,
the compiled step on CUDA. Skipped without CUDA; benchmarks/gpu_check.py runs this file on a lent GPU."""

import copy
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from atlib.attention import attention
from atlib.engine import train, train_step
from atlib.losses import Objective
from atlib.method import Method
from atlib.models import build_model
from atlib.spec import RunSpec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DATA = {"name": "synthetic", "channels": 3, "size": 32, "synthetic_train": 2048, "synthetic_test": 512}


def spec_dict(**over) -> dict:
    base = {"run_id": "cuda", "dataset": DATA, "model": "wrn-10-1", "seed": 2, "device": "cuda",
            "recipe": {"epochs": 4, "batch_size": 128, "lr": 0.05}, "tracking": {"enabled": False}}
    return {**base, **over}


def quiet(_: str) -> None:
    pass


def pair(method: str) -> Objective:
    """A WRN-16-1 student and a WRN-16-2 teacher on the card under ``method``, fp32 weights, fixed seed."""
    torch.manual_seed(0)
    student = build_model("wrn-16-1", 3, 10).cuda()
    teacher = build_model("wrn-16-2", 3, 10).cuda().eval().requires_grad_(False)
    return Objective(Method.from_config(method), student, teacher, (3, 32, 32), "cuda")


def batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g).cuda(), torch.randint(0, 10, (n,), generator=g).cuda()


def test_cuda_bf16_attention_maps_and_at_kd_losses_are_close_to_fp32():
    objective = pair("at+kd")
    x, y = batch()
    # the fp32 reference without TF32, so that the comparison is with true fp32
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        _, gs32 = objective.student(x)
        ref = objective(x, y, progress=0.0)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        _, gs16 = objective.student(x)
        low = objective(x, y, progress=0.0)
    assert gs16[0].dtype == torch.bfloat16  # the comparison is of bf16 activations
    for a32, a16 in zip(gs32, gs16, strict=True):
        q32, q16 = attention(a32), attention(a16)  # unit vectors per sample
        assert (q16 - q32).norm(dim=1).max() < 2e-2
    assert set(ref.terms) == set(low.terms) >= {"ce", "kd", "at/g0", "at/g1", "at/g2"}
    for key in ref.terms:
        assert torch.isclose(low.terms[key].float(), ref.terms[key], rtol=5e-2), key
    assert torch.isclose(low.loss.float(), ref.loss, rtol=2e-2)


def test_cuda_channels_last_gives_the_contiguous_step():
    contiguous = pair("at")
    channels_last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    x, y = batch()
    losses, grads = [], []
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for objective, inputs in ((contiguous, x), (channels_last, x.contiguous(memory_format=torch.channels_last))):
            opt = torch.optim.SGD([p for p in objective.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
            losses.append([train_step(objective, opt, inputs, y, 0.0).loss.item()])
            grads.append([p.grad.clone() for p in objective.student.parameters()])  # of the first step
            losses[-1] += [train_step(objective, opt, inputs, y, 0.0).loss.item() for _ in range(2)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    # The two layouts sum in other orders: through batch norm's backward the first layers' fp32 gradients then
    # differ by up to 4e-3 of their norm (measured on a CPU); a layout error would be of order 1.
    for g, h in zip(*grads, strict=True):
        assert (g - h).norm() <= 1e-2 * g.norm() + 1e-7


def test_cuda_resumed_run_continues_the_loss_curve(tmp_path):
    """Killed (SIGKILL) just after its epoch-2 checkpoint, then started again, a run ends on the curve of an
    uninterrupted one; GPU kernels are not bit-reproducible, hence a tolerance."""
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec_dict()))
    killed = tmp_path / "killed"
    script = ("import os, signal, sys; from atlib.engine import train; from atlib.spec import RunSpec; "
              "import json; spec = RunSpec.from_dict(json.loads(open(sys.argv[1]).read())); "
              "train(spec, sys.argv[2], lambda s: 'epoch 2/' in s and os.kill(os.getpid(), signal.SIGKILL))")
    proc = subprocess.run([sys.executable, "-c", script, str(path), str(killed)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed / "checkpoint.pt").exists() and not (killed / "metrics.json").exists()
    messages: list[str] = []
    resumed = train(RunSpec.from_dict(spec_dict()), killed, messages.append)
    assert any("resuming after epoch 2" in m for m in messages)
    whole = train(RunSpec.from_dict(spec_dict()), tmp_path / "whole", quiet)
    assert len(resumed["history"]) == len(whole["history"]) == 4
    for a, b in zip(resumed["history"], whole["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)
        assert abs(a["test_error"] - b["test_error"]) <= 3.0  # points: 15 of 512 test images
    assert os.path.getsize(killed / "model.pt") > 0 and not (killed / "checkpoint.pt").exists()


def test_cuda_compiled_training_gives_the_eager_losses(tmp_path):
    """AT from a teacher: the compiled graph holds the channels_last bf16 student and the teacher's forward."""
    teacher = tmp_path / "teacher"
    train(RunSpec.from_dict(spec_dict(model="wrn-10-2", recipe={"epochs": 0})), teacher, quiet)
    student = {"method": "at", "teacher": {"run_dir": str(teacher), "model": "wrn-10-2"}}
    eager = train(RunSpec.from_dict(spec_dict(**student, recipe={"epochs": 2})), tmp_path / "e", quiet)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = train(RunSpec.from_dict(spec_dict(**student, recipe={"epochs": 2, "compile": True})), tmp_path / "c",
                     quiet)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # it did compile
    for a, b in zip(compiled["history"], eager["history"], strict=True):
        # bf16: fused kernels round in other places than eager ones
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)
        assert a["loss/at/g2"] == pytest.approx(b["loss/at/g2"], rel=5e-2)


def test_cuda_recipe_precision_sets_autocast_and_tf32():
    """fp32 is IEEE single precision (cuDNN's TF32 off) without autocast; bf16 is autocast, with PyTorch's TF32."""
    from atlib.engine import build_run

    fp32 = build_run(RunSpec.from_dict(spec_dict(recipe={"epochs": 1, "precision": "fp32"})))
    assert fp32.precision == "fp32" and not torch.backends.cudnn.allow_tf32
    with fp32.amp():
        assert not torch.is_autocast_enabled("cuda")
    bf16 = build_run(RunSpec.from_dict(spec_dict(recipe={"epochs": 1, "precision": "bf16"})))
    assert bf16.precision == "bf16" and torch.backends.cudnn.allow_tf32
    with bf16.amp():
        assert torch.is_autocast_enabled("cuda")
