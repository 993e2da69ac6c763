import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atlib.errors import ConfigError
from atlib.losses import Objective
from atlib.method import Method
from atlib.methods import names
from atlib.methods.factt import factt_loss
from atlib.methods.kd import kd_loss
from atlib.methods.sp import similarity, sp_loss


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


@pytest.mark.parametrize("name", ["grad-at", "symmetry", "min-l2", "at", "factt", "kd", "at+kd", "sp"])
def test_weight_gradients_match_finite_differences(name):
    student, teacher = _nets()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=g), torch.tensor([0, 2])
    weight = {"kd": {}, "sp": {"gamma": 3.0}}.get(name, {"beta": 3.0})
    method = Method.from_config({"name": name, **weight})
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


@pytest.mark.parametrize("beta, output_beta", [(3.0, 2.0), (0.0, 2.0)])
def test_symmetry_output_term_matches_finite_differences(beta, output_beta):
    student, _ = _nets()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=g), torch.tensor([1, 2])
    objective = Objective(Method.from_config({"name": "symmetry", "beta": beta, "output_beta": output_beta}),
                          student, None, (1, 4, 4)).double()
    objective(x, y, progress=0.0).loss.backward()
    p = student.fc.weight
    for i in range(p.numel()):
        flat, orig, eps = p.data.view(-1), p.data.view(-1)[i].item(), 1e-6
        values = []
        for v in (orig + eps, orig - eps):
            flat[i] = v
            values.append(objective(x, y, progress=0.0).loss.item())
        flat[i] = orig
        assert p.grad.view(-1)[i].item() == pytest.approx((values[0] - values[1]) / (2 * eps), rel=1e-4, abs=1e-8)


class Pixels(nn.Module):
    """Logits of a 1x2 image: z_0 = the left pixel, z_1 = 0 (W = [[1, 0], [0, 0]], no bias)."""

    def forward(self, x):
        left = x.flatten(1)[:, :1]
        return torch.cat([left, torch.zeros_like(left)], 1), [x]


def test_symmetry_norm_by_hand():
    """x = [ln 3, 0], y = 0. z(x) = (ln 3, 0): p = (3/4, 1/4), J(x) = W^T (p - e_0) = (-1/4, 0); flip x = [0, ln 3]:
    z = (0, 0), p = (1/2, 1/2), J(flip x) = (-1/2, 0), flipped back (0, -1/2). So J(x) - flip(J(flip x)) =
    (-1/4, 1/2) and f(x) - f(flip x) = (ln 3, 0). Code form: 5/32 and (ln 3)^2 / 2 (means of the squares); paper
    form: 1/2 * the l2 norm over the elements: sqrt(5)/4 / 2 / 2 = sqrt(5)/16 and ln 3 / 2 / 2 = ln(3) / 4."""
    x, y, ln3 = torch.tensor([[[[math.log(3), 0.0]]]]), torch.tensor([0]), math.log(3)
    ce = math.log(4 / 3)
    for form, grad_term, out_term in (("code", 5 / 32, ln3**2 / 2), ("paper", math.sqrt(5) / 16, ln3 / 4)):
        method = Method.from_config({"name": "symmetry", "beta": 2.0, "output_beta": 3.0, "form": form})
        step = Objective(method, Pixels(), None, (1, 1, 2))(x, y, 0.0)
        assert step.terms["grad"].item() == pytest.approx(grad_term, rel=1e-6)
        assert step.terms["outputs"].item() == pytest.approx(out_term, rel=1e-6)
        assert step.loss.item() == pytest.approx(ce + 2 * grad_term + 3 * out_term, rel=1e-6)
    # output_beta 0 (the default): equation 6 as printed, the gradient term alone
    plain = Objective(Method.from_config({"name": "symmetry", "beta": 2.0}), Pixels(), None, (1, 1, 2))(x, y, 0.0)
    assert "outputs" not in plain.terms and plain.loss.item() == pytest.approx(ce + 2 * 5 / 32, rel=1e-6)


def test_sp_by_hand():
    """Similarity-preserving distillation on two images; the student's group (1 channel, 1 x 2) and the
    teacher's (2 channels, 1 x 1) differ in shape, their b x b similarities do not."""
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 1, 1, 2)  # Q_S: rows (1, 0) and (1, 1)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)  # Q_T: rows (1, 0) and (0, 1)
    # Q_S Q_S^T = [[1, 1], [1, 2]], rows over their l2 norms sqrt(2) and sqrt(5); Q_T Q_T^T = I, rows of norm 1
    r2, r5 = math.sqrt(2), math.sqrt(5)
    assert similarity(s).flatten().tolist() == pytest.approx([1 / r2, 1 / r2, 1 / r5, 2 / r5])
    assert similarity(t).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # ||G_T - G_S||_F^2 = (1 - 1/sqrt2)^2 + 1/2 + 1/5 + (1 - 2/sqrt5)^2 = 4 - sqrt2 - 4/sqrt5, over b^2 = 4:
    expected = 1 - r2 / 4 - 1 / r5  # 0.199233
    assert sp_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert sp_loss(3 * s, t).item() == pytest.approx(expected, rel=1e-6)  # each row normalised: no scale
    assert sp_loss(t, t).item() == 0.0


def test_sp_total_is_ce_plus_gamma_times_the_last_group_term():
    student, teacher = _nets()
    x, y = torch.randn(4, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    step = Objective(Method.from_config("sp"), student, teacher, (1, 4, 4)).double()(x, y, 0.0)
    assert set(step.terms) == {"ce", "sp/g1"}  # by default the last group, as the paper's WRN setup
    (logits, gs), (_, gt) = student(x), teacher(x)
    assert step.terms["sp/g1"].item() == pytest.approx(sp_loss(gs[1], gt[1]).item(), rel=1e-12)
    expected = F.cross_entropy(logits, y) + 3000 * sp_loss(gs[1], gt[1])
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-12)
    both = Objective(Method.from_config({"name": "sp", "groups": [0, 1]}), student, teacher, (1, 4, 4)).double()
    assert set(both(x, y, 0.0).terms) == {"ce", "sp/g0", "sp/g1"}


def test_baseline_is_plain_cross_entropy():
    student, _ = _nets(dtype=torch.float32)
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    step = Objective(Method.from_config("baseline"), student, None, (1, 4, 4))(x, y, 0.0)
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
    # each message starts with the key it names
    ({"name": "distill"}, r"^method\.name: unknown method 'distill'"),
    ({"name": "kd", "beta": 1.0}, r"^method: method 'kd' takes no parameter\(s\) beta;"),
    ({"name": "at", "beta": -1.0}, r"^method\.beta: expected a number >= 0, got -1\.0$"),
    ({"name": "kd", "alpha": 1.5}, r"^method\.alpha: expected a weight in \[0, 1\], got 1\.5$"),
    ({"name": "kd", "T": 0}, r"^method\.T: expected a temperature > 0, got 0$"),
    ({"name": "at", "mapping": "mean"}, r"^method\.mapping: expected one of .*, got 'mean'$"),
    ({"name": "at", "groups": []}, r"^method\.groups: expected a non-empty list"),
    ({"name": "at+kd", "beta_schedule": "cosine"}, r"^method\.beta_schedule: expected one of .*, got 'cosine'$"),
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
    with pytest.raises(ConfigError, match="out of range"):
        Objective(Method.from_config({"name": "at", "groups": [-3]}), student, teacher, (1, 4, 4))
    # a negative index counts from the last group, as in Python
    assert Objective(Method.from_config({"name": "at", "groups": [-1]}), student, teacher, (1, 4, 4)).groups == (1,)


def test_the_method_checks_and_the_formulas_name_the_same_mappings_and_forms():
    from typing import get_args

    from atlib import attention, method
    from atlib.methods import at

    assert at.MAPPINGS == get_args(attention.MappingName) and at.NORMS == get_args(attention.NormName)
    assert method.FORMS == get_args(attention.Form)
