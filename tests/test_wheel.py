"""A wheel runs: built offline, installed into a fresh environment, it plans and trains from another folder."""

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from conftest import ROOT


def run(*cmd: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_an_installed_wheel_plans_and_trains_a_step_from_another_folder(tmp_path):
    # the sources alone, copied: building in the checkout would leave build/ in it
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "atlib", src / "atlib", ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", tmp_path / "dist", "./src", cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("atlib-*.whl")
    # a fresh environment without this checkout: its own site-packages first, then the test's (torch and the
    # rest) as a plain folder, whose .pth files (the checkout's editable install among them) are not read
    env = tmp_path / "env"
    run(sys.executable, "-m", "venv", "--without-pip", env, cwd=tmp_path)
    python = env / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
                .stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel,
        cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(python, "-c", "import atlib; print(atlib.__file__)", cwd=elsewhere).stdout
    assert where.startswith(str(site))
    shutil.copy(ROOT / "tests/configs/synthetic.yaml", elsewhere)
    planned = run(env / "bin" / "atlib", "plan", "synthetic.yaml", cwd=elsewhere).stdout.split()
    assert "synthetic/tiny/wrn-10-1/baseline/seed0" in planned

    spec = {"run_id": "wheel/one-step", "model": "wrn-10-1", "device": "cpu", "threads": 1,
            "dataset": {"name": "synthetic", "synthetic_train": 16, "synthetic_test": 16, "size": 8},
            "recipe": {"epochs": 1, "batch_size": 16}, "tracking": {"enabled": False}}
    (elsewhere / "spec.yaml").write_text(yaml.safe_dump(spec))
    run(env / "bin" / "atlib", "train", "spec.yaml", "--out", "run", cwd=elsewhere)
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and 0 <= metrics["final_test_error"] <= 100
