# The self-contained HTML report (also attached to `snakemake --report`).
rule report:
    input:
        summary=f"{RESULTS}/align/summary.tsv",
        truth=[f"{RESULTS}/truth.json"] if STUDY.simulated else [],
    output:
        report(f"{RESULTS}/report.html", caption="report.rst", category="Alignment"),
    log:
        f"{LOGS}/report.log",
    run:
        from brainhead.report import make_report

        with log_to(log[0]):
            make_report(input.summary, output[0], study=STUDY.name,
                        description=STUDY.config.get("description", ""),
                        truth_path=input.truth[0] if input.truth else None)
