"""Where the datasets' files lie on disk, without torch: atlib.data reads them, atlib.preflight checks them
before any job, both through the names and search order here."""

from __future__ import annotations

from pathlib import Path

# the original Fashion-MNIST release: Debian's flat folder, or torchvision's FashionMNIST/raw; gzipped or not
FMNIST_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
                "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def fmnist_files(root: Path) -> dict[str, Path | None]:
    """Each Fashion-MNIST file's path under ``root`` (None where missing): Debian's flat layout first, then
    torchvision's ``FashionMNIST/raw``; gzipped first, then uncompressed."""
    found: dict[str, Path | None] = {}
    for key, name in FMNIST_FILES.items():
        candidates = [d / f for d in (root, root / "FashionMNIST" / "raw") for f in (name + ".gz", name)]
        found[key] = next((p for p in candidates if p.is_file()), None)
    return found
