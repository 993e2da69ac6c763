rule aggregate:
    input:
        metrics=all_metrics(),
        config=f"{REPORT}/config.yaml",
    output:
        f"{REPORT}/summary.csv",
    localrule: True
    shell:
        "{ATLIB} aggregate {input.config:q} --out {output:q}"


rule tables:
    input:
        summary=f"{REPORT}/summary.csv",
        config=f"{REPORT}/config.yaml",
    output:
        expand(f"{REPORT}/tables/{{table}}.md", table=PLAN.tables),
        expand(f"{REPORT}/tables/{{table}}.csv", table=PLAN.tables),
    params:
        out=f"{REPORT}/tables",
    localrule: True
    shell:
        "{ATLIB} tables {input.config:q} --summary {input.summary:q} --out {params.out:q} --quiet"
