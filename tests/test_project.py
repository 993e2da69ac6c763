"""The project's own files agree with each other."""

import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from atlib.plan import schema

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


SCHEMA = schema()  # as atlib loads it: the method names come from the registry
CONFIGS = sorted((ROOT / "config").glob("*.yaml")) + sorted((ROOT / "tests/configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load(path.read_text()))


def test_schema_rejects_a_misspelt_key():
    cfg = yaml.safe_load((ROOT / "config/quick.yaml").read_text())
    cfg["tables"]["fewshot2-10"]["colums"] = cfg["tables"]["fewshot2-10"]["columns"]
    with pytest.raises(jsonschema.ValidationError, match="colums"):
        jsonschema.Draft202012Validator(SCHEMA).validate(cfg)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \S+)$", quick, re.M)
    assert commands == ["make reproduce", "make test"]
    assert "make test" in (ROOT / ".ci/run").read_text()


# The last version each channel publishes, where a channel stopped: the `pytorch` channel's final
# releases were PyTorch 2.5.1 / torchvision 0.20.1 (PyTorch's announcement of its move to conda-forge
# and pip wheels). A channel listed before conda-forge with strict priority caps its packages there.
CHANNEL_CAPS = {"pytorch": {"pytorch": "2.5.1", "torchvision": "0.20.1"}}
PINNED_HERE = {"pytorch": "2.14.1", "torchvision": "0.29.1"}  # what `make` installs (Makefile)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def test_environment_channels_are_conda_forge_first_and_cap_nothing_we_need():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    channels = env["channels"]
    deps = {_name(d): d for d in env["dependencies"] if isinstance(d, str)}
    for channel in channels:
        for package, last in CHANNEL_CAPS.get(channel, {}).items():
            floor = re.search(r">=\s*([\d.]+)", deps.get(package, ""))
            needed = max(_version(floor.group(1)) if floor else (0,), _version(PINNED_HERE.get(package, "0")))
            assert needed <= _version(last), f"channel {channel} stops at {package} {last}, we need {needed}"
    assert channels[0] == "conda-forge" and "nodefaults" in channels and "defaults" not in channels
    makefile = (ROOT / "Makefile").read_text()
    for package, version in PINNED_HERE.items():
        assert f"{CONDA_NAMES.get(package, package)}=={version}" in makefile


def test_environment_check_catches_a_capping_channel(monkeypatch, tmp_path):
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    env["channels"] = ["pytorch", *env["channels"]]
    (tmp_path / "environment.yml").write_text(yaml.safe_dump(env))
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="channel pytorch stops at"):
        test_environment_channels_are_conda_forge_first_and_cap_nothing_we_need()


def test_slurm_profile_options_exist_in_the_plugin_version_we_require():
    from snakemake_executor_plugin_slurm import ExecutorSettings

    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    fields = {f.replace("_", "-") for f in ExecutorSettings.__dataclass_fields__}
    used = {k.removeprefix("slurm-") for k in profile if k.startswith("slurm-")}
    assert used <= fields, used - fields
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (plugin,) = [d for d in deps if d.startswith("snakemake-executor-plugin-slurm")]
    # slurm-status-command first appeared in 2.0.1 (read from the 2.0.0 and 2.0.1 wheels on PyPI)
    assert "status-command" not in used or _version(plugin.split(">=")[1]) >= (2, 0, 1)


def test_config_readme_describes_every_key_of_the_schema():
    text = (ROOT / "config/README.md").read_text()
    props = SCHEMA["properties"]
    table = props["tables"]["additionalProperties"]["properties"]
    keys = {*props, *props["recipes"]["additionalProperties"]["properties"], *table,
            *table["rows"]["items"]["properties"], *props["resources"]["properties"]}
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, missing
