# Transformer activations of every stimulus, layer by layer, plus the random control.
rule features:
    input:
        stimuli_table(),
    output:
        f"{RESULTS}/features/{{model}}.h5",
    log:
        f"{LOGS}/features/{{model}}.log",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    run:
        from brainhead.features import write_features

        with log_to(log[0]):
            write_features(input[0], MODEL_CFG[wildcards.model], output[0],
                           seed=STUDY.seed,
                           batch_size=STUDY.config["features"]["batch_size"])
