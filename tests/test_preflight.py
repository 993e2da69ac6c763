"""Preflight: what the config and the data files' headers say is wrong stops the DAG before any job, in one line
naming the key; a job that fails anyway (on a cluster, say) has its one-line reason printed by Snakemake's end."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, SYNTHETIC, snakemake
from test_data import idx_bytes, make_cifar, make_fmnist

from atlib import cli, preflight
from atlib.data import load
from atlib.plan import build_plan
from atlib.spec import DataConfig, DataError

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def synthetic(**changes) -> dict:
    """tests/configs/synthetic.yaml with ``changes`` applied (``a.b`` keys reach into mappings)."""
    cfg = yaml.safe_load(SYNTHETIC.read_text())
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def fmnist_config(root: Path, **dataset) -> dict:
    """One baseline run on Fashion-MNIST files at ``root``."""
    return {"name": "fm", "seeds": [0], "threads": 1,
            "datasets": {"fm": {"name": "fashion-mnist", "root": str(root), **dataset}},
            "recipes": {"r": {"epochs": 1, "batch_size": 8}},
            "tables": {"t": {"dataset": "fm", "recipe": "r", "columns": ["student"],
                             "rows": [{"student": "wrn-10-1"}]}}}


# --- the data files' headers --------------------------------------------------------------------------------------

def test_idx_header_reads_the_declared_dims_of_gzipped_and_plain_files(tmp_path):
    array = np.zeros((3, 300, 2), dtype=np.uint8)  # 300 > 255: all four bytes of a dimension count
    (tmp_path / "plain").write_bytes(idx_bytes(array))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(idx_bytes(array)))
    assert preflight.idx_header(tmp_path / "plain") == preflight.idx_header(tmp_path / "packed.gz") == (3, 300, 2)
    (tmp_path / "short").write_bytes(idx_bytes(array)[:-1])
    with pytest.raises(DataError, match="truncated or corrupt"):
        preflight.idx_header(tmp_path / "short")
    (tmp_path / "bad").write_bytes(b"\x01" + idx_bytes(array)[1:])
    with pytest.raises(DataError, match="not an IDX file"):
        preflight.idx_header(tmp_path / "bad")


def test_holdings_agree_with_what_the_loader_loads(tmp_path):
    """The headers' counts are the loaded dataset's: images, classes, shape and each class's training images."""
    make_fmnist(tmp_path / "fm", n_train=40, n_test=7)
    make_cifar(tmp_path / "cifar")  # tiny batches: holdings trust CIFAR-10's published sizes instead
    cases = [DataConfig("fashion-mnist", root=str(tmp_path / "fm")),
             DataConfig("synthetic", num_classes=7, synthetic_train=61, synthetic_test=5, channels=3, size=8)]
    if REAL_FMNIST.is_dir():
        cases.append(DataConfig("fashion-mnist"))
    for cfg in cases:
        held, source = preflight.holdings(cfg), load(cfg)
        assert (held.train, held.test, held.num_classes, held.input_shape) == (
            source.train_size, source.test_size, source.num_classes, source.input_shape), cfg
        assert list(held.train_per_class) == torch.bincount(source.train_y, minlength=held.num_classes).tolist()
    cifar = preflight.holdings(DataConfig("cifar10", root=str(tmp_path / "cifar")))
    assert (cifar.train, cifar.test, cifar.input_shape, sum(cifar.train_per_class)) == (50000, 10000, (3, 32, 32),
                                                                                         50000)
    (tmp_path / "cifar/cifar-10-batches-py/data_batch_3").unlink()
    with pytest.raises(preflight.Missing, match="data_batch_3"):
        preflight.holdings(DataConfig("cifar10", root=str(tmp_path / "cifar")))


def test_image_folders_are_counted_per_class_only_when_a_size_is_asked(tmp_path):
    for split, counts in (("train", {"a": 3, "b": 2}), ("val", {"a": 1, "b": 1})):
        for cls, n in counts.items():
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / cls / f"{i}.JPG").touch()
            (tmp_path / split / cls / "notes.txt").touch()  # not an image: ImageFolder skips it too
    cfg = DataConfig("imagefolder", root=str(tmp_path), image_size=32)
    assert preflight.holdings(cfg) == preflight.Holdings(5, 2, (3, 2), 2, (3, 32, 32))
    assert preflight.holdings(cfg, count=False) == preflight.Holdings(0, 0, (), 2, (3, 32, 32))
    (tmp_path / "val" / "c").mkdir()
    with pytest.raises(DataError, match="3 class folders|named differently"):
        preflight.holdings(cfg)


# --- the checks, one line each ------------------------------------------------------------------------------------

def write_fmnist(root: Path, n_train: int, n_test: int) -> None:
    """Fashion-MNIST files of blank images whose labels cycle 0..9: class c holds n_train // 10 (+1 below the rest)."""
    make_fmnist(root, n_train, n_test)
    with gzip.open(root / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(idx_bytes(np.arange(n_train, dtype=np.uint8) % 10))


def test_sizes_beyond_the_data_name_the_key_and_the_most_there_is(tmp_path):
    write_fmnist(tmp_path, n_train=43, n_test=7)  # classes 0-2 hold 5 images, 3-9 hold 4
    plan = build_plan(fmnist_config(tmp_path, train_size=44, test_size=7))
    assert preflight.before_dag(plan) == [
        f"datasets.fm.train_size: 44 requested, but {tmp_path} holds 43 training images; expected at most 43, "
        "or null for all of them"]
    plan = build_plan(fmnist_config(tmp_path, per_class=5, test_size=8))
    assert preflight.before_dag(plan) == [
        f"datasets.fm.test_size: 8 requested, but {tmp_path} holds 7 test images; expected at most 7, or null for "
        "all of them",
        f"datasets.fm.per_class: 5 requested, but {tmp_path} holds 4 training images of class 3; expected at most 4"]
    assert preflight.before_dag(build_plan(fmnist_config(tmp_path, per_class=4, test_size=7))) == []


def test_missing_files_pass_when_the_dag_is_built_and_stop_it_before_its_jobs(tmp_path):
    plan = build_plan(fmnist_config(tmp_path / "placeholder", train_size=10**7))
    assert preflight.before_dag(plan) == []  # a dry run on placeholder roots
    assert preflight.before_jobs(plan, local=False) == []  # a missing root: atlib.plan.missing_data says so
    make_fmnist(tmp_path / "placeholder")
    (tmp_path / "placeholder/t10k-images-idx3-ubyte.gz").unlink()
    assert preflight.before_dag(plan) == []
    [line] = preflight.before_jobs(plan, local=False)
    assert line.startswith("datasets.fm.root: ") and line.endswith("lacks t10k-images-idx3-ubyte; expected the "
                                                                   "fashion-mnist files there")


def test_epochs_zero_needs_given_weights_and_a_transfer_must_start():
    [line] = preflight.config_problems(build_plan(synthetic(**{"recipes.tiny.epochs": 0})))
    assert line.startswith("recipes.tiny.epochs: 0 evaluates a given model, but wrn-10-1, wrn-10-2 has no given "
                           "weights; expected epochs >= 1")
    teacher = {"name": "resnet-18", "options": {"pretrained": "r.pth"}}
    given = synthetic(**{"recipes.given": {"epochs": 0}, "tables.table1.teacher_recipe": "given",
                         "tables.table1.rows": [{"student": "wrn-10-1", "teacher": teacher}]})
    assert preflight.config_problems(build_plan(given)) == []  # a pretrained teacher, evaluated
    late = synthetic(**{"tables.table1.columns": ["student", {"label": "at", "method": {"name": "at",
                                                                                        "start_epoch": 4}}]})
    [line] = preflight.config_problems(build_plan(late))
    assert line.startswith("start_epoch: 4 (method 'at', run synthetic/tiny/wrn-10-1/at-start_epoch=4-from-")
    assert line.endswith("but recipe 'tiny' trains 3 epochs, so the transfer would never start; expected at most 3")


def test_a_teacher_from_other_data_must_have_its_students_classes_and_image_shape():
    cfg = synthetic(**{"datasets.wide": {"name": "synthetic", "num_classes": 5, "size": 16},
                       "tables.table1.teacher_dataset": "wide"})
    [line] = preflight.before_dag(build_plan(cfg))
    assert line == ("datasets.wide: a teacher trained on it has 5 classes, but it teaches students of synthetic, "
                    "which has 10; expected a teacher_dataset with the same classes")


def test_weights_that_are_not_here_stop_the_jobs(tmp_path):
    cfg = synthetic(**{"tables.table1.rows": [{"student": {"name": "resnet-18",
                                                           "options": {"pretrained": str(tmp_path / "r18.pth")}},
                                               "teacher": "wrn-10-2"}]})
    plan = build_plan(cfg)
    assert preflight.before_dag(plan) == []
    [line] = preflight.before_jobs(plan, local=True)
    assert line == (f"options.pretrained: '{tmp_path / 'r18.pth'}' of resnet-18 is not at {tmp_path / 'r18.pth'}; "
                    "expected the weight file there (atlib never downloads weights)")
    (tmp_path / "r18.pth").touch()
    assert preflight.before_jobs(plan, local=True) == []


def test_cuda_is_checked_where_the_jobs_run(monkeypatch):
    plan = build_plan(synthetic(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    [line] = preflight.before_jobs(plan, local=True)
    assert line.startswith("device: 'cuda' requested, but this machine has no CUDA device and the jobs run here")
    assert preflight.before_jobs(plan, local=False) == []  # a cluster's job finds its own device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert preflight.before_jobs(plan, local=True) == []


def test_atlib_plan_names_the_same_problems(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(synthetic(**{"recipes.tiny.epochs": 0})))
    assert cli.main(["plan", str(path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("atlib: error: recipes.tiny.epochs: 0 evaluates a given model")


def test_failure_reasons_are_each_failed_runs_last_error_line(tmp_path):
    plan = build_plan(synthetic())
    logs = tmp_path / "logs"
    failed, traceback, old, done = list(plan.runs)[:4]
    for run, text in ((failed, "epoch 1\natlib: error: device: 'cuda' requested, but no CUDA device is available\n"),
                      (traceback, "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n"),
                      (old, "atlib: error: from an earlier DAG\n"), (done, "atlib: error: retried, then finished\n")):
        (logs / run).parent.mkdir(parents=True, exist_ok=True)
        (logs / f"{run}.log").write_text(text)
    os.utime(logs / f"{old}.log", (1, 1))
    plan.results = str(tmp_path / "results")
    Path(plan.run_dir(done)).mkdir(parents=True)
    Path(plan.run_dir(done), "metrics.json").write_text('{"final_test_error": 5.0}')
    assert preflight.failure_reasons(plan, logs, since=100) == [
        f"atlib: run {failed} failed: device: 'cuda' requested, but no CUDA device is available (log: "
        f"{logs / failed}.log)",
        f"atlib: run {traceback} failed: RuntimeError: CUDA out of memory (log: {logs / traceback}.log)"]


# --- through snakemake, not only -n ---------------------------------------------------------------------------------

def bad_inputs(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    """The issue's three: more images than the data holds, CUDA on a machine without, epochs 0 on no weights."""
    write_fmnist(tmp_path / "fm", n_train=40, n_test=7)
    return {
        "train_size": (fmnist_config(tmp_path / "fm", train_size=10_000_000),
                       f"atlib: datasets.fm.train_size: 10000000 requested, but {tmp_path / 'fm'} holds 40 training "
                       "images; expected at most 40, or null for all of them"),
        "cuda": (synthetic(device="cuda"), "atlib: device: 'cuda' requested, but this machine has no CUDA device"),
        "epochs": (synthetic(**{"recipes.tiny.epochs": 0}), "atlib: recipes.tiny.epochs: 0 evaluates a given model"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", ["train_size", "cuda", "epochs"])
def test_bad_input_stops_the_dag_before_any_job_in_one_line(case, tmp_path):
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    cfg, expected = bad_inputs(tmp_path)[case]
    path, work = tmp_path / "config.yaml", tmp_path / "work"
    path.write_text(yaml.safe_dump(cfg))
    dag = snakemake(work, config=path, timeout=300)
    lines = [line for line in dag.stdout.splitlines() if line.startswith("atlib:")]
    assert dag.returncode != 0 and len(lines) == 1 and lines[0].startswith(expected), dag.stdout
    assert "Traceback" not in dag.stdout and "CalledProcessError" not in dag.stdout, dag.stdout
    assert not (work / "results").exists()  # no job started, nothing written


@pytest.mark.slow
def test_a_job_that_fails_anyway_has_its_reason_printed_at_the_end(tmp_path):
    """A failure only the job can find (here a frozen group the model lacks, as on a cluster a CUDA device the
    node lacks): Snakemake's end names the run and its reason from the job's log."""
    cfg = synthetic(seeds=[0], **{"recipes.tiny.freeze_groups": [7], "tables.table1.columns": ["student"],
                                  "tables.table1.rows": [{"student": "wrn-10-1"}]})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    dag = snakemake(tmp_path / "work", config=path, timeout=300)
    [line] = [line for line in dag.stdout.splitlines() if line.startswith("atlib: run ")]
    assert dag.returncode != 0
    assert line.startswith("atlib: run synthetic/tiny/wrn-10-1/baseline/seed0 failed: recipe.freeze_groups: [7] "
                           "does not name groups of this model"), dag.stdout
    assert line.endswith("(log: results/logs/synthetic/tiny/wrn-10-1/baseline/seed0.log)")


def test_shipped_configs_pass_preflight():
    for path in [*sorted((ROOT / "config").glob("*.yaml")), *sorted((ROOT / "tests/configs").glob("*.yaml"))]:
        assert preflight.before_dag(build_plan(yaml.safe_load(path.read_text()))) == [], path


def test_preflight_imports_no_torch():
    code = ("import sys, atlib.preflight, atlib.plan; "
            "plan = atlib.plan.load_plan(sys.argv[1]); atlib.preflight.before_dag(plan); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "config/quick.yaml")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

