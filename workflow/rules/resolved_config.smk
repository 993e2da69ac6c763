rule resolved_config:
    """The config as Snakemake resolved it (files and --config merged): what the report rules read."""
    output:
        f"{REPORT}/config.yaml",
    params:
        config=lambda w: json.dumps(config, sort_keys=True),
    log:
        f"{LOGS}/resolved_config.log",
    localrule: True
    run:
        Path(output[0]).write_text(params.config + "\n")
