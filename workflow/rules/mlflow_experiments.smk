rule mlflow_experiments:
    """Create the store and every experiment once: concurrent first writers to a fresh SQLite store lose runs."""
    output:
        f"{REPORT}/mlflow-experiments.tsv",
    params:
        atlib=ATLIB,
        experiments=PLAN.experiments,
        store=PLAN.store,
    log:
        f"{LOGS}/mlflow_experiments.log",
    conda:
        "../../environment.yml"
    localrule: True
    shell:
        "{params.atlib} mlflow-init {params.experiments:q} --store {params.store:q} --out {output:q} > {log:q} 2>&1"
