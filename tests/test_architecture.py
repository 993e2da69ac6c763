"""The shape of the code: imports only go down, one owner per concept, a method is one registry entry."""

import ast
import itertools
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
import yaml

from atlib import methods
from atlib.errors import ConfigError
from atlib.methods import Method, param, register
from atlib.plan import build_plan, schema, validate_config
from atlib.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "atlib"
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_module_target(node: ast.AST, package: str) -> str | None:
    """The module of ``importlib.import_module("atlib.x")`` or ``import_module(".x", package)``: a string
    constant, so an import the statements do not show is an edge all the same."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    target = node.args[0].value
    if name != "import_module" or not isinstance(target, str):
        return None
    if target.startswith("."):
        level = len(target) - len(target.lstrip("."))
        base = package.split(".")[: len(package.split(".")) - level + 1]
        target = ".".join(base + [target.lstrip(".")])
    return target


def imports_of_source(name: str, source: str, is_package: bool = False) -> set[str]:
    """Every atlib module the module ``name`` imports: at module level or inside functions, under ``if
    TYPE_CHECKING:`` (for annotations only, an edge on paper all the same), by ``importlib``, and every module of
    its package where it imports them all (``pkgutil.iter_modules``)."""
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
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
        elif (target := _import_module_target(node, package)) is not None and target.startswith("atlib"):
            found.add(target)
        elif isinstance(node, ast.Attribute) and node.attr == "iter_modules" and is_package:
            found |= {module_name(m) for m in MODULES if module_name(m).rsplit(".", 1)[0] == name
                      and not module_name(m).rsplit(".", 1)[1].startswith("_")}
    found.discard(name)
    return found


def imports_of(path: Path) -> set[str]:
    return imports_of_source(module_name(path), path.read_text(), path.name == "__init__.py")


GRAPH = {module_name(m): imports_of(m) for m in MODULES}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order), or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    return next((found for node in graph if node not in state and (found := visit(node, []))), None)


def test_the_import_graph_of_atlib_has_no_cycle():
    assert cycle(GRAPH) is None, "import cycle: " + " -> ".join(cycle(GRAPH) or [])


def test_an_importlib_import_is_an_edge_and_an_upward_one_a_cycle():
    """A method module that imports the objective's module by name reaches up, to a row above it."""
    source = 'import importlib\n\ndef loss():\n    return importlib.import_module("atlib.losses").Step\n'
    assert imports_of_source("atlib.methods.at", source) == {"atlib.losses"}
    assert imports_of_source("atlib.methods.at", source.replace('"atlib.losses"', '"..losses", "atlib.methods"'))\
        == {"atlib.losses"}
    assert upward({**GRAPH, "atlib.methods.at": GRAPH["atlib.methods.at"] | {"atlib.losses"}}, ROWS) == [
        "atlib.methods.at -> atlib.losses"]
    # the registry's module reaching the spec would close a loop: the spec imports it
    found = cycle({**GRAPH, "atlib.method": GRAPH["atlib.method"] | {"atlib.spec"}})
    assert found is not None and "atlib.spec" in found and "atlib.method" in found
    # an import for annotations only is an edge too: never run, but it is what the module depends on
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..losses import Step\n"
    assert imports_of_source("atlib.methods.at", typing_only) == {"atlib.losses"}


def test_the_method_package_reaches_each_of_its_methods():
    assert {"atlib.methods.at", "atlib.methods.kd", "atlib.method"} <= GRAPH["atlib.methods"]
    # and the package root imports them, so the registry is whole wherever a config is read
    assert "atlib.methods" in GRAPH["atlib"]


# --- the layers of docs/design.md: every import goes to a row drawn below its module's -------------------

def design_rows(text: str) -> list[list[str]]:
    """The rows of the module table of docs/design.md, top first: each row's files (``name.py``) and packages
    (``name/``), as the lines that start with a layer number list them."""
    table = text.split("Modules, each importing only those", 1)[1].split("```", 2)[1]
    rows = []
    for line in table.splitlines():
        words = line.split()
        if words and words[0].isdigit():
            rows.append([w for w in itertools.takewhile(lambda w: w.endswith((".py", "/")), words[1:])])
    return rows


def place(module: str, rows: list[list[str]]) -> tuple[int, str] | None:
    """The row (its index) and the entry of the table that draw ``module`` (a package's entry holds its modules)."""
    for i, row in enumerate(rows):
        for entry in row:
            name = "atlib" if entry == "__init__.py" else f"atlib.{entry.removesuffix('.py').removesuffix('/')}"
            if module == name or (entry.endswith("/") and module.startswith(name + ".")):
                return i, entry
    return None


def upward(graph: dict[str, set[str]], rows: list[list[str]]) -> list[str]:
    """Every import that does not go down: to a row above its module's, or to another entry of the same row (a
    package's modules among themselves excepted: the cycle check covers them). A module the table lacks is one."""
    bad = [f"{m} is not in the table" for m in sorted(graph) if place(m, rows) is None]
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            here, there = place(module, rows), place(dep, rows)
            if here is not None and there is not None and there[0] <= here[0] and not (
                    there == here and here[1].endswith("/")):
                bad.append(f"{module} -> {dep}")
    return bad


ROWS = design_rows((ROOT / "docs/design.md").read_text())


def test_every_import_goes_down_the_layers_of_the_design():
    assert upward(GRAPH, ROWS) == []


def test_an_upward_import_even_for_annotations_only_breaks_the_layers():
    """A hand-made graph over a hand-made table: the check above finds what it is there for."""
    rows = design_rows("Modules, each importing only those below it:\n```\n2  losses.py\n1  spec.py  rundir.py\n"
                       "0  methods/   the registry\n   (a continued line)\n0  errors.py\n```\n")
    assert rows == [["losses.py"], ["spec.py", "rundir.py"], ["methods/"], ["errors.py"]]
    down = {"atlib.losses": {"atlib.spec", "atlib.methods.at"}, "atlib.spec": {"atlib.methods"},
            "atlib.methods": {"atlib.methods.at"}, "atlib.methods.at": {"atlib.errors"}, "atlib.rundir": set(),
            "atlib.errors": set()}
    assert upward(down, rows) == []
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..losses import Objective\n"
    up = {**down, "atlib.methods.at": imports_of_source("atlib.methods.at", typing_only)}
    assert upward(up, rows) == ["atlib.methods.at -> atlib.losses"]
    sideways = {**down, "atlib.rundir": {"atlib.spec"}}  # a row is no layer of peers that import each other
    assert upward(sideways, rows) == ["atlib.rundir -> atlib.spec"]
    assert upward({**down, "atlib.cli": set()}, rows) == ["atlib.cli is not in the table"]


def test_the_spec_reaches_no_method_module_and_the_methods_nothing_above_the_spec():
    assert not any(d == "atlib.methods" or d.startswith("atlib.methods.") for d in GRAPH["atlib.spec"])
    for module in (m for m in GRAPH if m.startswith("atlib.methods")):
        assert GRAPH[module] <= {"atlib.method", "atlib.attention", "atlib.errors"} | {
            m for m in GRAPH if m.startswith("atlib.methods.")}, module


def test_config_error_comes_from_its_own_module_everywhere():
    """One owner: no module takes ConfigError through another that imports it (the spec, say)."""
    others = []
    for path in [*MODULES, *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py"),
                 ROOT / "workflow/Snakefile", *ROOT.glob("workflow/rules/*.smk")]:
        # a regular expression, not ast: the Snakefile and its rules are not Python
        for module, names in re.findall(r"^\s*from\s+(\S+)\s+import\s+(\([^)]*\)|[^\n]*)", path.read_text(), re.M):
            if re.search(r"\bConfigError\b", names) and module.split(".")[-1] != "errors":
                others.append(f"{path.relative_to(ROOT)}: from {module} import ... ConfigError")
    assert others == []


def test_nothing_imports_the_command_line():
    # atlib.__main__ is `python -m atlib`, the program itself: the one importer of the command line
    assert [m for m, deps in GRAPH.items() if "atlib.cli" in deps] == ["atlib.__main__"]


# One interpreter imports torch, then forks a child per module that imports that module into its fresh copy: a
# module that needs another imported first fails in its child all the same. Preloading torch cannot hide a missing
# `import torch` (ruff's F821 flags the undefined name). Measured alone, 2026-11-29: 14 s wall and 15 s of CPU,
# against 34 s and 66 s for one fresh interpreter per module (each spending a second or more on torch).
IMPORT_EACH = """
import importlib, os, sys, traceback
import torch
failed = {}
for name in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as out:
        message = out.read()
    if os.waitpid(pid, 0)[1] != 0:
        failed[name] = message or "killed"
print(repr(failed))
"""


def test_each_module_imports_alone():
    modules = [m for m in sorted(GRAPH) if m != "atlib.__main__"]  # importing that one runs the program
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, *modules], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{}", proc.stdout


def test_a_module_that_needs_another_imported_first_fails_alone(tmp_path):
    """The check above catches what it is there for: ``b`` uses ``a`` without importing it."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("X = 1\n")
    (pkg / "b.py").write_text("import pkg\nY = pkg.a.X\n")
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, "pkg.a", "pkg.b"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    failed = ast.literal_eval(proc.stdout)
    assert list(failed) == ["pkg.b"] and "has no attribute 'a'" in failed["pkg.b"]


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


def test_the_schema_names_the_registered_methods_in_one_place():
    text = (PACKAGE / "config.schema.yaml").read_text()
    assert "enum: [baseline" not in text and text.count('$ref: "#/$defs/method_name"') == 4
    assert schema()["$defs"]["method_name"]["else"]["enum"] == list(methods.names())
    assert (ROOT / "workflow/schemas/config.schema.yaml").resolve() == PACKAGE / "config.schema.yaml"


def _config(method: dict) -> dict:
    cfg = yaml.safe_load((ROOT / "tests/configs/synthetic.yaml").read_text())
    cfg["methods"] = {method["name"]: {k: v for k, v in method.items() if k != "name"}}
    cfg["tables"]["table1"]["columns"] = ["student", {"label": "new", "method": method}]
    return cfg


def test_a_config_names_a_method_the_schema_knows_from_the_registry():
    validate_config(_config({"name": "kd", "T": 2}))  # the real schema, as the CLI and the DAG load it
    with pytest.raises(ConfigError, match=r"methods: 'distill' is not one of \['at', 'at\+kd', 'baseline'"):
        validate_config({**_config({"name": "kd"}), "methods": {"distill": {}}})
    with pytest.raises(ConfigError, match=r"tables.table1.columns\[1\]"):
        validate_config({**_config({"name": "distill"}), "methods": {}})


@dataclass(frozen=True)
class LogitMatch(Method):
    """A toy method: CE plus beta times the squared distance of the logits to the teacher's."""

    name: ClassVar[str] = "logit-match"
    needs_teacher: ClassVar[bool] = True
    beta: float = param(1.0, lambda v: isinstance(v, float | int) and v >= 0, "a number >= 0")

    def loss(self, obj, x, y, progress):
        from atlib.losses import Step

        logits, _ = obj.student(x)
        yt, _ = obj.teacher_outputs(x)
        ce = F.cross_entropy(logits, y)
        match = (logits - yt).pow(2).mean()
        return Step(ce + self.beta * match, logits, {"ce": ce.detach(), "match": match.detach()})


def test_a_method_class_registered_alone_is_planned_through_the_schema_and_trains():
    """One registration: the schema, the plan, the run spec and the objective all take it."""
    from atlib.engine import train_step
    from atlib.losses import Objective
    from atlib.models import build_model

    register(LogitMatch)
    try:
        cfg = {**_config({"name": "logit-match", "beta": 0.5}), "methods": {}}
        validate_config(cfg)
        plan = build_plan(cfg)
        # beta differs from the class's default, so the run id names it
        run = "synthetic/tiny/wrn-10-1/logit-match-beta=0.5-from-wrn-10-2-seed0/seed0"
        assert plan.teacher_of[run] == "synthetic/tiny/wrn-10-2/baseline/seed0"
        method = RunSpec.from_dict(plan.runs[run]).method
        with pytest.raises(ConfigError, match="takes no parameter"):
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
    finally:
        del methods.REGISTRY["logit-match"]
