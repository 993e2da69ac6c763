rule train:
    """One run: a teacher (or baseline) or a student under one method and seed."""
    input:
        unpack(train_inputs),
    output:
        metrics=f"{RESULTS}/runs/{{run}}/metrics.json",
        model=f"{RESULTS}/runs/{{run}}/model.pt",
    params:
        atlib=ATLIB,
        spec=run_spec,
        out=lambda w: PLAN.run_dir(w.run),
    log:
        f"{RESULTS}/logs/{{run}}.log",
    threads: PLAN.threads
    resources:
        mem_mb=PLAN.resources["mem_mb"],
        runtime=PLAN.resources["runtime"],
        gpu=PLAN.resources["gpu"],
    priority: waiting_students
    conda:
        "../../environment.yml"
    shell:
        "printf '%s' {params.spec:q} | {params.atlib} train - --out {params.out:q} > {log:q} 2>&1"
