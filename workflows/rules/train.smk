# Trained model families (brainhead.train, on Lightning): one job per family x modality,
# pooled over that modality's subjects, on the same outer folds as ridge encoding.
# Each job runs in its own process (`brainhead train`), so that its device, threads and
# random state are its own; it resumes from its last checkpoint when rerun after a kill.
# TRAIN, TRAIN_MODEL, TRAIN_GPUS and train_outputs() are defined in common.smk.


# One rule per family (train_voxel_xattn, train_adapters), built in a loop: the families
# differ only in their outputs (brainhead.train.jobs.OUTPUTS).
for _family in TRAIN_OUTPUTS:

    rule:
        name:
            f"train_{_family}"
        input:
            responses=lambda wildcards: expand(f"{RESULTS}/sub-{{subject}}/responses.h5",
                                               subject=train_subjects(STUDY, wildcards.modality)),
            features=f"{RESULTS}/features/{TRAIN_MODEL}.h5",
        output:
            [f"{RESULTS}/models/{_family}/{{modality}}/{name}" for name in TRAIN_OUTPUTS[_family]],
        params:
            family=_family,
            python=sys.executable,
            study=str(STUDY.path),
            out=lambda wildcards, output: os.path.dirname(output[0]),
            # what the job reads from the study besides its inputs, so that an edit of the
            # shared train keys, of this family's section or of a subject's train keys
            # reruns it, and an edit of another family's section (or of the families
            # list) does not
            settings=lambda wildcards, family=_family: {
                "train": {k: v for k, v in TRAIN.items()
                          if k == family or (k not in TRAIN_OUTPUTS and k != "families")},
                "seed": STUDY.seed,
                "subjects": {s.subject: s.train for s in STUDY.by_modality(wildcards.modality)}},
        log:
            f"{LOGS}/train/{_family}_{{modality}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train/{_family}_{{modality}}.tsv"
        wildcard_constraints:
            modality="eeg|seeg|fmri",
        threads: 1
        resources:
            gpu=TRAIN_GPUS,
            mem_mb=6000,
            runtime=120,
        run:
            # shell(): its own process, for its own device, threads and random state
            shell(
                "BRAINHEAD_NO_PROGRESS=${{BRAINHEAD_NO_PROGRESS:-1}} {params.python} -m brainhead.cli "
                "train {params.family} --study {params.study:q} --modality {wildcards.modality} "
                "--features {input.features:q} --out {params.out:q} --threads {threads} "
                "{input.responses:q} > {log:q} 2>&1"
            )
