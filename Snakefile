# atlib: reproduce "Paying More Attention to Attention". The plan (every run, every table cell) is
# computed by atlib.plan from the config; the rules here only wire files together.
#   snakemake --cores all                                # config/quick.yaml
#   snakemake --cores all --configfile config/paper.yaml
import sys
from pathlib import Path

from atlib.spec import ConfigError
from atlib.plan import build_plan, missing_data, set_aside_broken_runs, validate_config

if not config:
    configfile: "config/quick.yaml"

try:
    validate_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
    PLAN = build_plan(config)
except ConfigError as e:
    sys.exit(f"atlib: config error: {e}")

if workflow.is_main_process:  # not again inside each cluster job
    for warning in set_aside_broken_runs(PLAN):
        print(f"atlib: warning: {warning}", file=sys.stderr)

ATLIB = f"{sys.executable} -m atlib"
RESULTS = PLAN.results
REPORT = f"{RESULTS}/{PLAN.name}"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        all_metrics(),  # targets themselves: a deleted run is retrained, not taken as a missing intermediate
        f"{REPORT}/summary.csv",
        expand(f"{REPORT}/tables/{{table}}.md", table=PLAN.tables),
        f"{REPORT}/report.md",


onstart:
    # here, not at parse time: a dry run may use placeholder dataset roots
    if problems := missing_data(PLAN):
        sys.exit("atlib: " + "\natlib: ".join(problems))


onsuccess:
    print_tables()
