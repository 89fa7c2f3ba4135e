# Alignment per subject x model: ridge encoding (r, r_ceiled), RSA, CKA, statistics,
# for every layer of the trained model and of its random-weights control.
rule align:
    input:
        responses=f"{RESULTS}/sub-{{subject}}/responses.h5",
        features=f"{RESULTS}/features/{{model}}.h5",
    output:
        h5=f"{RESULTS}/align/sub-{{subject}}_{{model}}.h5",
        tsv=f"{RESULTS}/align/sub-{{subject}}_{{model}}.tsv",
        best=f"{RESULTS}/align/sub-{{subject}}_{{model}}_best.tsv",
    params:
        align=STUDY.config["align"],
        seed=STUDY.seed,
    log:
        f"{LOGS}/align/sub-{{subject}}_{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/align/sub-{{subject}}_{{model}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    run:
        step(log, align_subject, input.responses, input.features, wildcards.model,
             params.align, output.h5, output.tsv, output.best, seed=params.seed,
             threads=threads)


rule summary:
    input:
        summary=expand(f"{RESULTS}/align/sub-{{subject}}_{{model}}.tsv", subject=SUBJECTS,
                       model=MODELS),
        best=expand(f"{RESULTS}/align/sub-{{subject}}_{{model}}_best.tsv", subject=SUBJECTS,
                    model=MODELS),
    output:
        summary=report(f"{RESULTS}/align/summary.tsv", caption="summary.rst",
                       category="Tables"),
        best=report(f"{RESULTS}/align/best_layers.tsv", caption="best_layers.rst",
                    category="Tables"),
    log:
        f"{LOGS}/align/summary.log",
    run:
        step(log, collect_alignment, input.summary, input.best, output.summary, output.best)
