# Transformer activations of every stimulus, layer by layer, plus the random control.
rule features:
    input:
        stimuli_table(),
    output:
        f"{RESULTS}/features/{{model}}.h5",
    params:
        model=lambda wildcards: MODEL_CFG[wildcards.model],
        opts={"seed": STUDY.seed, "batch_size": STUDY.config["features"]["batch_size"],
              "cache_dir": STUDY.config["features"]["cache_dir"]},
    log:
        f"{LOGS}/features/{{model}}.log",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    run:
        step(log, write_features, input[0], params.model, output[0], **params.opts,
             threads=threads)
