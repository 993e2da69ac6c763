"""An epoch's cost against the size of the data: seconds per training image should stay flat.

    python benchmarks/scaling.py [--sizes 512 1024 2048 4096] [--threads N]

Times one epoch (augmented batches from the in-memory source, then atlib's AT training step with a
WRN-16-2 teacher, WRN-16-1 student, batch 128) on CIFAR-sized random images for each size; any
per-epoch work that grows faster than the data (a copy of the dataset, a Python loop per image)
shows up as a rising cost per image.
"""

from __future__ import annotations

import time

import torch
from common import at_objective, device_of, parser

from atlib.data import CIFAR_MEAN, CIFAR_STD, TensorSource
from atlib.engine import train_step


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    args = ap.parse_args()
    device = device_of(args)
    objective, opt = at_objective(device)
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
