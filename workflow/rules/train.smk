rule resolved_config:
    """The config as Snakemake resolved it (files and --config merged): what aggregate and tables read."""
    output:
        f"{REPORT}/config.yaml",
    params:
        config=lambda w: json.dumps(config, sort_keys=True),
    localrule: True
    run:
        Path(output[0]).write_text(params.config + "\n")


rule mlflow_experiments:
    """Create the store and every experiment once: concurrent first writers to a fresh SQLite store lose runs."""
    output:
        f"{REPORT}/mlflow-experiments.tsv",
    params:
        experiments=PLAN.experiments,
        store=PLAN.store,
    localrule: True
    shell:
        "{ATLIB} mlflow-init {params.experiments:q} --store {params.store:q} --out {output:q}"


rule train:
    """One run: a teacher (or baseline) or a student under one method and seed."""
    input:
        unpack(train_inputs),
    output:
        metrics=f"{RESULTS}/runs/{{run}}/metrics.json",
        model=f"{RESULTS}/runs/{{run}}/model.pt",
    params:
        spec=run_spec,
        out=lambda w: PLAN.run_dir(w.run),
    log:
        f"{RESULTS}/logs/{{run}}.log",
    threads: config.get("threads") or 1
    resources:
        mem_mb=(config.get("resources") or {}).get("mem_mb", 4000),
        runtime=(config.get("resources") or {}).get("runtime", 60),
        gpu=(config.get("resources") or {}).get("gpu", 0),
    shell:
        "printf '%s' {params.spec:q} | {ATLIB} train - --out {params.out:q} > {log:q} 2>&1"
