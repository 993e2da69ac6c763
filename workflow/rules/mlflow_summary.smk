from atlib.tracking import browse_hint  # print_tables (common.smk) prints it at the end


rule mlflow_summary:
    """One MLflow run per table: its cells' medians as metrics, the table, its figures and the report as
    artifacts, links to the cells' runs. Updated in place when run again (found by its summary and table tags)."""
    input:
        report=f"{REPORT}/report.md",
        tables=expand(f"{REPORT}/tables/{{table}}.csv", table=PLAN.tables),
        summary=f"{REPORT}/summary.csv",
        config=f"{REPORT}/config.yaml",
    output:
        f"{REPORT}/mlflow-summary.tsv",
    params:
        atlib=ATLIB,
    log:
        f"{LOGS}/mlflow_summary.log",
    conda:
        "../../environment.yml"
    localrule: True
    shell:
        "{params.atlib} mlflow-summary {input.config:q} --out {output:q} > {log:q} 2>&1"
