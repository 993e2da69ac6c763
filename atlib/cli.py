"""The ``atlib`` command line."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from . import browse, methods, server
from .errors import ConfigError
from .method import Method
from .plan import load_plan, load_yaml, variant_slug
from .runkey import RunKey
from .spec import DataError, ModelSpec


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key, yaml.safe_load(value)



def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run spec of ``atlib train``: the spec file, with every flag given on top of it."""
    spec: dict[str, Any] = dict(load_yaml(args.spec) or {}) if args.spec else {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{args.spec}: expected a mapping of run-spec keys")
    dataset = dict(spec.get("dataset") or {})
    for flag, key in (("dataset", "name"), ("data_root", "root"), ("train_size", "train_size"),
                      ("test_size", "test_size")):
        if getattr(args, flag) is not None:
            dataset[key] = getattr(args, flag)
    if dataset:
        spec["dataset"] = dataset
    if args.model:
        spec["model"] = args.model
    if args.method or args.param:
        method = spec.get("method") or {}
        method = {"name": method} if isinstance(method, str) else dict(method)
        if args.method:
            method["name"] = args.method
        method.update(dict(args.param or []))
        spec["method"] = method
    if args.teacher:
        spec["teacher"] = {"run_dir": args.teacher, "model": args.teacher_model or _recorded_model(args.teacher)}
        if args.max_teacher_error is not None:
            spec["teacher"]["max_error"] = args.max_teacher_error
    recipe = dict(spec.get("recipe") or {})
    for key in ("epochs", "batch_size", "lr", "weight_decay"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    if recipe:
        spec["recipe"] = recipe
    for key in ("seed", "device", "threads"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    tracking = dict(spec.get("tracking") or {})
    if args.no_tracking:
        tracking["enabled"] = False
    if args.experiment:
        tracking["experiment"] = args.experiment
    if tracking:
        spec["tracking"] = tracking
    if "run_id" not in spec and (key := _hand_run_key(spec)) is not None:
        spec["run_id"] = str(key)
    return spec


def _hand_run_key(spec: dict[str, Any]) -> RunKey | None:
    """A run trained by hand: its recipe is the command's flags, its teacher a folder (not a key). None while
    the model or the dataset is missing (the spec's check names it)."""
    if "model" not in spec or not isinstance(spec.get("dataset"), dict) or "name" not in spec["dataset"]:
        return None
    method = Method.from_config(spec.get("method") or "baseline")
    return RunKey(str(spec["dataset"]["name"]), "train", ModelSpec.from_config(spec["model"]).slug,
                  variant_slug(method, Method.from_config(method.name)), None, spec.get("seed", 0))


def _recorded_model(run_dir: str) -> dict[str, Any]:
    from .rundir import read_metrics

    try:
        m = read_metrics(run_dir)
    except (OSError, ValueError):
        raise ConfigError(f"teacher: {run_dir}/metrics.json cannot be read; train the teacher first, "
                          "or name its model with --teacher-model") from None
    return {"name": m["model"], "options": m.get("model_options", {})}


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import Terminated, train
    from .spec import RunSpec

    spec = RunSpec.from_dict(spec_from_args(args))
    out = Path(args.out) if args.out else Path("results/runs") / spec.run_id
    try:
        metrics = train(spec, out, log=lambda s: print(s, flush=True))
    except Terminated:
        print(f"atlib: [{spec.run_id}] terminated by SIGTERM; started again, it resumes from its last epoch",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    print(f"[{spec.run_id}] final test error {metrics['final_test_error']:.2f}% -> {out}/metrics.json")
    return 0


def count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless n is 1: "1 teacher", "3 teachers"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_plan(args: argparse.Namespace) -> int:
    plan = load_plan(args.config)
    if args.output_dir:
        print(Path(plan.results, plan.name).resolve())
        return 0
    from .preflight import before_dag

    if problems := before_dag(plan):  # what the DAG would stop on before its first job
        for problem in problems:
            print(f"atlib: error: {problem}", file=sys.stderr)
        return 2
    for run_id in plan.runs:
        print(run_id)
    print(f"{count(len(plan.runs), 'run')} ({count(len(plan.teachers), 'teacher')}, "
          f"{count(len(plan.teacher_of), 'distilled student')}), {count(len(plan.tables), 'table')}", file=sys.stderr)
    return 0


def cmd_mlflow_init(args: argparse.Namespace) -> int:
    from .tracking import ensure_experiments, tracking_uri

    uri = tracking_uri(args.store)
    ids = ensure_experiments(args.experiments, uri)
    text = "".join(f"{name}\t{eid}\n" for name, eid in ids.items())
    if args.out:
        Path(args.out).write_text(text)
    print(f"MLflow store {uri}: experiments {', '.join(ids)}")
    return 0


def cmd_mlflow_sync(args: argparse.Namespace) -> int:
    from .tracking import sync_runs

    # a results folder holds the config as the DAG resolved it (--config overrides included)
    plan = load_plan(str(Path(args.config, "config.yaml")) if Path(args.config).is_dir() else args.config)
    return 0 if sync_runs(Path(plan.run_dir(run)) for run in plan.runs) else 1


def cmd_mlflow_summary(args: argparse.Namespace) -> int:
    """``atlib mlflow-summary CONFIG``: one MLflow summary run per table; 'table<TAB>experiment<TAB>run<TAB>URL'
    lines in results/<name>/mlflow-summary.tsv."""
    from functools import partial

    from .rundir import atomic_write_text
    from .tracking import log_summaries, retry, retry_seconds, tracking_uri, ui_url

    plan = load_plan(args.config)
    try:  # idempotent: a retry after a partial failure updates what it had written
        done = retry(partial(log_summaries, plan, tracking_uri(plan.store)), retry_seconds())
    except Exception as e:  # the tables and report are written: only their MLflow view waits
        print(f"atlib: error: MLflow summary runs failed ({type(e).__name__}: {e}); run this again once the store "
              "is reachable", file=sys.stderr)
        return 1
    rows = [(table, exp, run, ui_url(exp, run)) for table, exp, run in done]
    out = Path(args.out or f"{plan.results}/{plan.name}/mlflow-summary.tsv")
    atomic_write_text(out, "".join("\t".join(row) + "\n" for row in rows))
    for table, _, _, url in rows:
        print(f"MLflow summary of {table}: {url}")
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from .rundir import atomic_write_text
    from .tables import aggregate

    plan = load_plan(args.config)
    summary = aggregate(plan)
    out = Path(args.out or f"{plan.results}/{plan.name}/summary.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, summary.to_csv(index=False))
    print(f"{len(summary)}/{len(plan.runs)} runs finished -> {out}")
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    import pandas as pd

    from .tables import write_tables

    plan = load_plan(args.config)
    base = Path(f"{plan.results}/{plan.name}")
    summary = pd.read_csv(args.summary or base / "summary.csv")
    out = Path(args.out or base / "tables")
    texts = write_tables(plan, summary, out)
    tag_cells(plan, summary)
    if not args.quiet:
        for text in texts.values():
            print(text)
        print(f"Tables: {out}/*.md and *.csv")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """``atlib figures CONFIG [--out DIR]``: every figure of the config (default results/<name>/figures)."""
    from .figures import write_figures

    plan = load_plan(args.config)
    out = Path(args.out or f"{plan.results}/{plan.name}/figures")
    paths = write_figures(plan, out)
    print(f"{len(paths)} figures -> {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``atlib report CONFIG [--out FILE]``: results/<name>/report.md from its tables/ and figures/."""
    from .report import write_report

    plan = load_plan(args.config)
    base = Path(f"{plan.results}/{plan.name}")
    out = write_report(plan, base / "tables", base / "figures", Path(args.out or base / "report.md"))
    print(f"Report: {out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare_cub, prepare_scenes

    prepare = {"cub": prepare_cub, "scenes": prepare_scenes}[args.dataset]
    n = prepare(Path(args.src), Path(args.dst))
    print(f"{n} {args.dataset} images in {args.dst}/train and {args.dst}/val")
    return 0


def _image_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CHANNELS,HEIGHT,WIDTH (e.g. 3,32,32), got {text!r}") from None
    return c, h, w


def cmd_models(args: argparse.Namespace) -> int:
    from .models.catalog import groups_text, listing

    groups = args.groups.split(",") if args.groups else None
    print(listing() if args.name is None else groups_text(args.name, args.input, groups))
    return 0


def tag_cells(plan: Any, summary: Any) -> None:
    """Tag every finished run in MLflow with the table cells it fills, so the UI finds runs by table."""
    from .tables import cell_tags
    from .tracking import tag_runs, tracking_uri

    tags = cell_tags(plan, summary)
    if not tags:
        return
    try:
        tag_runs(tracking_uri(plan.store), tags)
    except Exception as e:  # the tables are written; a tracking store that is down must not undo that
        print(f"atlib: warning: could not tag the MLflow runs with their table cells: {e}", file=sys.stderr)


def cmd_clear_stale_locks(args: argparse.Namespace) -> int:
    from .workdir import clear_stale_locks, live_snakemake_pids

    if pids := live_snakemake_pids(args.workdir):
        print(f"atlib: snakemake runs in {args.workdir} (pid {', '.join(map(str, pids))}); its lock stays")
    elif removed := clear_stale_locks(args.workdir):
        print(f"atlib: removed {len(removed)} stale Snakemake lock(s) in {args.workdir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="atlib", description="Attention transfer (Zagoruyko & Komodakis, ICLR 2017), reproducible.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run (a teacher, or a student under one method and seed)",
                       description="Train one run. The run spec comes from a YAML file (or - for standard "
                                   "input); flags override its keys. A run directory with a checkpoint in "
                                   "it is resumed.")
    t.add_argument("spec", nargs="?", help="run spec YAML file, or - for standard input")
    t.add_argument("--out", help="run directory (default: results/runs/<run_id>)")
    g = t.add_argument_group("data")
    g.add_argument("--dataset", help="cifar10 | cifar100 | fashion-mnist | imagefolder | synthetic")
    g.add_argument("--data-root", help="dataset folder (default per dataset)")
    g.add_argument("--train-size", type=int, help="use the first N training images")
    g.add_argument("--test-size", type=int, help="use the first N test images")
    g = t.add_argument_group("model and method")
    g.add_argument("--model", help="student (or teacher) model, e.g. wrn-16-1, nin-thin, resnet-18")
    g.add_argument("--method", choices=methods.names(), help="training method (default baseline)")
    g.add_argument("--param", type=_param, action="append", metavar="KEY=VALUE",
                   help="method parameter, e.g. beta=1000, T=4, alpha=0.9, p=2, mapping=max, groups=[0,1]")
    g.add_argument("--teacher", help="teacher run directory (holding model.pt and metrics.json)")
    g.add_argument("--teacher-model", help="teacher model (default: the one its metrics.json records)")
    g.add_argument("--max-teacher-error", type=float, help="refuse a teacher above this test error (%%)")
    g = t.add_argument_group("recipe")
    g.add_argument("--epochs", type=int, help="epochs (default 200)")
    g.add_argument("--batch-size", type=int, help="batch size (default 128)")
    g.add_argument("--lr", type=float, help="initial learning rate (default 0.1; x0.2 at 30/60/80%%)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 5e-4)")
    g.add_argument("--seed", type=int, help="seed (default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: CUDA when present")
    g.add_argument("--threads", type=int, help="CPU threads for torch")
    g = t.add_argument_group("tracking")
    g.add_argument("--experiment", help="MLflow experiment (default atlib)")
    g.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    t.set_defaults(func=cmd_train)

    for name, func, text, out in (
        ("plan", cmd_plan, "list every run an experiment config plans (teachers first by dependency)", None),
        ("aggregate", cmd_aggregate, "collect the finished runs' metrics.json into summary.csv",
         "results/<name>/summary.csv"),
        ("tables", cmd_tables, "write the paper tables (Markdown and CSV) from summary.csv", "results/<name>/tables"),
        ("figures", cmd_figures, "draw every figure of a config from its finished runs: attention maps and "
         "training curves per table row, every seed against the paper per table", "results/<name>/figures"),
        ("report", cmd_report, "write results/<name>/report.md: every table, a verdict per row and the figures",
         "results/<name>/report.md"),
    ):
        c = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        c.add_argument("config", help="experiment config YAML (e.g. config/quick.yaml)")
        if out:
            c.add_argument("--out", help=f"output file or folder (default {out})")
        if name == "plan":
            c.add_argument("--output-dir", action="store_true",
                           help="print the config's output folder (results/<name>, absolute) instead of its runs")
        if name == "tables":
            c.add_argument("--summary", help="summary.csv (default results/<name>/summary.csv)")
            c.add_argument("--quiet", action="store_true", help="do not print the tables")
        c.set_defaults(func=func)

    m = sub.add_parser("mlflow-init", help="create the MLflow store and experiments up front",
                       description="Create the MLflow store and the experiments once, before parallel jobs log "
                                   "to it (concurrent first writers to a fresh SQLite store lose runs).")
    m.add_argument("experiments", nargs="+", help="experiment names")
    m.add_argument("--store", help="SQLite file (default results/mlflow.db; MLFLOW_TRACKING_URI overrides)")
    m.add_argument("--out", help="write 'name<TAB>id' lines here")
    m.set_defaults(func=cmd_mlflow_init)
    m = sub.add_parser("mlflow-sync", help="complete the MLflow run of every finished run from its metrics.json",
                       description="Make MLflow hold exactly one FINISHED run per finished run of a config, with "
                                   "every epoch's metrics once: completes the runs of jobs that went on without "
                                   "MLflow (a store locked or a server down for longer than "
                                   "$ATLIB_MLFLOW_RETRY_SECONDS). Prints one line per run it changed.")
    m.add_argument("config", help="experiment config YAML, or its results folder (results/<name>)")
    m.set_defaults(func=cmd_mlflow_sync)
    m = sub.add_parser("mlflow-summary", help="one MLflow run per table: its medians, table, figures and report",
                       description="Log one MLflow run per table of a config (tags summary=<name>, table=<table>; "
                                   "updated in place when run again): each cell's median as a metric, the table, "
                                   "its figures and report.md as artifacts, and links to the cells' runs.")
    m.add_argument("config", help="experiment config YAML (e.g. results/<name>/config.yaml)")
    m.add_argument("--out", help="marker file (default results/<name>/mlflow-summary.tsv)")
    m.set_defaults(func=cmd_mlflow_summary)
    server.add_parser(sub)
    browse.add_parser(sub)

    u = sub.add_parser("clear-stale-locks", help="remove Snakemake's locks left by a killed run",
                       description="Remove Snakemake's locks in a working folder when no Snakemake process "
                                   "works there (make reproduce runs this first); a live run keeps its lock.")
    u.add_argument("workdir", nargs="?", default=".", help="the Snakemake working folder (default .)")
    u.set_defaults(func=cmd_clear_stale_locks)

    d = sub.add_parser("prepare", help="turn CUB-200-2011 or MIT Indoor-67 into train/ and val/ image folders",
                       description="Write an ImageFolder layout (DST/train, DST/val) from a dataset's original "
                                   "release: CUB cropped to its bounding boxes, Scenes by its official split.")
    d.add_argument("dataset", choices=("cub", "scenes"))
    d.add_argument("src", help="CUB_200_2011 folder, or the Indoor-67 folder with Images/ and the split lists")
    d.add_argument("dst", help="output folder (the config's dataset root)")
    d.set_defaults(func=cmd_prepare)

    n = sub.add_parser("models", help="list the model names a config can use and their default attention groups",
                       description="List the paper's networks, torchvision's classifiers (tv:NAME) by their default "
                                   "attention groups, and how to name your own network (package.module:factory); "
                                   "with a NAME, that network's groups and their sizes on images of --input.")
    n.add_argument("name", nargs="?", help="a model name, e.g. tv:resnet18, wrn-16-1 or mypkg.nets:small")
    n.add_argument("--input", type=_image_shape, default=(3, 32, 32), metavar="C,H,W",
                   help="the images' channels, height and width (default 3,32,32: CIFAR)")
    n.add_argument("--groups", help="module paths to show instead of the defaults, comma-separated")
    n.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError) as e:
        print(f"atlib: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
