import numpy as np
from PIL import Image

from atlib import cli


def _png(path, w, h, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def test_cub_is_cropped_to_its_boxes_and_split(tmp_path):
    src = tmp_path / "CUB_200_2011"
    _png(src / "images/001.Albatross/a.png", 40, 30, 10)
    _png(src / "images/002.Wren/b.png", 50, 20, 200)
    (src / "images.txt").write_text("1 001.Albatross/a.png\n2 002.Wren/b.png\n")
    (src / "bounding_boxes.txt").write_text("1 5.0 4.0 20.0 10.0\n2 0.0 0.0 50.0 20.0\n")
    (src / "train_test_split.txt").write_text("1 1\n2 0\n")
    assert cli.main(["prepare", "cub", str(src), str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out/train/001.Albatross/a.png") as im:
        assert im.size == (20, 10)
    with Image.open(tmp_path / "out/val/002.Wren/b.png") as im:
        assert im.size == (50, 20)
    assert not (tmp_path / "out/val/001.Albatross").exists()


def test_scenes_follow_the_official_lists(tmp_path):
    src = tmp_path / "indoor"
    _png(src / "Images/bar/x.png", 8, 8, 1)
    _png(src / "Images/kitchen/y.png", 8, 8, 2)
    (src / "TrainImages.txt").write_text("bar/x.png\n")
    (src / "TestImages.txt").write_text("kitchen/y.png\n")
    assert cli.main(["prepare", "scenes", str(src), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out/train/bar/x.png").exists() and (tmp_path / "out/val/kitchen/y.png").exists()


def test_missing_list_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["prepare", "cub", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "images.txt not found" in capsys.readouterr().err
