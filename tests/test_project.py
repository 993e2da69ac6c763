"""The project's own files agree with each other."""

import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = {}
    for d in env:
        if isinstance(d, str) and not d.startswith(("python", "pip")):
            name = _name(d)
            conda[CONDA_NAMES.get(name, name)] = d[len(name):].replace(" ", "")
    pip = {_name(d): d[len(_name(d)):].replace(" ", "") for d in deps}
    assert conda == pip


SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
CONFIGS = sorted((ROOT / "config").glob("*.yaml")) + sorted((ROOT / "tests/configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load(path.read_text()))


def test_schema_rejects_a_misspelt_key():
    cfg = yaml.safe_load((ROOT / "config/quick.yaml").read_text())
    cfg["tables"]["table1"]["colums"] = cfg["tables"]["table1"]["columns"]
    with pytest.raises(jsonschema.ValidationError, match="colums"):
        jsonschema.Draft202012Validator(SCHEMA).validate(cfg)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \S+)$", quick, re.M)
    assert commands == ["make reproduce", "make test"]
    assert "make test" in (ROOT / ".ci/run").read_text()
