"""Lineage: the digest of exactly the images a run used (``Source.digest``), and a finished run read back from MLflow
with its training and test data as dataset inputs and its teacher's run linked through a logged model."""

import hashlib
import os
from pathlib import Path

import pytest
import torch
from conftest import store_in

from atlib.data import TensorSource, load, per_class_indices
from atlib.engine import train
from atlib.spec import DataConfig, RunSpec

DATA = {"name": "synthetic", "synthetic_train": 80, "synthetic_test": 32, "size": 16}


def test_the_digest_is_the_sha256_of_the_images_and_labels_as_stored():
    x = torch.tensor([[[[0, 1], [2, 255]]], [[[7, 7], [7, 7]]]], dtype=torch.uint8)  # 2 images, 1 x 2 x 2
    y = torch.tensor([1, 0])
    source = TensorSource(x, y, x[:1], y[:1], 2, (0.5,), (0.25,), pad=0)
    by_hand = b"uint8 (2, 1, 2, 2)\n" + bytes([0, 1, 2, 255, 7, 7, 7, 7]) + (1).to_bytes(8, "little") + bytes(8)
    assert source.digest("train") == hashlib.sha256(by_hand).hexdigest()
    assert source.digest("test") == hashlib.sha256(
        b"uint8 (1, 1, 2, 2)\n" + bytes([0, 1, 2, 255]) + (1).to_bytes(8, "little")).hexdigest()
    with pytest.raises(ValueError, match="'train' or 'test'"):
        source.digest("val")


def test_the_subset_and_its_seed_set_the_digest_and_the_batches_stay_as_they_were():
    def subset(seed: int | None) -> TensorSource:
        return load(DataConfig.from_config({**DATA, "per_class": 4, "subset_seed": seed}, "dataset"))

    first, again, other = subset(1), subset(1), subset(2)
    assert first.digest("train") == again.digest("train") != other.digest("train")
    assert first.digest("test") == other.digest("test")  # the subset is of the training images only
    # the digest is of the images chosen: the whole set's images at per_class_indices hash alike
    whole = load(DataConfig.from_config(DATA, "dataset"))
    keep = per_class_indices(whole.train_y, 10, 4, 1, "synthetic")
    chosen = TensorSource(whole.train_x[keep], whole.train_y[keep], whole.test_x, whole.test_y, 10, (0.5,), (0.25,), 2)
    assert chosen.digest("train") == first.digest("train") and chosen.digest("test") == first.digest("test")
    before = [b for b in first.train_batches(0, 3, 16)]
    first.digest("train")
    after = [b for b in first.train_batches(0, 3, 16)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(before, after, strict=True))


def test_a_finished_run_carries_its_data_and_its_teacher_into_mlflow(tmp_path, monkeypatch, empty_store):
    import mlflow

    for name in [n for n in os.environ if n.startswith("MLFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    monkeypatch.chdir(tmp_path)  # the experiment's artifacts go below the working folder
    store = store_in(tmp_path / "results", empty_store)
    tracking = {"store": str(store), "experiment": "lineage", "attention_every": 0}
    base = {"dataset": DATA, "model": "wrn-10-1", "threads": 1, "tracking": tracking,
            "recipe": {"epochs": 1, "batch_size": 20, "lr": 0.05}}

    def quiet(_: str) -> None:
        pass

    teacher = train(RunSpec.from_dict({**base, "run_id": "teacher", "model": "wrn-10-2"}), tmp_path / "t", quiet)
    students = {}
    for run_id, seed in (("s1", 1), ("s2", 2), ("s1-again", 1)):
        spec = {**base, "run_id": run_id, "method": "kd", "dataset": {**DATA, "per_class": 4, "subset_seed": seed},
                "teacher": {"run_dir": str(tmp_path / "t"), "model": "wrn-10-2"}}
        students[run_id] = train(RunSpec.from_dict(spec), tmp_path / run_id, quiet)["mlflow_run_id"]
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        os.environ.pop("MLFLOW_HTTP_REQUEST_TIMEOUT", None)

    client = mlflow.MlflowClient(f"sqlite:///{store}")

    def inputs(run_id: str) -> dict[str, str]:
        run = client.get_run(run_id)
        return {d.tags[0].value: d.dataset.digest for d in run.inputs.dataset_inputs} | {
            "models": [m.model_id for m in run.inputs.model_inputs]}

    s1, s2, again = (inputs(students[r]) for r in ("s1", "s2", "s1-again"))
    assert s1["train"] == again["train"] != s2["train"]
    assert s1["test"] == s2["test"] == again["test"]
    # each digest is the data's own, computed here from a fresh load of the same subset
    fresh = load(DataConfig.from_config({**DATA, "per_class": 4, "subset_seed": 2}, "dataset"))
    assert s2["train"] == fresh.digest("train")[:16] and s2["test"] == fresh.digest("test")[:16]
    # the teacher: one logged model of its run and checkpoint, an input of every student, an output of the teacher
    (model_id,) = set(s1["models"] + s2["models"] + again["models"])
    model = client.get_logged_model(model_id)
    assert model.source_run_id == teacher["mlflow_run_id"]
    assert model.tags["checkpoint_sha256"] == teacher["checkpoint_sha256"]
    assert [o.model_id for o in client.get_run(teacher["mlflow_run_id"]).outputs.model_outputs] == [model_id]
    # the teacher itself has its data, and no model input
    assert inputs(teacher["mlflow_run_id"])["models"] == [] and "train" in inputs(teacher["mlflow_run_id"])
    assert Path(tmp_path, "results/mlartifacts").is_dir()
