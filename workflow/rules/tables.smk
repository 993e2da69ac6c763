rule tables:
    """The paper tables, ours beside the paper's numbers: Markdown to read, long CSV for the report."""
    input:
        summary=f"{REPORT}/summary.csv",
        config=f"{REPORT}/config.yaml",
    output:
        [report(f"{REPORT}/tables/{table}.md", caption="../report/table.rst", category="Tables")
         for table in PLAN.tables],
        expand(f"{REPORT}/tables/{{table}}.csv", table=PLAN.tables),
    params:
        atlib=ATLIB,
        out=lambda w, output: Path(output[0]).parent,
    log:
        f"{LOGS}/tables.log",
    conda:
        "../../environment.yml"
    localrule: True
    shell:
        "{params.atlib} tables {input.config:q} --summary {input.summary:q} --out {params.out:q} --quiet > {log:q} 2>&1"
