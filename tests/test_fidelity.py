"""Setups as the paper and the authors' code ran them: learning-rate drops, F-ActT's decay, start epochs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atlib.engine import start_epoch
from atlib.losses import Objective
from atlib.method import Method
from atlib.spec import Recipe


def authors_lrs(epochs: int, epoch_step: list[int], lr: float = 0.1, ratio: float = 0.2) -> list[float]:
    """The authors' cifar.py: on_start_epoch sees epoch = state['epoch'] + 1 (1-based) and, if it is in
    epoch_step, multiplies the rate by lr_decay_ratio before that epoch trains."""
    out = []
    for state_epoch in range(epochs):
        if state_epoch + 1 in epoch_step:
            lr *= ratio
        out.append(lr)
    return out


def test_learning_rate_drops_in_the_epoch_the_authors_code_drops_it():
    r = Recipe()  # 200 epochs, milestones 0.3/0.6/0.8 = the authors' epoch_step [60, 120, 160]
    expected = authors_lrs(200, [60, 120, 160])
    assert [r.lr_at(e) for e in range(200)] == pytest.approx(expected)
    assert r.lr_at(58) == pytest.approx(0.1) and r.lr_at(59) == pytest.approx(0.02)  # 1-based epoch 60
    assert [e for e in range(200) if r.resets_momentum(e)] == [59, 119, 159]


def test_a_drop_resets_momentum_and_only_a_drop():
    r = Recipe(epochs=10, milestones=(0.5,))  # drops before 1-based epoch 5, i.e. 0-based epoch 4
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=r.lr, momentum=0.9)
    w.sum().backward()
    opt.step()
    assert "momentum_buffer" in opt.state[w]
    assert start_epoch(opt, r, 3) == pytest.approx(0.1) and "momentum_buffer" in opt.state[w]
    assert start_epoch(opt, r, 4) == pytest.approx(0.02) and "momentum_buffer" not in opt.state[w]
    # the next step starts the buffer from its gradient alone: w moves by lr * grad exactly
    before = w.detach().clone()
    opt.step()  # w.grad is still all ones
    assert torch.allclose(before - w.detach(), torch.full((3,), 0.02))


def test_factt_beta_decays_like_at_kd():
    """Section 4.1.2: F-ActT uses l2 normalisation "and decay beta in eq. 2 during training"."""
    m = Method.from_config({"name": "factt", "beta": 1000})
    assert m.beta_schedule == "linear"
    assert [m.beta_at(p) for p in (0.0, 0.25, 0.5, 0.9)] == pytest.approx([1000, 750, 500, 100])
    assert Method.from_config({"name": "factt", "beta_schedule": "constant"}).beta_at(0.9) == 1000


class Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.fc = nn.Linear(width, 3)

    def forward(self, x):
        g = self.conv(x)
        return self.fc(g.mean((2, 3))), [g]


class Counting(Net):
    calls = 0

    def forward(self, x):
        Counting.calls += 1
        return super().forward(x)


def test_before_its_start_epoch_a_method_is_plain_cross_entropy_without_the_teacher():
    torch.manual_seed(0)
    student, teacher = Net(2), Counting(4)
    x, y = torch.randn(4, 1, 5, 5), torch.tensor([0, 1, 2, 0])
    m = Method.from_config({"name": "at+kd", "start_epoch": 60})
    assert not m.transfers(58) and m.transfers(59)  # 1-based epoch 60 is 0-based epoch 59
    objective = Objective(m, student, teacher, (1, 5, 5))
    Counting.calls = 0
    off = objective(x, y, 0.1, transfer=False)
    assert off.loss.item() == pytest.approx(F.cross_entropy(student(x)[0], y).item())
    assert Counting.calls == 0 and set(off.terms) == {"ce"}
    on = objective(x, y, 0.1, transfer=True)
    assert Counting.calls == 1 and {"kd", "at/g0"} <= set(on.terms)


def test_eval_every_tests_the_chosen_epochs_and_always_the_last():
    r = Recipe(epochs=10, eval_every=4)
    assert [e + 1 for e in range(10) if r.evaluates(e)] == [4, 8, 10]


def test_a_run_with_eval_every_records_test_error_only_where_it_tested(tmp_path):
    from atlib.engine import train
    from atlib.spec import RunSpec

    spec = RunSpec.from_dict({
        "run_id": "t", "model": "wrn-10-1", "threads": 1, "tracking": {"enabled": False},
        "dataset": {"name": "synthetic", "synthetic_train": 128, "synthetic_test": 64, "size": 16},
        "recipe": {"epochs": 3, "batch_size": 64, "lr": 0.05, "eval_every": 2}})
    m = train(spec, tmp_path, lambda _: None)
    assert ["test_error" in h for h in m["history"]] == [False, True, True]
    assert m["final_test_error"] == m["history"][-1]["test_error"]
    assert m["best_test_error"] == min(h["test_error"] for h in m["history"][1:])
    # fb's main.lua: the first epoch with the lowest top-1 (a strict <), and the top-5 of that epoch
    tested = [h for h in m["history"] if "test_error" in h]
    first_best = next(h for h in tested if h["test_error"] == m["best_test_error"])
    assert (m["best_epoch"], m["best_test_error_top5"]) == (first_best["epoch"], first_best["test_error_top5"])


def test_numbers_our_copy_does_not_show_in_full_keep_their_mark():
    from atlib.paper import PAPER, paper_value

    # Table 4's column order is ambiguous in our copy; the NIN row of Table 1 is recalled, not read
    for row, columns in PAPER["table4"].items():
        for column in columns:
            shown = paper_value("table4", row, column).show()
            assert shown.endswith("†"), (row, column, shown)
    nin = "nin-thin <- nin-wide"
    assert all(paper_value("table1", nin, c).show().endswith("†") for c in PAPER["table1"][nin])
    # ... while a number read from the text's odd digits stays plain
    assert paper_value("table1", "wrn-16-1 <- wrn-16-2", "at").show() == "7.93"


def test_table5_start_epoch_and_second_drop_are_the_same_epoch():
    """Table 5: 100 epochs, drops at 1-based epochs 30, 60, 90 (imagenet.py's epoch_step), AT added on epoch 60."""
    r = Recipe(epochs=100, milestones=(0.3, 0.6, 0.9), gamma=0.1)
    m = Method.from_config({"name": "at", "start_epoch": 60})
    first_transfer = next(e for e in range(100) if m.transfers(e))
    second_drop = next(e for e in range(100) if r.drops(e) == 2)
    assert first_transfer == second_drop == 59  # 0-based epoch 59 is 1-based epoch 60
    assert r.resets_momentum(59)
    # 0 and 1 both mean from the first epoch, as a milestone can never fall before it
    assert Method.from_config({"name": "at", "start_epoch": 0}).transfers(0)
    assert Method.from_config({"name": "at", "start_epoch": 1}).transfers(0)


def test_lr_drop_and_transfer_start_on_the_same_step(tmp_path, monkeypatch):
    """A real run, recorded step by step: 5 epochs of 3 batches, a drop at 1-based epoch round(0.6 x 5) = 3 and AT
    from epoch 3 (start_epoch: 3) both act from step 2 x 3 = 6, the first step of that epoch."""
    import atlib.engine as engine
    from atlib.spec import RunSpec

    data = {"name": "synthetic", "synthetic_train": 96, "synthetic_test": 32, "size": 8}
    common = {"dataset": data, "threads": 1, "tracking": {"enabled": False}}
    engine.train(RunSpec.from_dict({"run_id": "teacher", "model": "wrn-10-1", "recipe": {"epochs": 0}, **common}),
                 tmp_path / "teacher", lambda _: None)
    steps = []
    step = engine.train_step

    def recorded(objective, optimizer, x, y, progress, amp, transfer=True, taught=None):
        steps.append((optimizer.param_groups[0]["lr"], transfer))
        return step(objective, optimizer, x, y, progress, amp, transfer, taught)

    monkeypatch.setattr(engine, "train_step", recorded)
    spec = RunSpec.from_dict({"run_id": "student", "model": "wrn-10-1", "method": {"name": "at", "start_epoch": 3},
                              "teacher": {"run_dir": str(tmp_path / "teacher"), "model": "wrn-10-1"},
                              "recipe": {"epochs": 5, "batch_size": 32, "lr": 0.1, "milestones": [0.6]}, **common})
    engine.train(spec, tmp_path / "student", lambda _: None)
    assert len(steps) == 5 * 3
    first_low_lr = next(i for i, (lr, _) in enumerate(steps) if lr < 0.1)
    first_transfer = next(i for i, (_, on) in enumerate(steps) if on)
    assert first_low_lr == first_transfer == 6
    assert [on for _, on in steps] == [False] * 6 + [True] * 9
    assert [lr for lr, _ in steps] == pytest.approx([0.1] * 6 + [0.02] * 9)


def paper_recipe(name: str) -> Recipe:
    import yaml
    from conftest import ROOT

    return Recipe.from_config(yaml.safe_load((ROOT / "config/paper.yaml").read_text())["recipes"][name])


def fb_sgd(epochs: int, steps: int, w: float, lr_of, nesterov: bool, reset_at: set[int],
           momentum: float = 0.9, wd: float = 1e-4) -> list[float]:
    """Torch's optim.sgd (dampening 0) on the loss w^2 / 2, whose gradient is w, by hand: dfdx = g + wd * x; the
    buffer starts as dfdx, then b = momentum * b + dfdx; Nesterov steps by dfdx + momentum * b, else by b. A new
    optimizer (1-based epochs in ``reset_at``) starts the buffer again."""
    path, buffer = [], None
    for epoch in range(1, epochs + 1):
        if epoch in reset_at:
            buffer = None
        for _ in range(steps):
            d = w + wd * w
            buffer = d if buffer is None else momentum * buffer + d
            w -= lr_of(epoch) * (d + momentum * buffer if nesterov else buffer)
            path.append(w)
    return path


def engine_sgd(recipe: Recipe, steps: int, w0: float) -> list[float]:
    from atlib.engine import make_optimizer

    w = nn.Parameter(torch.tensor([w0], dtype=torch.float64))
    opt = make_optimizer([w], recipe)
    path = []
    for epoch in range(recipe.epochs):
        start_epoch(opt, recipe, epoch)
        for _ in range(steps):
            opt.zero_grad()
            (w * w / 2).sum().backward()
            opt.step()
            path.append(w.item())
    return path


def test_fb_recipe_steps_as_train_lua_nesterov_without_momentum_reset():
    """Table 5's fb-imagenet recipe, 100 epochs of 2 steps: train.lua's learningRate (1-based epoch e:
    0.1 * 0.1^floor((e - 1) / 30)), Nesterov, and one optimState for the run (no buffer reset at a drop)."""
    r = paper_recipe("fb-imagenet")
    fb_lr = [0.1 * 0.1 ** ((e - 1) // 30) for e in range(1, 101)]
    assert [r.lr_at(e) for e in range(100)] == pytest.approx(fb_lr)
    assert [e + 1 for e in range(100) if r.drops_at(e)] == [31, 61, 91]
    assert not any(r.resets_momentum(e) for e in range(100))
    expected = fb_sgd(100, 2, 1.0, lambda e: fb_lr[e - 1], nesterov=True, reset_at=set())
    assert engine_sgd(r, 2, 1.0) == pytest.approx(expected, rel=1e-12)
    # neither a heavy-ball step nor a buffer reset at the drops gives that path
    assert engine_sgd(r, 2, 1.0)[70] != pytest.approx(
        fb_sgd(100, 2, 1.0, lambda e: fb_lr[e - 1], nesterov=True, reset_at={31, 61, 91})[70], rel=1e-6)
    assert expected[5] != pytest.approx(fb_sgd(3, 2, 1.0, lambda e: 0.1, nesterov=False, reset_at=set())[5], rel=1e-6)


def test_imagenet_py_recipe_steps_with_a_new_optimizer_at_each_drop():
    """The authors' imagenet.py: epoch_step [30, 60, 90], lr x0.1, a new (heavy-ball) optimizer at each drop."""
    r = paper_recipe("imagenet")
    lr = [0.1 * 0.1 ** sum(e >= s for s in (30, 60, 90)) for e in range(1, 101)]
    expected = fb_sgd(100, 2, 1.0, lambda e: lr[e - 1], nesterov=False, reset_at={30, 60, 90})
    assert engine_sgd(r, 2, 1.0) == pytest.approx(expected, rel=1e-12)
