import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from atlib.data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Lighting,
    TensorSource,
    load,
    read_idx,
    set_augmentation,
)
from atlib.errors import ConfigError
from atlib.spec import DataConfig, DataError

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def batches(it):
    return [(x.clone(), y.clone()) for x, y in it]


def same(a, b) -> bool:
    if len(a) != len(b):
        return False
    return all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))


def raw_pixels(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the normalisation of a batch, back to exact uint8 values."""
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return ((x * s + m) * 255).round().to(torch.uint8)


# --- CIFAR-10 in its real on-disk format ---------------------------------------------------------

class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (as the real CIFAR files, made by Python 2, do): Python 3 reads them
    back as b"data" with encoding="bytes" and as "data" with torchvision's encoding="latin1"."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_py2_pickle(path: Path, obj) -> str:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_cifar(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_list, splits = [], {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        entry = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
        md5 = write_py2_pickle(folder / name, entry)
        train_list.append([name, md5])
        splits[name] = (data, labels)
    meta_md5 = write_py2_pickle(folder / "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)],
                                                          b"num_vis": 3072})
    return train_list[:5], train_list[5:], meta_md5, splits


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    train_list, test_list, meta_md5, splits = make_cifar(tmp_path)
    C = torchvision.datasets.CIFAR10
    monkeypatch.setattr(C, "train_list", train_list)
    monkeypatch.setattr(C, "test_list", test_list)
    monkeypatch.setattr(C, "meta", {**C.meta, "md5": meta_md5})
    return tmp_path, splits


def test_cifar_files_look_like_the_real_ones(cifar):
    root, _ = cifar
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    assert {b"data", b"labels"} <= set(entry) and entry[b"data"].dtype == np.uint8
    assert entry[b"data"].shape == (4, 3072)


def test_cifar_round_trip(cifar):
    root, splits = cifar
    src = load(DataConfig("cifar10", root=str(root)))
    assert (src.num_classes, src.input_shape, src.train_size, src.test_size) == (10, (3, 32, 32), 20, 6)
    train = np.concatenate([splits[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((splits[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    # each row is 1024 red, then green, then blue values, each image row-major: that is CHW
    assert torch.equal(src.train_x, torch.from_numpy(train.reshape(-1, 3, 32, 32)))
    assert src.train_y.tolist() == labels
    x, y = next(src.test_batches(100))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(raw_pixels(x, CIFAR_MEAN, CIFAR_STD),
                       torch.from_numpy(splits["test_batch"][0].reshape(-1, 3, 32, 32)))
    assert y.tolist() == splits["test_batch"][1]
    assert src.train_x[0, 0, 0, 1] == train[0, 1] and src.train_x[0, 1, 0, 0] == train[0, 1024]


def test_cifar_corrupt_or_missing_is_a_data_error(cifar, tmp_path):
    root, _ = cifar
    with open(root / "cifar-10-batches-py" / "data_batch_3", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match="download: true") as e:
        load(DataConfig("cifar10", root=str(root)))
    assert str(root) in str(e.value)
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load(DataConfig("cifar10", root=str(empty)))
    with pytest.raises(DataError, match=str(tmp_path / "absent")):
        load(DataConfig("cifar10", root=str(tmp_path / "absent")))


# --- CIFAR-100 in its real on-disk format ------------------------------------------------------------

def make_cifar100(root: Path, n_train: int = 7, n_test: int = 5, seed: int = 0):
    """cifar-100-python/{train, test, meta} as the real release writes them: one pickle per split, rows of 3072
    bytes, 100 fine labels and 20 coarse ones."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    md5s, splits = {}, {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        entry = {b"filenames": [b"img%d.png" % i for i in range(n)], b"batch_label": name.encode(),
                 b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": data}
        md5s[name] = write_py2_pickle(folder / name, entry)
        splits[name] = (data, fine)
    md5s["meta"] = write_py2_pickle(folder / "meta", {b"fine_label_names": [b"f%d" % i for i in range(100)],
                                                      b"coarse_label_names": [b"c%d" % i for i in range(20)]})
    return md5s, splits


@pytest.fixture
def cifar100(tmp_path, monkeypatch):
    md5s, splits = make_cifar100(tmp_path)
    C = torchvision.datasets.CIFAR100
    monkeypatch.setattr(C, "train_list", [["train", md5s["train"]]])
    monkeypatch.setattr(C, "test_list", [["test", md5s["test"]]])
    monkeypatch.setattr(C, "meta", {**C.meta, "md5": md5s["meta"]})
    return tmp_path, splits


def test_cifar100_round_trip_with_its_fine_labels(cifar100):
    root, splits = cifar100
    src = load(DataConfig("cifar100", root=str(root)))
    assert (src.num_classes, src.input_shape, src.train_size, src.test_size) == (100, (3, 32, 32), 7, 5)
    assert torch.equal(src.train_x, torch.from_numpy(splits["train"][0].reshape(-1, 3, 32, 32)))
    assert src.train_y.tolist() == splits["train"][1]  # the fine labels, not the coarse ones (fine // 5)
    x, y = next(src.test_batches(100))
    assert torch.equal(raw_pixels(x, CIFAR100_MEAN, CIFAR100_STD),
                       torch.from_numpy(splits["test"][0].reshape(-1, 3, 32, 32)))
    assert y.tolist() == splits["test"][1]


def test_cifar100_missing_or_corrupt_says_which_folder(cifar100, tmp_path):
    root, _ = cifar100
    with open(root / "cifar-100-python" / "train", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match=r"CIFAR-100 not found or corrupt .*cifar-100-python directory"):
        load(DataConfig("cifar100", root=str(root)))
    with pytest.raises(DataError, match=r"place cifar-100-python there"):
        load(DataConfig("cifar100", root=str(tmp_path / "absent")))
    assert DataConfig.from_config({"name": "cifar100", "download": True}).path == Path("data/cifar100")


def test_a_plan_takes_cifar100_and_checks_its_files(cifar100, tmp_path):
    from atlib import preflight
    from atlib.plan import build_plan, missing_data, validate_config

    root, _ = cifar100
    held = preflight.holdings(DataConfig("cifar100", root=str(root)))  # CIFAR-100's published sizes
    assert (held.train, held.test, held.num_classes, held.train_per_class) == (50_000, 10_000, 100, (500,) * 100)
    config = {"name": "c100", "datasets": {"c100": {"name": "cifar100", "root": str(tmp_path / "absent")}},
              "tables": {"t": {"dataset": "c100", "recipe": "paper", "columns": ["student"],
                               "rows": [{"student": "wrn-16-1"}]}}}
    validate_config(config)
    assert missing_data(build_plan(config)) == [f"dataset 'cifar100': root {tmp_path / 'absent'} does not exist "
                                                "(put cifar-100-python there, or set download: true)"]
    (root / "cifar-100-python" / "test").unlink()
    with pytest.raises(preflight.Missing, match="lacks test"):
        preflight.holdings(DataConfig("cifar100", root=str(root)))


# --- Fashion-MNIST IDX files ---------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    code = 0x0800 | array.ndim
    return struct.pack(">I", code) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def make_fmnist(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(array))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


def test_fashion_mnist_round_trip(tmp_path):
    arrays = make_fmnist(tmp_path)
    src = load(DataConfig("fashion-mnist", root=str(tmp_path)))
    assert (src.num_classes, src.input_shape, src.train_size, src.test_size) == (10, (1, 28, 28), 12, 5)
    assert torch.equal(src.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert src.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    x, y = next(src.test_batches(5))
    images = torch.from_numpy(arrays["t10k-images-idx3-ubyte"])
    assert torch.equal(raw_pixels(x, (0.2860,), (0.3530,))[:, 0], images)
    assert y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_torchvision_layout_uncompressed(tmp_path):
    arrays = make_fmnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    src = load(DataConfig("fashion-mnist", root=str(tmp_path), train_size=7, test_size=3))
    assert (src.train_size, src.test_size) == (7, 3)
    assert torch.equal(src.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"][:7]))
    assert src.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"][:3].tolist()
    with pytest.raises(ConfigError, match="train_size"):
        load(DataConfig("fashion-mnist", root=str(tmp_path), train_size=13))


def test_read_idx_big_endian_dims(tmp_path):
    array = np.arange(2 * 300 * 3, dtype=np.uint8).reshape(2, 300, 3)  # 300 > 255: needs all 4 bytes
    (tmp_path / "a").write_bytes(idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a"), array)


@pytest.mark.parametrize("damage", ["truncated-gzip", "short-payload", "long-payload", "bad-magic"])
def test_fashion_mnist_damaged_file(tmp_path, damage):
    make_fmnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if damage == "truncated-gzip":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        raw = {"short-payload": raw[:-1], "long-payload": raw + b"\0", "bad-magic": b"\1" + raw[1:]}[damage]
        path.write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match=str(path)):
        load(DataConfig("fashion-mnist", root=str(tmp_path)))


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as e:
        load(DataConfig("fashion-mnist", root=str(tmp_path / "nowhere")))
    assert str(tmp_path / "nowhere") in str(e.value)
    make_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as e:
        load(DataConfig("fashion-mnist", root=str(tmp_path)))
    assert "download: true" in str(e.value) and str(tmp_path) in str(e.value)


@pytest.mark.skipif(not REAL_FMNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    src = load(DataConfig("fashion-mnist"))
    assert (src.num_classes, src.input_shape) == (10, (1, 28, 28))
    assert (src.train_size, src.test_size) == (60000, 10000)
    assert sorted(src.train_y.unique().tolist()) == list(range(10))
    assert torch.bincount(src.test_y).tolist() == [1000] * 10
    x = torch.cat([x for x, _ in src.test_batches(5000)])
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02


# --- ImageFolder ---------------------------------------------------------------------------------

def make_folder(root: Path, per_class: dict[str, int]) -> None:
    """Textured images (so crops differ) whose dominant channel is the class: red or blue."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name, n in per_class.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 100, (12, 10 + i, 3), dtype=np.uint8)
                pixels[..., 0 if name == "red" else 2] += 155
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_imagefolder_batches(tmp_path):
    make_folder(tmp_path, {"blue": 3, "red": 4})
    src = load(DataConfig("imagefolder", root=str(tmp_path), image_size=8))
    assert (src.num_classes, src.input_shape, src.train_size, src.test_size) == (2, (3, 8, 8), 7, 7)
    first = batches(src.train_batches(0, 0, 3))
    assert [len(x) for x, _ in first] == [3, 3]  # the seventh image would be a batch of one: dropped
    assert all(x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32 for x, _ in first)
    for x, y in first:  # the label follows the image through the shuffle: blue is class 0, red class 1
        assert torch.equal((x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))).long(), y)
    assert same(first, batches(src.train_batches(0, 0, 3)))
    assert not same(first, batches(src.train_batches(1, 0, 3)))
    src.num_workers, rng_state = 0, torch.get_rng_state()  # in-process loading: same batches, global RNG kept
    assert same(first, batches(src.train_batches(0, 0, 3)))
    assert torch.equal(rng_state, torch.get_rng_state())
    test = batches(src.test_batches(4))
    assert [len(x) for x, _ in test] == [4, 3]
    assert torch.cat([y for _, y in test]).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_imagefolder_subset_and_errors(tmp_path):
    make_folder(tmp_path, {"blue": 3, "red": 3})
    src = load(DataConfig("imagefolder", root=str(tmp_path), image_size=8, train_size=4, test_size=2))
    assert (src.train_size, src.test_size) == (4, 2)
    assert torch.cat([y for _, y in src.test_batches(8)]).tolist() == [0, 1]  # spread over the classes
    (tmp_path / "val" / "blue" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=str(tmp_path / "val" / "blue" / "0.png")):
        load(DataConfig("imagefolder", root=str(tmp_path), image_size=8))
    for path in (tmp_path / "val" / "red").iterdir():
        path.unlink()
    (tmp_path / "val" / "red").rmdir()
    with pytest.raises(DataError, match="classes"):
        load(DataConfig("imagefolder", root=str(tmp_path), image_size=8))
    with pytest.raises(DataError, match=str(tmp_path / "missing" / "train")):
        load(DataConfig("imagefolder", root=str(tmp_path / "missing")))


# --- image-folder augmentation --------------------------------------------------------------------

# The paper's 224 crop of images rescaled to 256, at a quarter of the size: 56 * 256 / 224 = 64, so a 32-pixel
# shorter side is doubled. PIL resizes each image by hand: landscape 32x96 -> 64x192, portrait 96x32 -> 192x64.
IMAGE_SIZE = 56
RESCALED = {"landscape": ((32, 96), (64, 192)), "portrait": ((96, 32), (192, 64))}
CENTRE = {"landscape": (4, 68), "portrait": (68, 4)}  # top-left of the centre 56 crop: (64-56)/2, (192-56)/2
CELL = 4  # checkerboard cells: 8 pixels wide after the 2x rescale


def pattern(height: int, width: int) -> np.ndarray:
    """Red: a checkerboard of CELL-pixel squares, whose scale shows in the run lengths of red and black pixels;
    green and blue: ramps along the columns and down the rows, so every window of the image is unique."""
    y, x = np.mgrid[:height, :width]
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = 255 * ((y // CELL + x // CELL) % 2)
    pixels[..., 1] = x * 255 // (width - 1)
    pixels[..., 2] = y * 255 // (height - 1)
    return pixels


def make_pattern_folder(root: Path) -> list[torch.Tensor]:
    """One pattern image per class (landscape is class 0, portrait class 1) in train/ and val/; returns each
    image rescaled by PIL so its shorter side is 64, as (C, H, W) uint8 tensors indexed by class."""
    rescaled = []
    for name, ((h, w), (h2, w2)) in RESCALED.items():
        image = Image.fromarray(pattern(h, w))
        for split in ("train", "val"):
            (root / split / name).mkdir(parents=True)
            image.save(root / split / name / "0.png")
        resized = np.asarray(image.resize((w2, h2), Image.BILINEAR))
        rescaled.append(torch.from_numpy(resized.copy()).permute(2, 0, 1))
    return rescaled


def pattern_samples(src, augment: str | None, epochs: int = 6) -> list[tuple[torch.Tensor, int]]:
    """Training samples as uint8 (C, H, W) images with their labels, after ``set_augmentation(augment)``."""
    if augment is not None:
        set_augmentation(src, augment)
    samples = []
    for epoch in range(epochs):
        for x, y in src.train_batches(epoch, 0, 2):
            samples += zip(raw_pixels(x, IMAGENET_MEAN, IMAGENET_STD), y.tolist(), strict=True)
    return samples


def windows_of(sample: torch.Tensor, image: torch.Tensor) -> list[tuple[int, int, bool]]:
    """Every (top, left, mirrored) where ``sample`` is a square window of ``image``, or that window mirrored."""
    size = sample.shape[-1]
    windows = image.unfold(1, size, 1).unfold(2, size, 1)  # (C, tops, lefts, size, size)
    found = []
    for mirrored in (False, True):
        target = sample.flip(-1) if mirrored else sample
        hits = (windows == target[:, None, None]).flatten(3).all(3).all(0).nonzero().tolist()
        found += [(top, left, mirrored) for top, left in hits]
    return found


def interior_runs(line: torch.Tensor) -> list[int]:
    """Lengths of the runs of equal values in ``line``, less the first and last, which a crop may cut."""
    changes = (line[1:] != line[:-1]).nonzero().flatten().tolist()
    return [b - a for a, b in zip(changes, changes[1:], strict=False)]


def test_imagefolder_scale_crop_flip_crops_the_image_rescaled_to_256_of_224(tmp_path):
    rescaled = make_pattern_folder(tmp_path)
    src = load(DataConfig("imagefolder", root=str(tmp_path), image_size=IMAGE_SIZE))
    src.num_workers = 0
    placements = set()
    for sample, label in pattern_samples(src, "scale+crop+flip"):
        assert sample.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
        red = sample[0] > 127
        runs = [n for line in (*red, *red.T) for n in interior_runs(line)]
        assert runs and set(runs) == {2 * CELL}  # along rows and columns: both sides scaled 2x
        where = windows_of(sample, rescaled[label])
        assert len(where) == 1  # a window of the PIL-rescaled image, found in one place only
        placements.add((label, *where[0]))
    assert len({(top, left) for _, top, left, _ in placements}) > 3  # a random crop, not the centre
    assert {mirrored for *_, mirrored in placements} == {False, True}
    # the default, ImageNet's random-resized crop, is no window of the image rescaled to 64
    default = pattern_samples(load(DataConfig("imagefolder", root=str(tmp_path), image_size=IMAGE_SIZE)), None)
    assert all(sample.shape == (3, IMAGE_SIZE, IMAGE_SIZE) for sample, _ in default)
    assert not all(windows_of(sample, rescaled[label]) for sample, label in default)


def test_imagefolder_flip_and_none_keep_the_test_geometry(tmp_path):
    rescaled = make_pattern_folder(tmp_path)
    src = load(DataConfig("imagefolder", root=str(tmp_path), image_size=IMAGE_SIZE))
    src.num_workers = 0
    centres = []
    for image, (top, left) in zip(rescaled, CENTRE.values(), strict=True):
        centres.append(image[:, top:top + IMAGE_SIZE, left:left + IMAGE_SIZE])
    test_x, test_y = next(src.test_batches(2))
    assert test_y.tolist() == [0, 1]
    assert all(torch.equal(x, c) for x, c in zip(raw_pixels(test_x, IMAGENET_MEAN, IMAGENET_STD), centres,
                                                  strict=True))
    mirrored = []
    for sample, label in pattern_samples(src, "flip"):
        assert torch.equal(sample, centres[label]) or torch.equal(sample, centres[label].flip(-1))
        mirrored.append(not torch.equal(sample, centres[label]))
    assert any(mirrored) and not all(mirrored)
    assert all(torch.equal(sample, centres[label]) for sample, label in pattern_samples(src, "none"))


def test_scale_crop_flip_is_for_image_folders_only():
    src = unique_source(pad=4)
    with pytest.raises(ConfigError, match=r"recipe\.augment: 'scale\+crop\+flip'.*imagefolder"):
        set_augmentation(src, "scale+crop+flip")
    with pytest.raises(ConfigError, match=r"recipe\.augment: 'crop\+jitter\+lighting\+flip'.*imagefolder"):
        set_augmentation(src, "crop+jitter+lighting+flip")
    with pytest.raises(ConfigError, match=r"recipe\.augment: expected one of crop\+flip, .*'jitter'"):
        set_augmentation(src, "jitter")
    assert (src.pad, src.flip) == (4, True)  # a refused setting leaves the source's own crop and flip


# --- augmentation --------------------------------------------------------------------------------

def unique_source(n: int = 10, pad: int = 4, size: int = 9) -> TensorSource:
    """Distinct images, each labelled with its own index: a batch says which image each sample came from."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 2, size, size + 1), generator=g, dtype=torch.uint8)
    y = torch.arange(n)
    return TensorSource(x, y, x.clone(), y.clone(), n, mean=(0.0, 0.0), std=(1.0, 1.0), pad=pad)


def test_same_seed_and_epoch_same_batches():
    src = unique_source()
    a = batches(src.train_batches(3, 7, 4))
    torch.manual_seed(123)  # the global RNG plays no part
    batches(src.train_batches(0, 7, 4))
    assert same(a, batches(src.train_batches(3, 7, 4)))
    assert not same(a, batches(src.train_batches(4, 7, 4)))
    assert not same(a, batches(src.train_batches(3, 8, 4)))


def test_every_sample_is_a_window_of_the_reflect_padded_image():
    pad, src = 3, unique_source(pad=3)
    raw = src.train_x
    _, h, w = src.input_shape
    padded = F.pad(raw.float(), (pad,) * 4, mode="reflect")
    flipped, shifts = 0, set()
    for epoch in range(4):
        seen = []
        for x, y in src.train_batches(epoch, 0, 4):
            seen += y.tolist()
            for image, label in zip(x, y, strict=True):
                matches = [(dy, dx, flip) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                           for flip in (False, True)
                           if torch.equal(padded[label, :, dy:dy + h, dx:dx + w].flip(-1) if flip
                                          else padded[label, :, dy:dy + h, dx:dx + w], (image * 255).round())]
                assert matches, f"sample of image {label} is no window of its padded image"
                flipped += matches[0][2]
                shifts.add(matches[0][:2])
        assert sorted(seen) == list(range(10)) and seen != list(range(10))  # a permutation, shuffled
    assert 0 < flipped < 40 and len(shifts) > 10


def test_hand_built_crop_of_one_sample():
    src = unique_source(n=3, pad=2, size=5)
    x, y = next(src.train_batches(0, 0, 3))
    padded = F.pad(src.train_x.float(), (2, 2, 2, 2), mode="reflect")
    # the padded image built by hand: reflect excludes the edge pixel itself
    img = src.train_x[int(y[0])].float()
    rows = [2, 1, 0, 1, 2, 3, 4, 3, 2]
    assert torch.equal(padded[int(y[0])], img[:, rows][:, :, [2, 1, 0, 1, 2, 3, 4, 5, 4, 3]])
    flips_seen = set()
    for epoch in range(6):
        for x, y in src.train_batches(epoch, 0, 3):
            for image, label in zip(x, y, strict=True):
                window = (image * 255).round()
                if not any(torch.equal(padded[label, :, i:i + 5, j:j + 6], window)
                           for i in range(5) for j in range(5)):
                    mirrored = window.flip(-1)
                    assert any(torch.equal(padded[label, :, i:i + 5, j:j + 6], mirrored)
                               for i in range(5) for j in range(5))
                    flips_seen.add(True)
    assert flips_seen == {True}


def test_last_batch_rule():
    src = unique_source(n=10)
    assert [len(x) for x, _ in src.train_batches(0, 0, 3)] == [3, 3, 3]  # a batch of 1 is dropped
    assert [len(x) for x, _ in src.train_batches(0, 0, 4)] == [4, 4, 2]  # a batch of 2 is kept
    assert [len(x) for x, _ in src.test_batches(3)] == [3, 3, 3, 1]  # testing keeps every image
    assert [len(x) for x, _ in src.train_batches(0, 0, 1)] == [1] * 10


def test_synthetic_normalised_and_test_unaugmented():
    cfg = DataConfig("synthetic")
    src = load(cfg)
    assert (src.num_classes, src.input_shape, src.train_size, src.test_size) == (10, (1, 16, 16), 512, 256)
    x = torch.cat([x for x, _ in src.train_batches(0, 0, 100)])
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    test = torch.cat([x for x, _ in src.test_batches(100)])
    assert torch.equal(test, src.normalise(src.test_x))  # no augmentation
    assert same(batches(src.test_batches(64)), batches(src.test_batches(64)))
    again = load(cfg)
    assert torch.equal(again.train_x, src.train_x) and torch.equal(again.test_y, src.test_y)
    assert torch.bincount(src.train_y).tolist() == [512 // 10 + (i < 2) for i in range(10)]


def test_synthetic_classes_are_separable():
    src = load(DataConfig("synthetic", channels=3, size=12, num_classes=4))
    assert src.input_shape == (3, 12, 12)
    x_train, x_test = src.train_x.float().flatten(1), src.test_x.float().flatten(1)
    centres = torch.stack([x_train[src.train_y == c].mean(0) for c in range(4)])
    nearest = torch.cdist(x_test, centres).argmin(1)
    assert (nearest == src.test_y).float().mean() > 0.9


def test_subsets_are_prefixes():
    full = load(DataConfig("synthetic"))
    part = load(DataConfig("synthetic", train_size=100, test_size=50))
    assert (part.train_size, part.test_size) == (100, 50)
    assert torch.equal(part.train_x, full.train_x[:100]) and torch.equal(part.test_y, full.test_y[:50])
    assert sum(len(x) for x, _ in part.train_batches(0, 0, 32)) == 100


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_sees_the_cpu_batches():
    cpu = batches(unique_source().train_batches(2, 5, 4))
    gpu = [(x.cpu(), y.cpu()) for x, y in unique_source().to(torch.device("cuda")).train_batches(2, 5, 4)]
    assert len(cpu) == len(gpu)
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):  # same images; floats may differ in the last bit
        assert torch.equal(yc, yg) and torch.allclose(xc, xg, rtol=1e-6, atol=1e-6)


# --- config --------------------------------------------------------------------------------------

def test_from_config():
    cfg = DataConfig.from_config({"name": "synthetic", "size": 8, "train_size": 10})
    assert cfg == DataConfig("synthetic", size=8, train_size=10)
    assert DataConfig.from_config({"name": "cifar10", "download": True}).path == Path("data/cifar10")
    assert DataConfig.from_config({"name": "fashion-mnist"}).path == Path("/usr/share/datasets/fashion-mnist")
    with pytest.raises(ConfigError, match=r"data\.colour: unknown key"):
        DataConfig.from_config({"name": "synthetic", "colour": 1}, where="data")
    with pytest.raises(ConfigError, match=r"dataset\.name"):
        DataConfig.from_config({"name": "mnist"})
    with pytest.raises(ConfigError, match=r"dataset\.image_size: not used by dataset 'cifar10'"):
        DataConfig.from_config({"name": "cifar10", "image_size": 32})
    with pytest.raises(ConfigError, match=r"dataset\.train_size: expected an integer >= 1"):
        DataConfig.from_config({"name": "cifar10", "train_size": 0})
    with pytest.raises(ConfigError, match=r"dataset\.download"):
        DataConfig.from_config({"name": "cifar10", "download": "yes"})
    with pytest.raises(ConfigError, match=r"dataset\.root: required"):
        DataConfig.from_config({"name": "imagefolder"})
    with pytest.raises(ConfigError, match=r"dataset\.num_classes"):
        DataConfig.from_config({"name": "synthetic", "num_classes": 1})


# --- class-balanced subsets (per_class) ------------------------------------------------------------

def _synthetic_per_class(per_class: int, subset_seed=None):
    return load(DataConfig(name="synthetic", synthetic_train=400, synthetic_test=40, size=8, num_classes=4,
                           per_class=per_class, subset_seed=subset_seed))


def test_per_class_subset_holds_exactly_n_images_of_each_class():
    for seed in (None, 0, 7):
        src = _synthetic_per_class(13, seed)
        assert src.train_size == 4 * 13
        assert torch.bincount(src.train_y, minlength=4).tolist() == [13, 13, 13, 13]


def test_per_class_first_n_are_each_class_first_images_in_file_order():
    full = load(DataConfig(name="synthetic", synthetic_train=400, synthetic_test=40, size=8, num_classes=4))
    src = _synthetic_per_class(5)
    expected = torch.cat([torch.nonzero(full.train_y == c).flatten()[:5] for c in range(4)]).sort().values
    assert torch.equal(src.train_x, full.train_x[expected])


def test_seeded_per_class_subsets_differ_across_seeds_and_repeat_for_a_seed():
    a, b, a2 = _synthetic_per_class(10, 1), _synthetic_per_class(10, 2), _synthetic_per_class(10, 1)
    assert torch.equal(a.train_x, a2.train_x)
    assert not torch.equal(a.train_x, b.train_x)


def test_per_class_beyond_a_class_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"per_class: 500 requested .* of class"):
        _synthetic_per_class(500)


def test_per_class_with_train_size_or_a_bad_seed_is_refused():
    with pytest.raises(ConfigError, match="per_class"):
        DataConfig.from_config({"name": "synthetic", "per_class": 5, "train_size": 10})
    with pytest.raises(ConfigError, match="subset_seed"):
        DataConfig.from_config({"name": "synthetic", "per_class": 5, "subset_seed": "first"})
    with pytest.raises(ConfigError, match="subset_seed"):
        DataConfig.from_config({"name": "synthetic", "subset_seed": 3})


# 200 = 3 * 64 + 8: four batches; 193 = 3 * 64 + 1: a final batch of one image is dropped (BatchNorm needs
# two), so three, as 129 = 2 * 64 + 1 gives two; 100 images in batches of 128: one
@pytest.mark.parametrize(("n", "batch", "steps"), [(256, 64, 4), (200, 64, 4), (193, 64, 3), (129, 64, 2),
                                                    (100, 128, 1), (1, 1, 1)])
def test_train_steps_counts_the_batches_the_source_yields(n, batch, steps):
    src = load(DataConfig(name="synthetic", synthetic_train=max(n, 2), synthetic_test=8, size=8, train_size=n))
    assert src.train_steps(batch) == sum(1 for _ in src.train_batches(0, 0, batch)) == steps


# --- fb.resnet.torch's colour augmentation (datasets/imagenet.lua, datasets/transforms.lua) ----------------------

def test_lighting_adds_fbs_pca_offset_by_hand():
    """transforms.lua's Lighting: rgb = eigvec:clone():cmul(alpha:view(1,3):expand(3,3)):cmul(eigval:view(1,3)
    :expand(3,3)):sum(2), added to every pixel of channel i. imagenet.lua's eigval (0.2175, 0.0188, 0.0045) and
    eigvec rows (-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203)."""
    lighting = Lighting()
    # alpha = (1, 0, 0): the first eigenvector times 0.2175
    first = lighting.offset(torch.tensor([1.0, 0.0, 0.0]))
    assert first.tolist() == pytest.approx([-0.12343125, -0.126324, -0.126933], abs=1e-7)
    # alpha = (0, 2, -1): 2 * 0.0188 * column 2 - 0.0045 * column 3
    #   R 0.0376 * 0.7192 - 0.0045 * 0.4009 = 0.02704192 - 0.00180405 = 0.02523787
    #   G 0.0376 * -0.0045 - 0.0045 * -0.8140 = -0.0001692 + 0.003663 = 0.0034938
    #   B 0.0376 * -0.6948 - 0.0045 * 0.4203 = -0.02612448 - 0.00189135 = -0.02801583
    mixed = lighting.offset(torch.tensor([0.0, 2.0, -1.0]))
    assert mixed.tolist() == pytest.approx([0.02523787, 0.0034938, -0.02801583], abs=1e-7)
    # on an image: alpha ~ N(0, 0.1), drawn from the generator the folder source seeds per image, one offset for
    # every pixel of a channel
    image = torch.rand(3, 4, 5)
    torch.manual_seed(7)
    out = lighting(image)
    torch.manual_seed(7)
    alpha = torch.empty(3).normal_(0.0, 0.1).tolist()
    eigval, eigvec = (0.2175, 0.0188, 0.0045), lighting.eigvec.tolist()
    by_hand = [sum(eigvec[i][j] * alpha[j] * eigval[j] for j in range(3)) for i in range(3)]
    assert (out - image).flatten(1).tolist() == [pytest.approx([v] * 20, abs=1e-6) for v in by_hand]
    assert torch.equal(Lighting(alphastd=0)(image), image)


def test_folder_jitter_and_lighting_recolour_a_grey_image(tmp_path):
    """A grey image stays grey under any crop, flip, brightness, contrast or saturation change (each mixes it with
    a grey): only the lighting's offset, which differs per channel, gives it a colour, the same at every pixel."""
    from torchvision import transforms as T

    from atlib.data import _folder_transform

    for split in ("train", "val"):
        (tmp_path / split / "grey").mkdir(parents=True)
        for i in range(2):  # two: a training batch of one image is dropped (batch norm needs two)
            Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8)).save(tmp_path / split / "grey" / f"{i}.png")
    src = load(DataConfig("imagefolder", root=str(tmp_path), image_size=32))
    src.num_workers = 0
    set_augmentation(src, "crop+jitter+lighting+flip")
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    levels = []
    for epoch in range(4):
        (x, _), = src.train_batches(epoch, 0, 2)
        for image in x:
            per_channel = (image * std + mean).flatten(1)  # the [0, 1] RGB image before the normalisation
            assert torch.allclose(per_channel, per_channel[:, :1].expand_as(per_channel), atol=1e-5)  # uniform
            assert (per_channel[:, 0].max() - per_channel[:, 0].min()).item() > 1e-4  # the lighting's colour
            levels.append(round(per_channel[0, 0].item(), 4))
    assert len(set(levels)) == 8  # each image and epoch draws its own jitter and lighting
    jitter = next(t for t in _folder_transform("crop+jitter+lighting+flip", 32).transforms
                  if isinstance(t, T.ColorJitter))
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.6, 1.4),) * 3 + (None,)
