"""Images per second of atlib's batched augmentation against a torchvision DataLoader, same device.

    python benchmarks/data.py [--images 10000] [--batch 128] [--workers 2] [--threads N]

Both produce the paper's CIFAR augmentation (reflect-pad 4, random 32x32 crop, horizontal flip)
and normalisation from the same uint8 images; the DataLoader applies torchvision's per-image
transforms to PIL images in worker processes, as most training scripts do. The third figure is
what training consumes: a WRN-16-1 AT step (teacher WRN-16-2) on the same device, so the last
line says how many times faster than training the data arrives.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torchvision.transforms as T
from common import at_objective, device_of, parser
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from atlib.data import CIFAR_MEAN, CIFAR_STD, TensorSource
from atlib.engine import train_step


class PILImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: T.Compose) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def images_per_second(batches, device: torch.device) -> float:
    n, t0 = 0, time.perf_counter()
    for x, _ in batches:
        x = x.to(device, non_blocking=True)
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def training_images_per_second(device: torch.device, batch: int, steps: int = 3) -> float:
    objective, opt = at_objective(device)
    x, y = torch.randn(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)
    train_step(objective, opt, x, y, 0.0)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(objective, opt, x, y, 0.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    device = device_of(args)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images)

    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels)
    source = TensorSource(x, y, x[:256], y[:256], 10, CIFAR_MEAN, CIFAR_STD, pad=4).to(device)
    ours = max(images_per_second(source.train_batches(epoch, 0, args.batch), device) for epoch in range(3))

    transform = T.Compose([T.RandomCrop(32, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip(),
                           T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    loader = DataLoader(PILImages(images, labels, transform), batch_size=args.batch, shuffle=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=True)
    theirs = max(images_per_second(loader, device) for _ in range(2))
    consumed = training_images_per_second(device, args.batch)

    print(f"device {device} ({torch.get_num_threads()} threads), {args.images} CIFAR-sized images, batch {args.batch}")
    print(f"atlib batched augmentation     {ours:12.0f} images/s")
    print(f"DataLoader ({args.workers} workers, per image) {theirs:12.0f} images/s   "
          f"atlib/DataLoader {ours / theirs:.1f}x")
    print(f"training (WRN-16-1 AT step)    {consumed:12.0f} images/s   data/training {ours / consumed:.0f}x")


if __name__ == "__main__":
    main()
