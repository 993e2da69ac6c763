rule aggregate:
    """summary.csv: one line per finished run, read from the runs' metrics.json."""
    input:
        metrics=all_metrics(),
        config=f"{REPORT}/config.yaml",
    output:
        f"{REPORT}/summary.csv",
    params:
        atlib=ATLIB,
    log:
        f"{LOGS}/aggregate.log",
    conda:
        "../../environment.yml"
    localrule: True
    shell:
        "{params.atlib} aggregate {input.config:q} --out {output:q} > {log:q} 2>&1"
