# The self-contained HTML report (also attached to `snakemake --report`).
rule report:
    input:
        summary=f"{RESULTS}/align/summary.tsv",
        best=f"{RESULTS}/align/best_layers.tsv",
        truth=[f"{RESULTS}/truth.json"] if STUDY.simulated else [],
        models=train_outputs(),
    output:
        report(f"{RESULTS}/report.html", caption="report.rst", category="Alignment"),
    params:
        opts={"study": STUDY.name, "description": STUDY.config.get("description", ""),
              "ci": STUDY.config["align"]["ci"]},
    log:
        f"{LOGS}/report.log",
    run:
        step(log, make_report, input.summary, output[0], best_path=input.best, truth_path=(input.truth or [None])[0],
             model_dirs=sorted({str(Path(p).parent) for p in input.models}),
             **params.opts)
