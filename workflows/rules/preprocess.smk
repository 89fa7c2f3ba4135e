# One job per subject: recordings -> the uniform response table.
rule preprocess:
    input:
        subject_inputs,
    output:
        f"{RESULTS}/sub-{{subject}}/responses.h5",
    params:
        decode_epochs=decode_epochs,  # the epochs view for decoding (common.smk)
    log:
        f"{LOGS}/preprocess/sub-{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/preprocess/sub-{{subject}}.tsv"
    resources:
        mem_mb=3000,
        runtime=30,
    run:
        step(log, preprocess_subject, STUDY, wildcards.subject, RESULTS, output[0])
