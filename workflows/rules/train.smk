# Trained model families (brainhead.train, on Lightning): one job per family x modality,
# pooled over that modality's subjects, on the same outer folds as ridge encoding.
# Each job runs in its own process (`brainhead train`), so that its device, threads and
# random state are its own; it resumes from its last checkpoint when rerun after a kill.
# TRAIN, TRAIN_MODEL, TRAIN_GPUS and train_outputs() are defined in common.smk.


rule train_voxel_xattn:
    input:
        responses=lambda wildcards: expand(f"{RESULTS}/sub-{{subject}}/responses.h5",
                                           subject=train_subjects(STUDY, wildcards.modality)),
        features=f"{RESULTS}/features/{TRAIN_MODEL}.h5",
    output:
        [f"{RESULTS}/models/voxel_xattn/{{modality}}/{name}" for name in TRAIN_OUTPUTS['voxel_xattn']],
    params:
        python=sys.executable,
        study=str(STUDY.path),
        out=lambda wildcards: f"{RESULTS}/models/voxel_xattn/{wildcards.modality}",
        # what the job reads from the study besides its inputs, so that an edit of the
        # train section (or of a subject's train keys) reruns it
        settings=lambda wildcards: {
            "train": TRAIN, "seed": STUDY.seed,
            "subjects": {s.subject: s.train for s in STUDY.by_modality(wildcards.modality)}},
    log:
        f"{LOGS}/train/voxel_xattn_{{modality}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/voxel_xattn_{{modality}}.tsv"
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
            "train voxel_xattn --study {params.study:q} --modality {wildcards.modality} "
            "--features {input.features:q} --out {params.out:q} --threads {threads} "
            "{input.responses:q} > {log:q} 2>&1"
        )
