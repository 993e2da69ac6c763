import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SYNTHETIC = ROOT / "tests/configs/synthetic.yaml"


def snakemake(workdir: Path, *args: str, config: Path = SYNTHETIC, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real snakemake executable on the project's Snakefile, in ``workdir``."""
    cmd = [SNAKEMAKE, "-s", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), "--cores", "2", *args]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def synthetic_dag(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The synthetic config run once, uninterrupted, by the local executor."""
    workdir = tmp_path_factory.mktemp("dag")
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return workdir, proc
