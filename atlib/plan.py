"""The experiment plan: an experiment config -> every run to train and every table cell to fill.

Pure Python, no Snakemake: the Snakefile asks this module what to build. A run is identified by a
path that says what it is (its key, ``atlib.runkey.RunKey``), so identical runs are planned once whichever
tables ask for them: ``{dataset}/{recipe}/{model}/{variant}/seed{s}``, with ``-from-{teacher}-seed{t}`` after
the variant of a distilled student. ``variant`` is the method name plus the parameters that differ from the
config's defaults for that method (e.g. ``at``, ``at-p=1``, ``at-mapping=max-p=1``, ``at-groups=0``). A row's
teacher is the ``baseline`` run of the teacher model, so the WRN-16-2 teacher of one row is the WRN-16-2
baseline student of another.

The plan is built table by table (:func:`_table`), row by row (:func:`_row`), cell by cell (:func:`_cell`),
each cell's runs by :func:`_run`.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import methods, rundir
from .errors import ConfigError
from .importpath import IMPORT_PATH, path_slug
from .method import Method
from .runkey import TEACHER_VARIANT, RunKey
from .spec import DataConfig, ModelSpec, Recipe, RunSpec, check_keys, check_label, check_name, compact_dict, data_dict

TOP_KEYS = {"claims", "convergence", "shipped", "name", "results", "seeds", "teacher_seed", "device", "threads",
            "max_teacher_error",
            "tracking", "datasets", "recipes", "methods", "tables", "resources"}
# A teacher may have its own data, recipe and seed policy: set on a table or a row (the row wins).
TEACHER_KEYS = {"teacher_dataset", "teacher_recipe", "teacher_seed"}
TABLE_KEYS = {"title", "dataset", "recipe", "paper", "columns", "rows", "seeds", "metrics", "max_teacher_error",
              *TEACHER_KEYS}
ROW_KEYS = {"label", "student", "teacher", "dataset", "recipe", "paper_row", "methods", *TEACHER_KEYS}
COLUMN_KEYS = {"label", "method", "student", "teacher"}
SPECIAL_COLUMNS = ("student", "teacher")
RESOURCES = {"mem_mb": 4000, "runtime": 60, "gpu": 0}  # per training job, unless the config says otherwise


@dataclass(frozen=True)
class Column:
    label: str
    method: dict[str, Any] | None  # None for the special student/teacher columns
    student: Any = None  # a model config replacing the row's for this column (e.g. Table 3's AT outputs)
    teacher: Any = None


@dataclass
class Cell:
    table: str
    row: str
    column: str
    runs: list[str]  # one per seed


@dataclass(frozen=True)
class ClaimRef:
    """A confirmatory claim: in ``table`` (row ``row``, or its only row), column ``better`` has a lower error
    than column ``worse``."""

    table: str
    row: str
    better: str
    worse: str


@dataclass(frozen=True)
class TrendRef:
    """A confirmatory trend: column ``column``'s gain over column ``over`` (the error of ``over`` less its own, per
    seed) is larger in table ``larger_in`` than in table ``than_in`` (each table's only row)."""

    column: str
    over: str
    larger_in: str
    than_in: str


@dataclass(frozen=True)
class Claims:
    """A config's preregistered claims: judged at ``level`` after ``correction`` over all of them (the comparisons
    and the trends together); every other comparison of the report is exploratory."""

    confirmatory: tuple[ClaimRef, ...] = ()
    level: float = 0.05
    correction: str = "holm"
    trends: tuple[TrendRef, ...] = ()


CLAIM_KEYS = {"confirmatory", "level", "correction", "trends"}
CORRECTIONS = ("holm", "none")


@dataclass(frozen=True)
class Convergence:
    """A study's convergence rule, stated before it runs: the ``seeds`` of every column but the teacher's are trained
    again ``factor`` times as long (the same schedule stretched); a table's row is converged when, in every such
    column, the median validation error of the longer runs is within ``tolerance`` points of the same seeds' median
    at the planned length. ``runs``: (table, row, column) -> [(seed, planned run, longer run)]."""

    seeds: tuple[int, ...]
    factor: int
    tolerance: float
    runs: dict[tuple[str, str, str], list[tuple[int, str, str]]] = field(default_factory=dict)

    def recipe(self, name: str) -> str:
        return f"{name}-x{self.factor}"


CONVERGENCE_KEYS = {"seeds", "factor", "tolerance"}


def _convergence(cfg: Any) -> Convergence | None:
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        raise ConfigError("convergence: expected a mapping with seeds, factor and tolerance")
    check_keys(cfg, CONVERGENCE_KEYS, "convergence")
    seeds = _seeds(cfg.get("seeds"), "convergence.seeds")
    factor, tolerance = cfg.get("factor", 2), cfg.get("tolerance")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ConfigError(f"convergence.factor: expected an integer >= 2, got {factor!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance <= 0:
        raise ConfigError(f"convergence.tolerance: expected a number of points > 0, got {tolerance!r}")
    return Convergence(tuple(seeds), factor, float(tolerance))


def _trends(cfg: Any, tables: Mapping[str, Mapping[str, Any]]) -> tuple[TrendRef, ...]:
    refs = []
    for i, t in enumerate(cfg or []):
        where = f"claims.trends[{i}]"
        if not isinstance(t, Mapping):
            raise ConfigError(f"{where}: expected a mapping with column, over, larger_in and than_in")
        check_keys(t, {"column", "over", "larger_in", "than_in"}, where)
        for key in ("larger_in", "than_in"):
            table = tables.get(t.get(key))
            if table is None:
                raise ConfigError(f"{where}.{key}: expected one of {', '.join(tables)}, got {t.get(key)!r}")
            if len(table["rows"]) != 1:
                raise ConfigError(f"{where}.{key}: table {t[key]!r} has {len(table['rows'])} rows; a trend "
                                  "compares tables of one row")
            for col in ("column", "over"):
                if t.get(col) not in table["columns"]:
                    raise ConfigError(f"{where}.{col}: expected a column of table {t[key]!r} "
                                      f"({', '.join(table['columns'])}), got {t.get(col)!r}")
        if t["larger_in"] == t["than_in"] or t["column"] == t["over"]:
            raise ConfigError(f"{where}: a trend compares two tables and two columns")
        refs.append(TrendRef(t["column"], t["over"], t["larger_in"], t["than_in"]))
    return tuple(refs)


def _claims(cfg: Any, tables: Mapping[str, Mapping[str, Any]]) -> Claims:
    """The ``claims`` section, each claim checked against the planned tables' rows and columns."""
    if cfg is None:
        return Claims()
    if not isinstance(cfg, Mapping):
        raise ConfigError("claims: expected a mapping with confirmatory, level and correction")
    check_keys(cfg, CLAIM_KEYS, "claims")
    level = cfg.get("level", 0.05)
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ConfigError(f"claims.level: expected a number in (0, 1), got {level!r}")
    correction = cfg.get("correction", "holm")
    if correction not in CORRECTIONS:
        raise ConfigError(f"claims.correction: expected one of {', '.join(CORRECTIONS)}, got {correction!r}")
    refs = []
    for i, c in enumerate(cfg.get("confirmatory") or []):
        where = f"claims.confirmatory[{i}]"
        if not isinstance(c, Mapping):
            raise ConfigError(f"{where}: expected a mapping with table, better and worse (and row)")
        check_keys(c, {"table", "row", "better", "worse"}, where)
        table = tables.get(c.get("table"))
        if table is None:
            raise ConfigError(f"{where}.table: expected one of {', '.join(tables)}, got {c.get('table')!r}")
        rows = table["rows"]
        row = c.get("row", rows[0] if len(rows) == 1 else None)
        if row not in rows:
            raise ConfigError(f"{where}.row: expected one of {', '.join(map(repr, rows))}, got {row!r}")
        for key in ("better", "worse"):
            if c.get(key) not in table["columns"]:
                raise ConfigError(f"{where}.{key}: expected a column of table {c['table']!r} "
                                  f"({', '.join(table['columns'])}), got {c.get(key)!r}")
        if c["better"] == c["worse"]:
            raise ConfigError(f"{where}: better and worse name the same column {c['better']!r}")
        refs.append(ClaimRef(c["table"], row, c["better"], c["worse"]))
    if len(set(refs)) != len(refs):
        raise ConfigError("claims.confirmatory: a claim is listed twice")
    return Claims(tuple(refs), float(level), correction, _trends(cfg.get("trends"), tables))


@dataclass
class Plan:
    name: str
    results: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> run spec (plain data)
    teacher_of: dict[str, str] = field(default_factory=dict)  # student run id -> teacher run id
    cells: list[Cell] = field(default_factory=list)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # table id -> layout and metadata
    threads: int = 1  # CPU threads of each training job
    resources: dict[str, int] = field(default_factory=lambda: dict(RESOURCES))  # per training job
    claims: Claims = field(default_factory=lambda: Claims())  # the preregistered (confirmatory) comparisons
    convergence: Convergence | None = None  # the study's convergence rule and its longer runs
    shipped: dict[str, tuple[str, str]] = field(default_factory=dict)  # run id -> (its files' folder, model SHA-256)

    @property
    def teachers(self) -> set[str]:
        return set(self.teacher_of.values())

    def students_waiting(self, run_id: str) -> int:
        """How many students learn from ``run_id``: the scheduler's priority for it."""
        return sum(t == run_id for t in self.teacher_of.values())

    def run_dir(self, run_id: str) -> str:
        return str(rundir.run_dir(self.results, run_id))

    @property
    def store(self) -> str:
        return next(iter(self.runs.values()))["tracking"]["store"]

    @property
    def experiments(self) -> list[str]:
        return sorted({spec["tracking"]["experiment"] for spec in self.runs.values()})



def run_data_dict(data: DataConfig, seed: int) -> dict[str, Any]:
    """A run's dataset: ``subset_seed: run`` becomes the run's seed, so the id's seed names the subset."""
    d = data_dict(data)
    if d.get("subset_seed") == "run":
        d["subset_seed"] = seed
    return d

def _slug(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(_slug(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def variant_slug(method: Method, defaults: Method) -> str:
    """Method name plus the parameters that differ from ``defaults``."""
    mine, base = method.params(), defaults.params()
    diffs = [f"{k}={_slug(v)}" for k, v in sorted(mine.items()) if k != "name" and base.get(k) != v]
    return "-".join([path_slug(method.name), *diffs])


def _method(cfg: Mapping[str, Any] | str, defaults: Mapping[str, Mapping[str, Any]], where: str) -> Method:
    cfg = {"name": cfg} if isinstance(cfg, str) else dict(cfg)
    name = cfg.get("name")  # Method.from_config names an unknown one
    return Method.from_config({"name": name, **defaults.get(name, {}), **cfg}, where)


def _columns(cfg: list[Any], where: str) -> list[Column]:
    if not cfg:
        raise ConfigError(f"{where}: expected a non-empty list of columns")
    cols = []
    for i, c in enumerate(cfg):
        if isinstance(c, str):
            cols.append(Column(c, None if c in SPECIAL_COLUMNS else {"name": c}))
        elif isinstance(c, Mapping):
            check_keys(c, COLUMN_KEYS, f"{where}[{i}]")
            if "label" not in c or "method" not in c:
                raise ConfigError(f"{where}[{i}]: a column is a method name or {{label, method}}")
            m = c["method"]
            cols.append(Column(str(c["label"]), {"name": m} if isinstance(m, str) else dict(m),
                               c.get("student"), c.get("teacher")))
        else:
            raise ConfigError(f"{where}[{i}]: a column is a method name or {{label, method}}, got {c!r}")
    labels = [check_label(c.label, f"{where}.{c.label}") for c in cols]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: duplicate column labels {labels}")
    return cols


def _seeds(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of seeds, got {value!r}")
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in value):
        raise ConfigError(f"{where}: seeds must be integers >= 0, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: duplicate seeds in {value!r}")
    return value


def _teacher_seed(value: Any, where: str) -> str | int:
    if value != "same" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise ConfigError(f"{where}: expected 'same' or a seed >= 0, got {value!r}")
    return value


SCHEMA = Path(__file__).with_name("config.schema.yaml")  # package data: a wheel plans as a checkout does


def schema() -> dict[str, Any]:
    """The config schema, with the method names of the registry (atlib.method) and the form of a user's method
    (``package.module:Class``) filled in."""
    import yaml

    loaded = yaml.safe_load(SCHEMA.read_text())
    loaded["$defs"]["method_name"]["then"]["pattern"] = f"^{IMPORT_PATH.pattern}$"
    loaded["$defs"]["method_name"]["else"]["enum"] = list(methods.names())
    return loaded


def validate_config(config: Mapping[str, Any]) -> None:
    """Check ``config`` against the JSON schema; the most relevant violation becomes one ConfigError line."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        # a pattern says little to a person: the schema's description of it says what it stands for
        expected = error.schema.get("description") if error.validator == "pattern" else None
        raise ConfigError(f"{where or 'config'}: {error.message}{f'; expected {expected}' if expected else ''}")


def load_yaml(path: str) -> Any:
    """Read a YAML file (or standard input for ``-``); a syntax error names the file and line."""
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def load_plan(path: str) -> Plan:
    """The plan of an experiment config file, checked as the DAG checks it: the schema, then the plan."""
    config = load_yaml(path) or {}
    validate_config(config)
    return build_plan(config)


def missing_data(plan: Plan) -> list[str]:
    """One message per dataset folder of the plan that does not exist (checked before the DAG runs)."""
    seen, problems = set(), []
    for spec in plan.runs.values():
        cfg = DataConfig.from_config(spec["dataset"])
        path = cfg.path
        if path is None or cfg.download or path in seen:
            continue
        seen.add(path)
        if not path.is_dir():
            hint = {"fashion-mnist": "apt-get install dataset-fashion-mnist, or set its root",
                    "cifar10": "put cifar-10-batches-py there, or set download: true",
                    "cifar100": "put cifar-100-python there, or set download: true",
                    "imagefolder": "a folder with train/ and val/ class folders"}[cfg.name]
            problems.append(f"dataset {cfg.name!r}: root {path} does not exist ({hint})")
    return problems


def set_aside_broken_runs(plan: Plan) -> list[str]:
    """Move aside every finished run whose metrics.json or model.pt is unreadable or truncated.

    Snakemake takes an existing output for a finished one; moving a broken ``metrics.json`` to
    ``metrics.json.corrupt`` makes the run a job again instead of a crash (or a wrong cell) later.
    Returns one warning per run set aside.
    """
    warnings = []
    for run_id in plan.runs:
        if (problem := rundir.broken(plan.run_dir(run_id))) is not None:
            rundir.set_aside_metrics(plan.run_dir(run_id))
            warnings.append(f"run {run_id}: metrics.json {problem}; it will be trained again")
    return warnings


@dataclass(frozen=True)
class _Shared:
    """What every table of a config shares, checked once."""

    datasets: dict[str, DataConfig]
    recipes: dict[str, Recipe]
    method_defaults: dict[str, Any]  # the config's ``methods``: method name -> parameters
    defaults_of: dict[str, Method]  # each method with the config's defaults: a variant names what differs
    seeds: list[int]
    config: Mapping[str, Any]
    convergence: Convergence | None = None


@dataclass(frozen=True)
class _Row:
    """A table row, resolved: where its students and teacher learn, and what."""

    table: str
    index: int
    label: str
    dataset: str
    recipe: str
    teacher_dataset: str
    teacher_recipe: str
    teacher_seed: str | int  # "same", or the one teacher seed of every student
    methods: dict[str, Any]  # method defaults for this row
    student: ModelSpec
    teacher: ModelSpec | None
    seeds: list[int]
    gate: float | None  # max_teacher_error

    @property
    def where(self) -> str:
        return f"tables.{self.table}.rows[{self.index}]"


def build_plan(config: Mapping[str, Any]) -> Plan:
    """Every run and every table cell of ``config``; any bad value is a ConfigError naming its key."""
    if not isinstance(config, Mapping):
        raise ConfigError("config: expected a mapping")
    check_keys(config, TOP_KEYS, "config")
    for key in ("datasets", "tables"):
        if not config.get(key):
            raise ConfigError(f"{key}: missing or empty")
    plan = Plan(name=check_name(config.get("name", "atlib"), "name"), results=str(config.get("results", "results")))
    for key in ("datasets", "recipes", "tables"):
        for name in config.get(key) or {}:
            check_name(name, f"{key}.{name}")
    plan.threads = config.get("threads") or 1
    plan.resources = {**RESOURCES, **(config.get("resources") or {})}
    shared = _shared(config)
    for name, table in config["tables"].items():
        _table(plan, shared, name, table)
    plan.claims = _claims(config.get("claims"), plan.tables)
    plan.convergence = shared.convergence
    plan.shipped = _shipped(config.get("shipped"), plan)
    return plan


SHA256 = re.compile(r"[0-9a-f]{64}")


def _shipped(cfg: Any, plan: Plan) -> dict[str, tuple[str, str]]:
    """``shipped``: planned runs that come as files (a folder with the run's model.pt and metrics.json, and the
    model's SHA-256), put in place before the DAG instead of trained (atlib.preflight.install_shipped)."""
    out = {}
    for run_id, entry in (cfg or {}).items():
        where = f"shipped.{run_id}"
        if run_id not in plan.runs:
            raise ConfigError(f"{where}: not a run this config plans")
        if not isinstance(entry, Mapping) or set(entry) != {"from", "sha256"}:
            raise ConfigError(f"{where}: expected {{from: a folder with model.pt and metrics.json, sha256: ...}}")
        if not isinstance(entry["sha256"], str) or not SHA256.fullmatch(entry["sha256"]):
            raise ConfigError(f"{where}.sha256: expected the model file's SHA-256, 64 lowercase hex digits")
        out[run_id] = (str(entry["from"]), entry["sha256"])
    return out


def _shared(config: Mapping[str, Any]) -> _Shared:
    seeds = _seeds(config.get("seeds", [0]), "seeds")
    _teacher_seed(config.get("teacher_seed", "same"), "teacher_seed")
    datasets = {k: DataConfig.from_config(v, f"datasets.{k}") for k, v in config["datasets"].items()}
    recipes = {k: Recipe.from_config(v or {}, f"recipes.{k}") for k, v in (config.get("recipes") or {}).items()}
    recipes.setdefault("paper", Recipe())
    method_defaults = dict(config.get("methods") or {})
    for name, params in method_defaults.items():
        methods.lookup(name, f"methods.{name}")
        Method.from_config({"name": name, **(params or {})}, f"methods.{name}")
    defaults_of = {n: Method.from_config({"name": n, **(method_defaults.get(n) or {})}) for n in methods.names()}
    convergence = _convergence(config.get("convergence"))
    if convergence is not None:
        for name, r in list(recipes.items()):  # each recipe stretched: the same schedule, factor times the epochs
            long = convergence.recipe(name)
            if long in recipes:
                raise ConfigError(f"recipes.{long}: the name is taken by convergence's longer runs of {name!r}")
            recipes[long] = dataclasses.replace(r, epochs=r.epochs * convergence.factor,
                                                eval_every=r.eval_every * convergence.factor)
    return _Shared(datasets, recipes, method_defaults, defaults_of, seeds, config, convergence)


def _lookup(table: Mapping[str, Any], row: Mapping[str, Any], key: str, options: Mapping[str, Any],
            where: str) -> str:
    """The name ``key`` gives on the row or else the table, which must be one of ``options``."""
    name = row.get(key, table.get(key))
    if name is None:
        raise ConfigError(f"{where}.{key}: missing (set it on the table or the row)")
    if name not in options:
        raise ConfigError(f"{where}.{key}: {name!r} is not defined; defined: {', '.join(options)}")
    return name


def _table(plan: Plan, shared: _Shared, name: str, table: Any) -> None:
    """The cells of one table, row by row, and its layout."""
    where = f"tables.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    check_keys(table, TABLE_KEYS, where)
    columns = _columns(table.get("columns"), f"{where}.columns")
    seeds = _seeds(table["seeds"], f"{where}.seeds") if "seeds" in table else shared.seeds
    gate = table.get("max_teacher_error", shared.config.get("max_teacher_error"))
    rows = table.get("rows")
    if not rows:
        raise ConfigError(f"{where}.rows: expected a non-empty list of rows")
    resolved = []
    for i, row in enumerate(rows):
        resolved.append(r := _row(shared, name, table, i, row, seeds, gate))
        for col in columns:
            keys = [str(k) for k in _cell(plan, shared, r, col)]
            plan.cells.append(Cell(name, r.label, col.label, keys))
            if shared.convergence is not None and col.label != "teacher":
                _longer(plan, shared, r, col, keys)
    labels = [r.label for r in resolved]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}.rows: duplicate row labels {labels}")
    plan.tables[name] = {
        "title": table.get("title", name), "paper": table.get("paper"),
        "columns": [c.label for c in columns], "rows": labels,
        "paper_rows": [r.get("paper_row", lbl) for r, lbl in zip(rows, labels, strict=True)],
        "metrics": table.get("metrics", ["top1"]),
        # images per class of each row's students (the few-shot curve's x), None for a first-N subset
        "per_class": [shared.datasets[r.dataset].per_class for r in resolved],
    }


def _row(shared: _Shared, table_name: str, table: Mapping[str, Any], index: int, row: Any, seeds: list[int],
         gate: float | None) -> _Row:
    """A row with its table's settings and the config's defaults resolved."""
    where = f"tables.{table_name}.rows[{index}]"
    check_keys(row, ROW_KEYS, where)
    datasets, recipes = shared.datasets, shared.recipes
    ds, rc = _lookup(table, row, "dataset", datasets, where), _lookup(table, row, "recipe", recipes, where)
    policy = {**{k: table[k] for k in TEACHER_KEYS if k in table}, **{k: row[k] for k in TEACHER_KEYS if k in row}}
    t_ds = _lookup(policy, {}, "teacher_dataset", datasets, where) if "teacher_dataset" in policy else ds
    t_rc = _lookup(policy, {}, "teacher_recipe", recipes, where) if "teacher_recipe" in policy else rc
    teacher_seed = _teacher_seed(policy.get("teacher_seed", shared.config.get("teacher_seed", "same")),
                                 f"{where}.teacher_seed")
    row_methods = dict(shared.method_defaults)
    for name, params in (row.get("methods") or {}).items():
        methods.lookup(name, f"{where}.methods.{name}")
        row_methods[name] = {**(row_methods.get(name) or {}), **(params or {})}
    if "student" not in row:
        raise ConfigError(f"{where}.student: missing")
    student = ModelSpec.from_config(row["student"], f"{where}.student")
    teacher = ModelSpec.from_config(row["teacher"], f"{where}.teacher") if row.get("teacher") else None
    label = str(row.get("label") or (f"{student.slug} <- {teacher.slug}" if teacher else student.slug))
    check_label(label, f"{where}.label")
    return _Row(table_name, index, label, ds, rc, t_ds, t_rc, teacher_seed, row_methods, student, teacher, seeds,
                gate)


def _cell(plan: Plan, shared: _Shared, row: _Row, col: Column) -> list[RunKey]:
    """The runs of one cell, one per seed (a student's teacher planned before it)."""
    baseline = shared.defaults_of[TEACHER_VARIANT]
    if col.label == "teacher":
        if row.teacher is None:
            raise ConfigError(f"{row.where}.teacher: missing, and the table has a teacher column")
        seeds = row.seeds if row.teacher_seed == "same" else [row.teacher_seed]
        return [_run(plan, shared, row.teacher_dataset, row.teacher_recipe, row.teacher, baseline, s)
                for s in seeds]
    if col.label == "student":
        return [_run(plan, shared, row.dataset, row.recipe, row.student, baseline, s) for s in row.seeds]
    where = f"tables.{row.table}.columns.{col.label}"
    method = _method(col.method, row.methods, where)
    student = ModelSpec.from_config(col.student, f"{where}.student") if col.student else row.student
    teacher = ModelSpec.from_config(col.teacher, f"{where}.teacher") if col.teacher else row.teacher
    if not method.needs_teacher:
        return [_run(plan, shared, row.dataset, row.recipe, student, method, s) for s in row.seeds]
    if teacher is None:
        raise ConfigError(f"{row.where}.teacher: column {col.label!r} ({method.name}) needs a teacher")
    keys = []
    for s in row.seeds:
        t_seed = s if row.teacher_seed == "same" else row.teacher_seed
        t_key = _run(plan, shared, row.teacher_dataset, row.teacher_recipe, teacher, baseline, t_seed)
        keys.append(_run(plan, shared, row.dataset, row.recipe, student, method, s, (t_key, teacher), row.gate))
    return keys


def _longer(plan: Plan, shared: _Shared, row: _Row, col: Column, keys: list[str]) -> None:
    """The convergence rule's longer runs of one cell: its seeds under the stretched recipe, the same teacher."""
    rule = shared.convergence
    assert rule is not None
    if shared.datasets[row.dataset].validation_per_class is None:
        raise ConfigError(f"convergence: table {row.table!r} trains on dataset {row.dataset!r}, which has no "
                          "validation_per_class; the rule compares validation errors")
    missing = [s for s in rule.seeds if s not in row.seeds]
    if missing:
        raise ConfigError(f"convergence.seeds: {missing} are not seeds of table {row.table!r} ({row.seeds})")
    longer = dataclasses.replace(row, recipe=rule.recipe(row.recipe), seeds=list(rule.seeds),
                                 teacher_recipe=row.teacher_recipe)
    long_keys = [str(k) for k in _cell(plan, shared, longer, col)]
    planned = dict(zip(row.seeds, keys, strict=True))
    rule.runs[(row.table, row.label, col.label)] = [
        (s, planned[s], k) for s, k in zip(rule.seeds, long_keys, strict=True)]


def _run(plan: Plan, shared: _Shared, ds: str, rc: str, model: ModelSpec, method: Method, seed: int,
         teacher: tuple[RunKey, ModelSpec] | None = None, gate: float | None = None) -> RunKey:
    """Plan one run (once, whichever cells ask for it): its key and its run spec."""
    # a user's method named only in a column is registered by now, after the defaults were taken
    defaults = shared.defaults_of.get(method.name) or Method.from_config(
        {"name": method.name, **(shared.method_defaults.get(method.name) or {})})
    variant = variant_slug(method, defaults)
    key = RunKey(ds, rc, model.slug, variant, teacher[0] if teacher else None, seed)
    config, run_id = shared.config, str(key)
    store = (config.get("tracking") or {}).get("store") or f"{plan.results}/mlflow.db"
    spec = {
        "run_id": run_id, "dataset": run_data_dict(shared.datasets[ds], seed),
        "model": dataclasses.asdict(model), "method": method.params(),
        "recipe": dataclasses.asdict(shared.recipes[rc]), "seed": seed,
        "device": config.get("device", "auto"), "threads": config.get("threads"),
        "tracking": {"experiment": ds, "store": store, "tags": {"recipe": rc, "variant": variant}},
    }
    if teacher is not None:
        t_id = str(teacher[0])
        spec["teacher"] = {"run_dir": plan.run_dir(t_id), "model": dataclasses.asdict(teacher[1]), "max_error": gate}
        plan.teacher_of[run_id] = t_id
    spec = compact_dict(RunSpec.from_dict(spec))  # every planned run is a valid run spec
    if run_id in plan.runs and plan.runs[run_id] != spec:
        raise ConfigError(f"run {run_id} is planned twice with different settings (e.g. a different "
                          "max_teacher_error); make them agree")
    plan.runs[run_id] = spec
    return key


# --- figure files (known from the plan alone, so Snakemake can declare them) -------------------

def row_slug(label: str) -> str:
    """A file-name-safe row label: ``wrn-16-1 <- wrn-16-2`` -> ``wrn-16-1-from-wrn-16-2``."""
    text = re.sub(r"\s*<-\s*", "-from-", label.strip())
    return re.sub(r"[^A-Za-z0-9.+=_-]+", "-", text).strip("-") or "row"


@dataclass(frozen=True)
class PlannedFigure:
    kind: str  # attention | curves | errors
    table: str
    row: str | None
    path: Path


def gain_points(plan: Plan) -> list[tuple[int, str, str]]:
    """(images per class, table, row) of every row with a per-class student subset and a student column:
    the x of the curve of each method's gain over the student, in increasing order."""
    points = [(n, table, row) for table, layout in plan.tables.items() if "student" in layout["columns"]
              for n, row in zip(layout.get("per_class", []), layout["rows"], strict=False) if n is not None]
    return sorted(points)


def has_attention(plan: Plan, table: str) -> bool:
    return {"student", "teacher", "at"} <= set(plan.tables[table]["columns"])


def planned_figures(plan: Plan, out_dir: Path | str) -> list[PlannedFigure]:
    """Every figure of a plan and its file: known from the plan alone, so Snakemake can declare them."""
    out_dir = Path(out_dir)
    figures = []
    for table, layout in plan.tables.items():
        slugs: set[str] = set()
        for row in layout["rows"]:
            slug = row_slug(row)
            while slug in slugs:  # two labels that differ only in punctuation
                slug += "-"
            slugs.add(slug)
            if has_attention(plan, table):
                figures.append(PlannedFigure("attention", table, row, out_dir / f"{table}-{slug}-attention.png"))
            figures.append(PlannedFigure("curves", table, row, out_dir / f"{table}-{slug}-curves.png"))
        figures.append(PlannedFigure("errors", table, None, out_dir / f"{table}-errors.png"))
    if len(gain_points(plan)) >= 2:
        figures.append(PlannedFigure("gains", "", None, out_dir / "gains.png"))
    return figures


def figure_paths(plan: Plan, out_dir: Path | str) -> list[str]:
    return [str(f.path) for f in planned_figures(plan, out_dir)]


