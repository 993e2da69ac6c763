import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atlib.losses import Objective, factt_loss, kd_loss
from atlib.methods import names
from atlib.spec import ConfigError, Method


def test_kd_by_hand():
    ys, yt, y = torch.zeros(1, 2), torch.tensor([[math.log(3), 0.0]]), torch.tensor([1])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(ys, yt, y, T=1, alpha=1).item() == pytest.approx(kl)
    # T = 2: teacher probabilities sqrt3 : 1, and the T^2 factor
    pt = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]
    kl2 = sum(q * math.log(q / 0.5) for q in pt)
    assert kd_loss(ys, yt, y, T=2, alpha=1).item() == pytest.approx(4 * kl2, rel=1e-5)
    # alpha = 0 is plain cross-entropy, alpha mixes linearly
    assert kd_loss(ys, yt, y, T=4, alpha=0).item() == pytest.approx(math.log(2))
    mixed = 0.9 * 16 * kd_loss(ys, yt, y, T=4, alpha=1).item() / 16 + 0.1 * math.log(2)
    assert kd_loss(ys, yt, y, T=4, alpha=0.9).item() == pytest.approx(mixed)


def test_kd_term_zero_when_logits_agree():
    z = torch.randn(8, 10)
    y = torch.zeros(8, dtype=torch.long)
    assert kd_loss(z, z.clone(), y, T=4, alpha=1).item() == pytest.approx(0, abs=1e-6)


def test_factt_by_hand():
    s = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    t = torch.tensor([4.0, 3.0]).view(1, 2, 1, 1)  # normalised diff [-0.2, 0.2]
    assert factt_loss(s, t, "code").item() == pytest.approx(0.04)
    assert factt_loss(s, t, "paper").item() == pytest.approx(0.5 * math.sqrt(0.08) / 2)
    assert factt_loss(5 * s, s).item() == pytest.approx(0.0, abs=1e-7)


class Tiny(nn.Module):
    """Smooth (tanh) two-group net, so finite differences are meaningful."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, width, 3, padding=1)
        self.c2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.fc = nn.Linear(width, 3)

    def forward(self, x):
        g1 = torch.tanh(self.c1(x))
        g2 = torch.tanh(self.c2(g1))
        return self.fc(g2.mean((2, 3))), [g1, g2]


def _nets(seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    return Tiny(3).to(dtype), Tiny(5).to(dtype).requires_grad_(False)


@pytest.mark.parametrize("name", ["grad-at", "symmetry", "min-l2", "at", "factt", "kd", "at+kd"])
def test_weight_gradients_match_finite_differences(name):
    student, teacher = _nets()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=g), torch.tensor([0, 2])
    method = Method.from_config({"name": name} if name == "kd" else {"name": name, "beta": 3.0})
    objective = Objective(method, student, teacher, (1, 4, 4)).double()
    objective(x, y, progress=0.0).loss.backward()

    def loss_with(flat, i, value):
        with torch.no_grad():
            flat[i] = value
        return objective(x, y, progress=0.0).loss.item()

    eps = 1e-6
    for p in student.parameters():
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 5)):
            orig = flat[i].item()
            numeric = (loss_with(flat, i, orig + eps) - loss_with(flat, i, orig - eps)) / (2 * eps)
            loss_with(flat, i, orig)
            assert p.grad.view(-1)[i].item() == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_baseline_is_plain_cross_entropy():
    student, _ = _nets(dtype=torch.float32)
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    step = Objective(Method(), student, None, (1, 4, 4))(x, y, 0.0)
    assert step.loss.item() == pytest.approx(F.cross_entropy(student(x)[0], y).item())


def test_at_total_is_ce_plus_beta_times_group_terms():
    student, teacher = _nets(dtype=torch.float32)
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    step = Objective(Method.from_config({"name": "at", "beta": 10.0}), student, teacher, (1, 4, 4))(x, y, 0.0)
    assert set(step.terms) == {"ce", "at/g0", "at/g1"}
    expected = step.terms["ce"] + 10.0 * (step.terms["at/g0"] + step.terms["at/g1"])
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_factt_adds_trainable_adapters_where_widths_differ():
    student, teacher = _nets(dtype=torch.float32)
    objective = Objective(Method.from_config("factt"), student, teacher, (1, 4, 4))
    assert [a.weight.shape for a in objective.adapters] == [torch.Size([5, 3, 1, 1])] * 2
    step = objective(torch.randn(2, 1, 4, 4), torch.tensor([0, 1]), 0.0)
    step.loss.backward()
    assert all(a.weight.grad is not None and a.weight.grad.abs().sum() > 0 for a in objective.adapters)


def test_beta_schedules():
    m = Method.from_config("at+kd")  # linear decay is at+kd's default
    assert [m.beta_at(p) for p in (0.0, 0.5)] == [1000.0, 500.0]
    s = Method.from_config({"name": "at+kd", "beta_schedule": "step"})
    assert [s.beta_at(p) for p in (0.0, 0.3, 0.7, 0.9)] == pytest.approx([1000, 200, 40, 8])
    assert Method.from_config("at").beta_at(0.9) == 1000


@pytest.mark.parametrize("cfg, match", [
    ({"name": "distill"}, "unknown method"),
    ({"name": "kd", "beta": 1.0}, "takes no parameter"),
    ({"name": "at", "beta": -1.0}, "beta"),
    ({"name": "kd", "alpha": 1.5}, "alpha"),
    ({"name": "kd", "T": 0}, "T"),
    ({"name": "at", "mapping": "mean"}, "mapping"),
    ({"name": "at", "groups": []}, "groups"),
    ({"name": "at+kd", "beta_schedule": "cosine"}, "beta_schedule"),
])
def test_bad_method_configs_are_clear_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        Method.from_config(cfg)


def test_teacher_methods_refuse_to_run_without_teacher():
    student, _ = _nets(dtype=torch.float32)
    for name in names():
        m = Method.from_config(name)
        if m.needs_teacher:
            with pytest.raises(ConfigError, match="needs a teacher"):
                Objective(m, student, None, (1, 4, 4))


def test_groups_out_of_range_and_size_mismatch_without_resize():
    student, teacher = _nets(dtype=torch.float32)
    with pytest.raises(ConfigError, match="out of range"):
        Objective(Method.from_config({"name": "at", "groups": [2]}), student, teacher, (1, 4, 4))
