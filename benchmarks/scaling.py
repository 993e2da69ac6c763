"""An epoch's cost against the size of the data: seconds per training image should stay flat.

    python benchmarks/scaling.py [--sizes 512 1024 2048 4096] [--threads N]

Times one epoch (augmented batches from the in-memory source, then atlib's AT training step with a
WRN-16-2 teacher, WRN-16-1 student, batch 128) on CIFAR-sized random images for each size; any
per-epoch work that grows faster than the data (a copy of the dataset, a Python loop per image)
shows up as a rising cost per image.
"""

from __future__ import annotations

import argparse
import time

import torch

from atlib.data import CIFAR_MEAN, CIFAR_STD, TensorSource
from atlib.engine import resolve_device, train_step
from atlib.losses import Objective
from atlib.models import build_model
from atlib.spec import Method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    teacher = build_model("wrn-16-2", 3, 10).to(device).eval().requires_grad_(False)
    student = build_model("wrn-16-1", 3, 10).to(device)
    objective = Objective(Method.from_config("at"), student, teacher, (3, 32, 32), device)
    opt = torch.optim.SGD([p for p in objective.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    print(f"device {device} ({torch.get_num_threads()} threads), WRN-16-1 AT from WRN-16-2, batch 128")
    print(f"{'images':>8s} {'epoch s':>9s} {'ms/image':>9s}")
    for n in args.sizes:
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
        y = torch.randint(0, 10, (n,))
        source = TensorSource(x, y, x[:2], y[:2], 10, CIFAR_MEAN, CIFAR_STD, pad=4).to(device)
        t0 = time.perf_counter()
        for xb, yb in source.train_batches(0, 0, 128):
            train_step(objective, opt, xb, yb, 0.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        print(f"{n:8d} {seconds:9.2f} {1000 * seconds / n:9.2f}")


if __name__ == "__main__":
    main()
