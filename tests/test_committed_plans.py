"""Every committed config plans the same runs with the same specs, byte for byte, as when its results were made:
a code change that renamed a run or changed what a run trains would orphan the committed results, or retrain them.

tests/configs/committed-plans.json records, per config, the sorted run ids and the SHA-256 of the canonical JSON of
each planned spec. A change meant to alter a config's runs regenerates the record with
``python tests/test_committed_plans.py --write`` and says so in its commit.
"""

import hashlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "configs" / "committed-plans.json"
CONFIGS = sorted(p.name for p in (ROOT / "config").glob("*.yaml"))


def fingerprint(config: str) -> dict[str, str]:
    from atlib.plan import load_plan

    plan = load_plan(str(ROOT / "config" / config))
    return {run_id: hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
            for run_id, spec in sorted(plan.runs.items())}


def test_every_committed_config_is_recorded():
    assert sorted(json.loads(RECORD.read_text())) == CONFIGS


@pytest.mark.parametrize("config", CONFIGS)
def test_run_ids_and_specs_are_unchanged(config):
    recorded = json.loads(RECORD.read_text())[config]
    now = fingerprint(config)
    assert sorted(now) == sorted(recorded), "run ids changed"
    changed = [r for r in now if now[r] != recorded[r]]
    assert not changed, f"{len(changed)} specs changed, e.g. {changed[:2]}"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    RECORD.write_text(json.dumps({c: fingerprint(c) for c in CONFIGS}, indent=1, sort_keys=True) + "\n")
