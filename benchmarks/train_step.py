"""Images per second of atlib's training step against a plain PyTorch loop, same process, interleaved.

    python benchmarks/train_step.py [--steps 5] [--rounds 3] [--batch 128] [--threads N]

The reference is what one would write by hand: student forward, loss, backward, SGD step, the
teacher forward under no_grad, the AT and KD terms inline as in the authors' utils.py. Rounds
alternate atlib and reference so that clock drift and other load hit both alike; the medians are
compared. Inputs are CIFAR-sized (3x32x32), already on the device, so only the step is measured.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import at_objective, device_of, parser, sgd, teacher_model

from atlib.engine import train_step
from atlib.models import build_model

METHODS = ("baseline", "at", "factt", "kd", "at+kd")


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
            return F.normalize(a.pow(2).mean(1).view(a.size(0), -1))
        loss = loss + 1e3 * sum((at(s) - at(t)).pow(2).mean() for s, t in zip(gs, gt, strict=True))
    if method == "factt":
        loss = loss + 1e3 * sum((F.normalize(a(s).flatten(1)) - F.normalize(t.flatten(1))).pow(2).mean()
                                for a, s, t in zip(adapters, gs, gt, strict=True))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps, after one warm-up step."""
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    device = device_of(args)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    teacher = teacher_model(device)

    results: dict[str, dict[str, list[float]]] = {m: {"atlib": [], "reference": []} for m in METHODS}
    setups = {}
    for m in METHODS:
        objective, opt = at_objective(device, m, teacher)
        ref_student = build_model("wrn-16-1", 3, 10).to(device)
        adapters = torch.nn.ModuleList(torch.nn.Conv2d(c, 2 * c, 1, bias=False) for c in (16, 32, 64)).to(device)
        ref_opt = sgd(list(ref_student.parameters()) + (list(adapters.parameters()) if m == "factt" else []))
        setups[m] = (lambda o=objective, p=opt: train_step(o, p, x, y, 0.5),
                     lambda m=m, s=ref_student, a=adapters, p=ref_opt: reference_step(m, s, teacher, a, p, x, y))
    for i in range(args.rounds):
        for m in METHODS:
            ours, ref = setups[m]
            # alternate which goes first, so neither always pays for switching to another model
            for name, step in (("atlib", ours), ("reference", ref))[:: 1 if i % 2 == 0 else -1]:
                results[m][name].append(timed(step, args.steps, device))

    print(f"device {device} ({torch.get_num_threads()} threads), batch {args.batch}, "
          f"{args.rounds} rounds x {args.steps} steps, median images/s")
    print(f"{'method':10s} {'atlib':>10s} {'reference':>10s} {'atlib/ref':>10s}")
    ips = {}
    for m in METHODS:
        a = args.batch / statistics.median(results[m]["atlib"])
        r = args.batch / statistics.median(results[m]["reference"])
        ips[m] = a
        print(f"{m:10s} {a:10.1f} {r:10.1f} {a / r:10.3f}")
    print(f"AT step time / KD step time: {ips['kd'] / ips['at']:.3f}")


if __name__ == "__main__":
    main()
