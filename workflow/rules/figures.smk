from atlib.plan import planned_figures


rule figures:
    """Attention maps and training curves per row, every seed against the paper per table.

    Its outputs are known from the plan alone; summary.csv changes whenever a run's metrics.json
    (hence its model.pt) does, so the figures are redrawn exactly when a run is retrained."""
    input:
        summary=f"{REPORT}/summary.csv",
        config=f"{REPORT}/config.yaml",
    output:
        [report(str(f.path), caption=f"../report/{f.kind}.rst", category="Figures", subcategory=f.table or "all tables")
         for f in planned_figures(PLAN, f"{REPORT}/figures")],
    params:
        atlib=ATLIB,
        out=lambda w, output: Path(output[0]).parent,
    log:
        f"{LOGS}/figures.log",
    conda:
        "../../environment.yml"
    localrule: True
    shell:
        "{params.atlib} figures {input.config:q} --out {params.out:q} > {log:q} 2>&1"
