"""Datasets as batch sources whose order and augmentation are a pure function of ``(seed, epoch)``.

Small datasets (CIFAR-10/100, Fashion-MNIST, synthetic) live on the device as one uint8 tensor and are
augmented a whole batch at a time with tensor ops, so the data pipeline never becomes the bottleneck
of a small network. Large ones (ImageFolder, e.g. ImageNet) are streamed by a DataLoader. Everything
that can be wrong with a dataset on disk is found by :func:`load`, before a model is built.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .datafiles import FMNIST_FILES, fmnist_files
from .errors import ConfigError
from .spec import AUGMENTATIONS, FOLDER_ONLY, DataConfig, DataError

# Zagoruyko's CIFAR code uses these per-channel statistics (0..255 scale).
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
# CIFAR-100's training images' per-channel mean and standard deviation, on the same scale
CIFAR100_MEAN = (129.3 / 255, 124.1 / 255, 112.4 / 255)
CIFAR100_STD = (68.2 / 255, 65.4 / 255, 70.4 / 255)
FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# fb.resnet.torch's datasets/imagenet.lua: the principal components of ImageNet's RGB pixels (0..1 scale),
# eigenvalues and eigenvectors (one per column), and its colour jitter and lighting strengths
FB_EIGVAL = (0.2175, 0.0188, 0.0045)
FB_EIGVEC = ((-0.5675, 0.7192, 0.4009),
             (-0.5808, -0.0045, -0.8140),
             (-0.5836, -0.6948, 0.4203))
FB_JITTER = 0.4  # brightness, contrast and saturation
FB_LIGHTING = 0.1  # alphastd

SYNTHETIC_SEED = 20170101  # fixed, so every run (and train and test) shares the class patterns

def _mix(*values: int) -> int:
    """A well-spread 63-bit seed from several integers, so nearby (seed, epoch) pairs share no randomness."""
    entropy = [v % 2**64 for v in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


class Source(ABC):
    """A dataset as an iterator of batches; the engine sees only this."""

    num_classes: int
    input_shape: tuple[int, int, int]
    train_size: int
    test_size: int
    # How many distinct training inputs one image can become under the augmentation: 1 (none), 2 (flips), or
    # None (random crops, or images decoded on the fly: too many to enumerate). A finite number lets a run
    # compute its teacher's outputs once per view (atlib.teacher_cache).
    views_per_image: int | None = None

    @abstractmethod
    def train_batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled, augmented, normalised batches; a function of ``(seed, epoch)`` only, so resuming repeats
        them exactly. A final partial batch is kept unless it has a single image (BatchNorm needs two)."""

    def viewed_batches(self, epoch: int, seed: int, batch_size: int
                       ) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """:meth:`train_batches` with each image's view: its position in :meth:`all_views` (None when the views
        are not finite)."""
        for x, y in self.train_batches(epoch, seed, batch_size):
            yield x, y, None

    def all_views(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Every view of every training image once, normalised, image i's views at i*V .. i*V+V-1."""
        raise NotImplementedError(f"{type(self).__name__} has no finite set of views")

    def train_steps(self, batch_size: int) -> int:
        """How many batches :meth:`train_batches` yields: ceil(n / batch_size), less a final batch of one."""
        full, rest = divmod(self.train_size, batch_size)
        return full + int(rest >= min(2, batch_size))

    @abstractmethod
    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Every test image once, in a fixed order, normalised and not augmented."""

    @abstractmethod
    def to(self, device: torch.device) -> Source:
        """Put the data (or the batches) on ``device``; returns self."""

    def validation_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]] | None:
        """Every held-out validation image once, normalised and not augmented; None without a validation split."""
        return None

    @abstractmethod
    def digest(self, split: str) -> str:
        """The SHA-256 (hex) of exactly the images and labels of ``split`` ("train" or "test") this source yields, in
        its order: the same subset gives the same digest, another subset (``per_class`` under another
        ``subset_seed``, say) another. Reads the data, never the batches: their order and augmentation stay as
        they are."""


def set_augmentation(source: Source, augment: str) -> None:
    """Set how ``source`` augments its training images; ``augment`` is one of :data:`AUGMENTATIONS`.

    In-memory datasets: ``crop+flip`` (the paper's CIFAR recipe, the default), ``flip`` (Table 3: flips only)
    or ``none``. Image folders: ``crop+flip`` (ImageNet's random-resized crop, the default),
    ``scale+crop+flip`` (the paper's CUB/Scenes recipe), ``crop+jitter+lighting+flip`` (fb.resnet.torch's),
    ``flip`` or ``none`` (see :func:`_folder_transform`).
    """
    if augment not in AUGMENTATIONS:
        raise ConfigError(f"recipe.augment: expected one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if isinstance(source, FolderSource):
        source.train_transform = _folder_transform(augment, source.input_shape[1])
        return
    if not isinstance(source, TensorSource):
        raise ConfigError(f"recipe.augment: {type(source).__name__} takes no augmentation setting")
    if augment in FOLDER_ONLY:
        raise ConfigError(f"recipe.augment: {augment!r} rescales or recolours an image folder's RGB images and is "
                          "available for imagefolder datasets only; in-memory datasets (cifar10, cifar100, "
                          "fashion-mnist, synthetic) take crop+flip, flip or none")
    if augment == "crop+flip":
        return  # the source's own reflect-pad and crop, as built
    source.pad, source.flip = 0, augment == "flip"


def _split(source: Source, split: str, train: Any, test: Any) -> Any:
    if split not in ("train", "test"):
        raise ValueError(f"{type(source).__name__}.digest: split is 'train' or 'test', got {split!r}")
    return train if split == "train" else test


def _spans(n: int, batch_size: int, train: bool) -> Iterator[tuple[int, int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if train and stop - start < min(2, batch_size):
            return
        yield start, stop


def _reflect(index: Tensor, length: int) -> Tensor:
    """Map indices in [-length+1, 2*length-2] back into the image like ``F.pad(mode="reflect")``."""
    index = index.abs()
    return torch.where(index > length - 1, 2 * (length - 1) - index, index)


class TensorSource(Source):
    """A dataset held as uint8 (N, C, H, W) tensors and augmented on the device: reflect-pad ``pad`` pixels,
    take a random crop of the original size, and flip horizontally with probability 1/2."""

    def __init__(self, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int,
                 mean: Sequence[float], std: Sequence[float], pad: int, flip: bool = True,
                 validation: tuple[Tensor, Tensor] | None = None) -> None:
        if train_x.dtype != torch.uint8 or test_x.dtype != torch.uint8:
            raise TypeError("images must be uint8 tensors (N, C, H, W)")
        sizes_differ = len(train_x) != len(train_y) or len(test_x) != len(test_y)
        if train_x.shape[1:] != test_x.shape[1:] or sizes_differ:
            raise ValueError(f"inconsistent shapes: train {tuple(train_x.shape)}/{tuple(train_y.shape)}, "
                             f"test {tuple(test_x.shape)}/{tuple(test_y.shape)}")
        c, h, w = train_x.shape[1:]
        if not 0 <= pad < min(h, w):
            raise ValueError(f"reflect padding {pad} needs images larger than {pad} pixels, got {h}x{w}")
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} channel values, got {len(mean)}/{len(std)}")
        self.train_x, self.test_x = train_x.contiguous(), test_x.contiguous()
        self.train_y, self.test_y = train_y.long(), test_y.long()
        self.num_classes = num_classes
        self.input_shape = (int(c), int(h), int(w))
        self.train_size, self.test_size = len(train_x), len(test_x)
        self.pad, self.flip = pad, flip
        self.val_x, self.val_y = (validation[0].contiguous(), validation[1].long()) if validation else (None, None)
        # x / 255 normalised in one multiply-add: (x / 255 - mean) / std
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t

    def to(self, device: torch.device) -> TensorSource:
        for key in ("train_x", "train_y", "test_x", "test_y", "scale", "shift", "val_x", "val_y"):
            if getattr(self, key) is not None:
                setattr(self, key, getattr(self, key).to(device))
        return self

    def digest(self, split: str) -> str:
        x, y = _split(self, split, (self.train_x, self.train_y), (self.test_x, self.test_y))
        h = hashlib.sha256(f"uint8 {tuple(x.shape)}\n".encode())  # the shape: the same bytes as other images differ
        h.update(x.cpu().contiguous().numpy().tobytes())
        h.update(y.cpu().to(torch.int64).numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def normalise(self, x: Tensor) -> Tensor:
        return x.float() * self.scale + self.shift

    @property
    def views_per_image(self) -> int | None:  # type: ignore[override]
        return None if self.pad else 1 + int(self.flip)

    def train_batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y, _ in self.viewed_batches(epoch, seed, batch_size):
            yield x, y

    def viewed_batches(self, epoch: int, seed: int, batch_size: int
                       ) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        # Drawn on the CPU, whatever the device, so a run gives the same batches on any hardware.
        g = torch.Generator().manual_seed(_mix(seed, epoch))
        n, device = self.train_size, self.train_x.device
        order = torch.randperm(n, generator=g).to(device)
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g).to(device)
        flips = (torch.randint(0, 2, (n,), generator=g) == 1).to(device) & self.flip
        views = self.views_per_image
        for start, stop in _spans(n, batch_size, train=True):
            idx, flip = order[start:stop], flips[start:stop]
            x = self._crop_flip(idx, offsets[start:stop], flip)
            yield self.normalise(x), self.train_y[idx], None if views is None else idx * views + flip.long()

    def all_views(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        views = self.views_per_image
        if views is None:
            raise NotImplementedError("random crops have no finite set of views")
        device = self.train_x.device
        for start, stop in _spans(self.train_size * views, batch_size, train=False):
            view = torch.arange(start, stop, device=device)
            idx = view // views
            offsets = torch.zeros(len(view), 2, dtype=torch.long, device=device)
            x = self._crop_flip(idx, offsets, view % views == 1)
            yield self.normalise(x), self.train_y[idx]

    def _crop_flip(self, idx: Tensor, offsets: Tensor, flips: Tensor) -> Tensor:
        """One gather for pad + crop + flip: each output pixel's source row/column is computed, not copied."""
        _, h, w = self.input_shape
        device = idx.device
        rows = _reflect(offsets[:, :1] + torch.arange(h, device=device) - self.pad, h)
        cols = _reflect(offsets[:, 1:] + torch.arange(w, device=device) - self.pad, w)
        cols = torch.where(flips[:, None], cols.flip(1), cols)
        channels = torch.arange(self.input_shape[0], device=device)
        return self.train_x[idx[:, None, None, None], channels[None, :, None, None],
                            rows[:, None, :, None], cols[:, None, None, :]]

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for start, stop in _spans(self.test_size, batch_size, train=False):
            yield self.normalise(self.test_x[start:stop]), self.test_y[start:stop]

    def validation_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]] | None:
        if self.val_x is None or self.val_y is None:
            return None
        x, y = self.val_x, self.val_y
        return ((self.normalise(x[a:b]), y[a:b]) for a, b in _spans(len(x), batch_size, train=False))


# --- CIFAR-10 and CIFAR-100 ---------------------------------------------------------------------

# name -> (torchvision class, its folder, classes, mean, std). CIFAR-100's labels are its 100 fine classes
# (torchvision's targets), not the 20 superclasses.
CIFARS = {"cifar10": ("CIFAR10", "cifar-10-batches-py", 10, CIFAR_MEAN, CIFAR_STD),
          "cifar100": ("CIFAR100", "cifar-100-python", 100, CIFAR100_MEAN, CIFAR100_STD)}


def _cifar(cfg: DataConfig, root: Path) -> TensorSource:
    """CIFAR-10 or CIFAR-100 in torchvision's on-disk format (the python version's pickled batches), whose
    files torchvision checks against their MD5 sums."""
    import torchvision

    kind, folder, classes, mean, std = CIFARS[cfg.name]
    title = cfg.name.upper().replace("CIFAR", "CIFAR-")
    try:
        train = getattr(torchvision.datasets, kind)(str(root), train=True, download=cfg.download)
        test = getattr(torchvision.datasets, kind)(str(root), train=False, download=cfg.download)
    except (RuntimeError, OSError) as e:
        raise DataError(f"{title} not found or corrupt in {root} ({e}). Set `download: true` in the dataset "
                        f"config, or place the python version's {folder} directory in {root}.") from e
    where = root / folder
    xs = [_cifar_images(split.data, where) for split in (train, test)]
    ys = [_labels(np.asarray(split.targets), classes, where) for split in (train, test)]
    return _subset(cfg, xs, ys, classes, mean, std, pad=4, where=where)


def _cifar_images(data: np.ndarray, where: Path) -> Tensor:
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (32, 32, 3):
        raise DataError(f"{where}: expected uint8 images of 32x32x3, got {data.dtype} {data.shape}")
    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))


def _labels(y: np.ndarray, num_classes: int, where: Path) -> Tensor:
    if y.ndim != 1 or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise DataError(f"{where}: labels must be class indices 0..{num_classes - 1}")
    return torch.from_numpy(y.astype(np.int64))


def _subset(cfg: DataConfig, xs: list[Tensor], ys: list[Tensor], num_classes: int, mean: Sequence[float],
            std: Sequence[float], pad: int, where: Path | str) -> TensorSource:
    (train_x, test_x), (train_y, test_y) = xs, ys
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DataError(f"{where}: {len(train_x)}/{len(test_x)} train/test images but "
                        f"{len(train_y)}/{len(test_y)} labels")
    test_n = _take(cfg.test_size, len(test_x), "test_size", where)
    keep, held = training_indices(cfg, train_y, num_classes, where)
    validation = None if held is None else (train_x[held], train_y[held])
    return TensorSource(train_x[keep], train_y[keep], test_x[:test_n], test_y[:test_n],
                        num_classes, mean, std, pad, validation=validation)


VALIDATION_SEED = 0x7A11DA7E  # one fixed draw: the same validation images for every run, seed and subset


def training_indices(cfg: DataConfig, labels: Tensor, num_classes: int, where: Path | str
                     ) -> tuple[Tensor, Tensor | None]:
    """(training indices, validation indices or None) of a training file: ``validation_per_class`` images of each
    class drawn once under a fixed seed, and the training set (its first ``train_size`` images, or a per-class
    subset) from the others, so no training subset ever holds a validation image."""
    held = None
    if cfg.validation_per_class is not None:
        held = per_class_indices(labels, num_classes, cfg.validation_per_class, VALIDATION_SEED,
                                 f"{where} (validation_per_class)")
    free = torch.ones(len(labels), dtype=torch.bool)
    if held is not None:
        free[held] = False
    if cfg.per_class is None:
        pool = free.nonzero().squeeze(1)
        return pool[:_take(cfg.train_size, len(pool), "train_size", where)], held
    return per_class_indices(labels, num_classes, cfg.per_class, cfg.subset_seed, where, allowed=free), held


def per_class_indices(labels: Tensor, num_classes: int, per_class: int, seed: int | str | None,
                      where: Path | str, allowed: Tensor | None = None) -> Tensor:
    """Indices of ``per_class`` images of each class, in file order: each class's first ones, or a draw
    under ``seed`` (a permutation of the whole training set, read class by class), among the ``allowed`` ones
    (a boolean mask; all by default)."""
    if seed == "run":
        raise ConfigError("subset_seed: 'run' is resolved to the run's seed by the plan; a run spec needs an integer")
    order = torch.arange(len(labels))
    if seed is not None:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_mix(int(seed), 0x5EB5E7)))
    if allowed is not None:
        order = order[allowed[order]]
    chosen = []
    for c in range(num_classes):
        members = order[labels[order] == c]
        if len(members) < per_class:
            raise ConfigError(f"per_class: {per_class} requested but {where} has only {len(members)} images "
                              f"of class {c}")
        chosen.append(members[:per_class])
    return torch.cat(chosen).sort().values


def _take(wanted: int | None, available: int, key: str, where: Path | str) -> int:
    if wanted is None:
        return available
    if wanted > available:
        raise ConfigError(f"{key}: {wanted} requested but {where} has only {available} images")
    return wanted


# --- Fashion-MNIST ------------------------------------------------------------------------------

def _fashion_mnist(cfg: DataConfig, root: Path) -> TensorSource:
    paths = fmnist_files(root)
    if any(p is None for p in paths.values()) and cfg.download:
        _download_fashion_mnist(root)
        paths = fmnist_files(root)
    missing = [FMNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataError(f"Fashion-MNIST not found in {root}: missing {', '.join(missing)} "
                        f"(.gz or uncompressed, "
                        f"directly in {root} or in {root / 'FashionMNIST' / 'raw'}). On Debian/Ubuntu run "
                        f"`apt-get install dataset-fashion-mnist` "
                        f"(installs /usr/share/datasets/fashion-mnist), "
                        f"or set `download: true` in the dataset config.")
    arrays = {k: read_idx(p) for k, p in paths.items() if p is not None}
    for split in ("train", "test"):
        images = arrays[f"{split}_x"]
        if images.ndim != 3:
            raise DataError(f"{paths[f'{split}_x']}: expected images (IDX with 3 dimensions), "
                            f"got {images.shape}")
        if arrays[f"{split}_y"].ndim != 1:
            raise DataError(f"{paths[f'{split}_y']}: expected labels (IDX with 1 dimension)")
    xs = [torch.from_numpy(arrays[k]).unsqueeze(1) for k in ("train_x", "test_x")]
    if xs[0].shape[1:] != xs[1].shape[1:] or min(xs[0].shape[2:]) <= 4:
        raise DataError(f"{root}: train and test images must share a size larger than 4x4, "
                        f"got {tuple(xs[0].shape[2:])} and {tuple(xs[1].shape[2:])}")
    ys = [_labels(arrays[k], 10, paths[k] or root) for k in ("train_y", "test_y")]
    return _subset(cfg, xs, ys, 10, FMNIST_MEAN, FMNIST_STD, pad=4, where=root)


def _download_fashion_mnist(root: Path) -> None:
    import torchvision

    try:
        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
    except (RuntimeError, OSError) as e:
        raise DataError(f"could not download Fashion-MNIST into {root} ({e}); on Debian/Ubuntu run "
                        f"`apt-get install dataset-fashion-mnist` instead") from e


_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path | str) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, optionally gzipped) as an array; a damaged file is a DataError
    rather than a silently short or garbled dataset."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable or truncated ({e}); reinstall or re-download the dataset") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected} bytes) "
                        f"but the file has {len(raw)} bytes; "
                        f"it is truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


# --- synthetic ----------------------------------------------------------------------------------

def _synthetic(cfg: DataConfig) -> TensorSource:
    """Each class is a fixed smooth random pattern; each image is its class pattern plus pixel noise.

    Smooth patterns survive the flip/shift augmentation, so a small network learns them in a few epochs.
    """
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    coarse = torch.randn(cfg.num_classes, cfg.channels, 4, 4, generator=g)
    patterns = torch.nn.functional.interpolate(coarse, size=(cfg.size, cfg.size), mode="bilinear",
                                               align_corners=True)
    patterns = patterns / patterns.flatten(1).std(1).view(-1, 1, 1, 1)

    def split(n: int, seed: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        y = torch.randperm(n, generator=g) % cfg.num_classes
        noise = torch.randn(n, cfg.channels, cfg.size, cfg.size, generator=g)
        x = 128 + 45 * patterns[y] + 25 * noise
        return x.round().clamp(0, 255).to(torch.uint8), y

    (train_x, train_y), (test_x, test_y) = split(cfg.synthetic_train, 1), split(cfg.synthetic_test, 2)
    test_n = _take(cfg.test_size, len(test_x), "test_size", "synthetic data (see synthetic_test)")
    keep, held = training_indices(cfg, train_y, cfg.num_classes, "synthetic data (see synthetic_train)")
    validation = None if held is None else (train_x[held], train_y[held])
    train_x, train_y, test_x, test_y = train_x[keep], train_y[keep], test_x[:test_n], test_y[:test_n]
    pixels = train_x.float().div(255)
    mean = pixels.mean((0, 2, 3)).tolist()
    std = pixels.std((0, 2, 3)).clamp_min(1e-3).tolist()
    return TensorSource(train_x, train_y, test_x, test_y, cfg.num_classes, mean, std, pad=2, validation=validation)


# --- ImageFolder --------------------------------------------------------------------------------

class _Transformed(Dataset):
    """Seeds each image's random transform from ``(epoch seed, index)``, so augmentation does not depend on
    how many workers load the data or on which worker gets an image (``seed=None``: no randomness)."""

    def __init__(self, base: Dataset, transform: Callable[[Any], Tensor], seed: int | None) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.base[index]
        if self.seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, index))
            return self.transform(image), label


class Lighting:
    """fb.resnet.torch's ``Lighting`` (AlexNet's PCA colour noise) on a (3, H, W) RGB tensor in [0, 1]: every
    pixel gets the same RGB offset, the eigenvectors weighted by alpha * eigenvalue, alpha ~ N(0, alphastd)."""

    def __init__(self, alphastd: float = FB_LIGHTING, eigval: Sequence[float] = FB_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = FB_EIGVEC) -> None:
        self.alphastd = alphastd
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def offset(self, alpha: Tensor) -> Tensor:
        """rgb_i = sum_j eigvec[i, j] * alpha_j * eigval_j."""
        return self.eigvec @ (alpha * self.eigval)

    def __call__(self, image: Tensor) -> Tensor:
        if self.alphastd == 0:
            return image
        alpha = torch.empty(3).normal_(0.0, self.alphastd)  # the global generator: seeded per image
        return image + self.offset(alpha).view(3, 1, 1)


def _folder_transform(augment: str, image_size: int) -> Callable[[Any], Tensor]:
    """An image folder's transform from a PIL image to a normalised ``image_size`` square tensor.

    ``crop+flip``: ImageNet's random-resized crop and a flip. ``scale+crop+flip``: the paper's CUB/Scenes
    recipe (4.2.1: "rescale to 256 in one dimension and then take a random crop" of 224): shorter side to
    256/224 of ``image_size``, a random ``image_size`` crop and a flip. ``crop+jitter+lighting+flip``:
    fb.resnet.torch's ImageNet training transform (datasets/imagenet.lua): the random-resized crop, brightness,
    contrast and saturation jitter of 0.4 in random order, PCA lighting of 0.1 on the [0, 1] pixels, then the
    normalisation and a flip (a flip commutes with these per-pixel steps). ``flip``: the test geometry and a
    flip. ``none``: the test transform, ImageNet's (shorter side to 256/224 of ``image_size``, centre crop).
    """
    from torchvision import transforms as T

    side = round(image_size * 256 / 224)
    steps = {
        "crop+flip": [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()],
        "scale+crop+flip": [T.Resize(side), T.RandomCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()],
        "crop+jitter+lighting+flip": [T.RandomResizedCrop(image_size),
                                      T.ColorJitter(brightness=FB_JITTER, contrast=FB_JITTER, saturation=FB_JITTER),
                                      T.ToTensor(), Lighting(), T.RandomHorizontalFlip()],
        "flip": [T.Resize(side), T.CenterCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()],
        "none": [T.Resize(side), T.CenterCrop(image_size), T.ToTensor()],
    }[augment]
    return T.Compose([*steps, T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class FolderSource(Source):
    """``root/train`` and ``root/val`` in ImageFolder layout, decoded on the fly by DataLoader workers.
    Trains with ``crop+flip`` unless :func:`set_augmentation` says otherwise."""

    def __init__(self, train: Dataset, test: Dataset, num_classes: int, image_size: int) -> None:
        self.train, self.test = train, test
        self.num_classes = num_classes
        self.input_shape = (3, image_size, image_size)
        self.train_size, self.test_size = len(train), len(test)  # type: ignore[arg-type]
        self.train_transform = _folder_transform("crop+flip", image_size)
        self.test_transform = _folder_transform("none", image_size)
        self.device = torch.device("cpu")
        self.num_workers = min(4, os.cpu_count() or 1)

    def to(self, device: torch.device) -> FolderSource:
        self.device = torch.device(device)
        return self

    def digest(self, split: str) -> str:
        """By file: each image's path below the split's folder, its size and label, in order. Not their content:
        reading every image of an ImageNet to hash it would cost as much as an epoch."""
        dataset = _split(self, split, self.train, self.test)
        indices = list(range(len(dataset)))  # type: ignore[arg-type]
        while isinstance(dataset, Subset):  # a per-class or evenly spread subset of the folder
            indices = [int(dataset.indices[i]) for i in indices]
            dataset = dataset.dataset
        h = hashlib.sha256()
        for i in indices:
            path, label = dataset.samples[i]  # type: ignore[attr-defined]
            h.update(f"{os.path.relpath(path, dataset.root)}\t{os.path.getsize(path)}\t{label}\n".encode())  # type: ignore[attr-defined]
        return h.hexdigest()

    def _loader(self, dataset: Dataset, batch_size: int, generator: torch.Generator | None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                          num_workers=self.num_workers, pin_memory=self.device.type == "cuda")

    def _batches(self, loader: DataLoader, train: bool, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in loader:
            if train and len(x) < min(2, batch_size):
                return
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        seed = _mix(seed, epoch)
        g = torch.Generator().manual_seed(seed)
        dataset = _Transformed(self.train, self.train_transform, seed)
        return self._batches(self._loader(dataset, batch_size, g), True, batch_size)

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        dataset = _Transformed(self.test, self.test_transform, None)
        return self._batches(self._loader(dataset, batch_size, None), False, batch_size)


def _imagefolder(cfg: DataConfig, root: Path) -> FolderSource:
    from torchvision.datasets import ImageFolder

    splits = []
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"ImageFolder dataset: {folder} is missing; {root} must contain train/ and val/, "
                            f"each with one sub-directory of images per class (e.g. ImageNet's layout)")
        try:
            dataset = ImageFolder(str(folder))
        except OSError as e:
            raise DataError(f"ImageFolder dataset: no images in {folder} ({e})") from e
        splits.append(dataset)
    train, val = splits
    if train.classes != val.classes:
        raise DataError(f"ImageFolder dataset: {root}/train has {len(train.classes)} classes and {root}/val "
                        f"has {len(val.classes)}, or they are named differently; they must match")
    for dataset in splits:
        path = dataset.samples[0][0]
        try:
            dataset.loader(path)
        except OSError as e:
            raise DataError(f"ImageFolder dataset: cannot read image {path} ({e})") from e
    parts = [_spread(d, cfg.train_size if d is train else cfg.test_size, key, Path(d.root))
             for d, key in ((train, "train_size"), (val, "test_size"))]
    if cfg.per_class is not None:
        keep = per_class_indices(torch.tensor(train.targets), len(train.classes), cfg.per_class, cfg.subset_seed,
                                 Path(train.root))
        parts[0] = Subset(train, keep.tolist())
    return FolderSource(parts[0], parts[1], len(train.classes), cfg.image_size)


def _spread(dataset: Any, wanted: int | None, key: str, where: Path) -> Dataset:
    """An evenly spaced subset: ImageFolder sorts by class, so its first N images would be one class."""
    n = _take(wanted, len(dataset), key, where)
    if n == len(dataset):
        return dataset
    return Subset(dataset, [i * len(dataset) // n for i in range(n)])


# --- entry point --------------------------------------------------------------------------------

def load(cfg: DataConfig) -> Source:
    """The dataset ``cfg`` names, on the CPU, checked: a missing or corrupt dataset fails here, not later."""
    cfg.check()
    if cfg.name == "synthetic":
        return _synthetic(cfg)
    root = cfg.path
    assert root is not None
    if cfg.name == "imagefolder":
        return _imagefolder(cfg, root)
    if not root.is_dir() and not cfg.download:
        hint = ("run `apt-get install dataset-fashion-mnist`" if cfg.name == "fashion-mnist"
                else f"place {CIFARS[cfg.name][1]} there")
        raise DataError(f"{cfg.name}: dataset directory {root} does not exist; {hint}, point `root` at the "
                        f"data, or set `download: true`")
    return _cifar(cfg, root) if cfg.name in CIFARS else _fashion_mnist(cfg, root)


__all__ = ["DataConfig", "DataError", "FolderSource", "Source", "TensorSource", "load", "read_idx"]
