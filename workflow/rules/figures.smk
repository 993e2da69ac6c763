from atlib.plan import figure_paths


rule figures:
    """Attention maps and training curves per row, every seed against the paper per table.

    Its outputs are known from the plan alone; summary.csv changes whenever a run's metrics.json
    (hence its model.pt) does, so the figures are redrawn exactly when a run is retrained."""
    input:
        summary=f"{REPORT}/summary.csv",
        config=f"{REPORT}/config.yaml",
    output:
        figure_paths(PLAN, f"{REPORT}/figures"),
    params:
        out=f"{REPORT}/figures",
    localrule: True
    shell:
        "{ATLIB} figures {input.config:q} --out {params.out:q}"


rule report:
    """results/<name>/report.md: every table, a verdict per row, the figures linked relative to it."""
    input:
        tables=expand(f"{REPORT}/tables/{{table}}.md", table=PLAN.tables),
        csv=expand(f"{REPORT}/tables/{{table}}.csv", table=PLAN.tables),
        figures=rules.figures.output,
        config=f"{REPORT}/config.yaml",
    output:
        f"{REPORT}/report.md",
    localrule: True
    shell:
        "{ATLIB} report {input.config:q} --out {output:q}"
