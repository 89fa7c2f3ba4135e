# Label decoding (brainhead.decode): every protocol x model x fold of the study's decode
# section in one job, pooled over each modality's subjects, each split checked for
# leakage where it is made; no features needed. DECODE_OUTPUTS and DECODE_SUBJECTS are
# defined in common.smk.
rule decode:
    input:
        responses=expand(f"{RESULTS}/sub-{{subject}}/responses.h5", subject=DECODE_SUBJECTS),
    output:
        [f"{RESULTS}/decode/{name}" for name in DECODE_OUTPUTS],
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        # what the job reads from the study besides its inputs: an edit reruns it
        settings={"decode": STUDY.config.get("decode"), "seed": STUDY.seed},
    log:
        f"{LOGS}/decode/decode.log",
    benchmark:
        f"{RESULTS}/benchmarks/decode/decode.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    run:
        step(log, run_decoding, STUDY, list(input.responses), params.out, threads=threads)
