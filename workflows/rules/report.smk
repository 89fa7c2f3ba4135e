# The self-contained HTML report (an mne.Report; also attached to `snakemake --report`)
# and every figure of it as PNG + SVG under results/<study>/figures/.
rule report:
    input:
        summary=f"{RESULTS}/align/summary.tsv" if HAS_STIMULI else [],
        best=f"{RESULTS}/align/best_layers.tsv" if HAS_STIMULI else [],
        truth=[f"{RESULTS}/truth.json"] if STUDY.simulated else [],
        models=train_outputs() if HAS_STIMULI else [],
        scores=expand(f"{RESULTS}/align/sub-{{subject}}_{{model}}.h5", subject=SUBJECTS,
                      model=MODELS[:1]) if HAS_STIMULI else [],
        decode=decode_outputs(),
        responses=expand(f"{RESULTS}/sub-{{subject}}/responses.h5", subject=SUBJECTS),
    output:
        html=report(f"{RESULTS}/report.html", caption="report.rst", category="Report"),
        figures=report(directory(f"{RESULTS}/figures"), patterns=["{name}.png"],
                       caption="figures.rst", category="Figures", labels={"figure": "{name}"}),
    params:
        opts={"study": STUDY.name, "description": STUDY.config.get("description", ""),
              "ci": STUDY.config["align"]["ci"], "spec": STUDY.config,
              "results_dir": RESULTS, "benchmarks_dir": f"{RESULTS}/benchmarks"},
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/report.tsv"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=10,
    run:
        step(log, make_report, input.summary or None, output.html, best_path=input.best or None,
             truth_path=(input.truth or [None])[0], figures_dir=output.figures, n_jobs=threads,
             model_dirs=sorted({str(Path(p).parent) for p in input.models}), **params.opts)
