# Ridge encoding scores per subject x layer, trained model vs random control.
rule align:
    input:
        responses=f"{RESULTS}/sub-{{subject}}/responses.h5",
        features=f"{RESULTS}/features/{{model}}.h5",
    output:
        h5=f"{RESULTS}/align/sub-{{subject}}_{{model}}.h5",
        tsv=f"{RESULTS}/align/sub-{{subject}}_{{model}}.tsv",
    params:
        align=STUDY.config["align"],
    log:
        f"{LOGS}/align/sub-{{subject}}_{{model}}.log",
    benchmark:
        f"benchmarks/{STUDY.name}/align/sub-{{subject}}_{{model}}.tsv"
    resources:
        mem_mb=3000,
        runtime=30,
    run:
        step(log, align_subject, *input, wildcards.model, params.align, *output)


rule summary:
    input:
        expand(f"{RESULTS}/align/sub-{{subject}}_{{model}}.tsv", subject=SUBJECTS,
               model=MODELS),
    output:
        f"{RESULTS}/align/summary.tsv",
    log:
        f"{LOGS}/align/summary.log",
    run:
        step(log, collect_summary, input, output[0])
