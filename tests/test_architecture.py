"""The shape of the code: imports only go down, one owner per concept, a method is one registry entry."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from atlib import methods
from atlib.methods import MethodDef

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "atlib"
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every atlib module ``path`` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("atlib")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("atlib"):
                continue
            for alias in node.names:  # `from . import rundir` names a module, `from .x import f` a function
                sub = f"{target}.{alias.name}"
                found.add(sub if any(module_name(m) == sub for m in MODULES) else target)
    found.discard(name)
    return found


GRAPH = {module_name(m): imports_of(m) for m in MODULES}


def test_the_import_graph_of_atlib_has_no_cycle():
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in GRAPH:
        if node not in state:
            visit(node, [])


def test_nothing_imports_the_command_line():
    # atlib.__main__ is `python -m atlib`, the program itself: the one importer of the command line
    assert [m for m, deps in GRAPH.items() if "atlib.cli" in deps] == ["atlib.__main__"]


def test_each_module_imports_alone():
    modules = [m for m in sorted(GRAPH) if m != "atlib.__main__"]  # importing that one runs the program
    procs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for m in modules}
    failed = {m: p.communicate()[1] for m, p in procs.items() if p.wait() != 0}
    assert not failed, failed


def test_plan_spec_rundir_and_methods_import_no_torch():
    code = "import sys, atlib.plan, atlib.rundir, atlib.methods, atlib.tables; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "False", proc.stderr


def test_only_the_run_directory_module_names_a_runs_files():
    owners = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ("metrics.json", "model.pt", "checkpoint.pt"):
                owners.setdefault(module_name(path), set()).add(node.value)
    assert set(owners) == {"atlib.rundir"}, owners


def test_the_schema_enumerates_exactly_the_registered_methods():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    method = schema["$defs"]["method"]["oneOf"]
    enums = [method[0]["enum"], method[1]["properties"]["name"]["enum"],
             schema["properties"]["methods"]["propertyNames"]["enum"],
             schema["properties"]["tables"]["additionalProperties"]["properties"]["rows"]["items"]["properties"]
             ["methods"]["propertyNames"]["enum"]]
    for enum in enums:
        assert tuple(enum) == methods.names()


def test_a_method_added_through_the_registry_alone_trains(monkeypatch, tmp_path):
    """A toy method: CE plus beta times the squared distance of the logits to the teacher's."""
    from atlib.engine import train_step
    from atlib.losses import Objective, Step
    from atlib.models import build_model
    from atlib.spec import Method

    def logit_matching(obj, x, y, progress):
        logits, _ = obj.student(x)
        yt, _ = obj.teacher_outputs(x)
        ce = F.cross_entropy(logits, y)
        match = (logits - yt).pow(2).mean()
        return Step(ce + obj.method.beta * match, logits, {"ce": ce.detach(), "match": match.detach()})

    monkeypatch.setitem(methods.REGISTRY, "logit-match",
                        MethodDef("logit-match", frozenset({"beta"}), True, logit_matching))
    method = Method.from_config({"name": "logit-match", "beta": 0.5})
    with pytest.raises(Exception, match="takes no parameter"):
        Method.from_config({"name": "logit-match", "T": 2})
    torch.manual_seed(0)
    student, teacher = build_model("wrn-10-1", 1, 10), build_model("wrn-10-2", 1, 10).eval()
    objective = Objective(method, student, teacher, (1, 16, 16))
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    before = [p.detach().clone() for p in student.parameters()]
    step = train_step(objective, optimizer, x, y, 0.0)
    assert step.loss.item() == pytest.approx((step.terms["ce"] + 0.5 * step.terms["match"]).item(), rel=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
