rule report:
    """results/<name>/report.md: every table, the paper's claims with paired intervals, the figures."""
    input:
        tables=expand(f"{REPORT}/tables/{{table}}.md", table=PLAN.tables),
        csv=expand(f"{REPORT}/tables/{{table}}.csv", table=PLAN.tables),
        figures=rules.figures.output,
        config=f"{REPORT}/config.yaml",
    output:
        report(f"{REPORT}/report.md", caption="../report/verdicts.rst", category="Verdicts"),
    params:
        atlib=ATLIB,
    log:
        f"{LOGS}/report.log",
    conda:
        "../../environment.yml"
    localrule: True
    shell:
        "{params.atlib} report {input.config:q} --out {output:q} > {log:q} 2>&1"
