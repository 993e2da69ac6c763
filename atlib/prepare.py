"""Turn the fine-tuning datasets of Table 4 into the ImageFolder layout (train/, val/) atlib reads.

- CUB-200-2011: every image cropped to its bounding box (``bounding_boxes.txt``: x, y, width,
  height), split by ``train_test_split.txt`` (1 = train), as the paper does.
- MIT Indoor-67 (Scenes): the official ``TrainImages.txt`` / ``TestImages.txt`` lists.

Files are written once (existing outputs are kept), so an interrupted preparation simply resumes.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from .spec import DataError


def _lines(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"{path} not found: expected the dataset's original layout")
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def prepare_cub(src: Path, dst: Path) -> int:
    """``src`` is the CUB_200_2011 folder (images.txt, bounding_boxes.txt, train_test_split.txt, images/)."""
    names = dict(_lines(src / "images.txt"))
    boxes = {i: tuple(float(v) for v in b) for i, *b in _lines(src / "bounding_boxes.txt")}
    split = dict(_lines(src / "train_test_split.txt"))
    for image_id, rel in names.items():
        out = dst / ("train" if split[image_id] == "1" else "val") / rel
        if out.exists():
            continue
        x, y, w, h = boxes[image_id]
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src / "images" / rel) as im:
            im.convert("RGB").crop((int(x), int(y), int(x + w), int(y + h))).save(out)
    return len(names)


def prepare_scenes(src: Path, dst: Path) -> int:
    """``src`` holds Images/<class>/<file> and the official TrainImages.txt and TestImages.txt."""
    count = 0
    for split, listing in (("train", "TrainImages.txt"), ("val", "TestImages.txt")):
        for (rel,) in _lines(src / listing):
            out = dst / split / rel
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(src / "Images" / rel) as im:
                    im.convert("RGB").save(out)
            count += 1
    return count
