# Trained model families (brainhead.train, on Lightning): one job per family x modality,
# pooled over that modality's subjects, on the same outer folds as ridge encoding.
# Each job runs in its own process (`brainhead train`), so that its device, threads and
# random state are its own; it resumes from its last checkpoint when rerun after a kill.
import sys

from brainhead.train.jobs import OUTPUTS as TRAIN_OUTPUTS, family_modalities, train_subjects

TRAIN = STUDY.config["train"]
TRAIN_MODEL = TRAIN["model"] or MODELS[0]
# Ask a cluster for GPUs only when training may use them (train.device: cpu asks none).
TRAIN_GPUS = 0 if TRAIN["device"] == "cpu" else (
    TRAIN["devices"] if isinstance(TRAIN["devices"], int) else 1)
VOXEL_MODALITIES = family_modalities(STUDY, "voxel_xattn")


def train_outputs():
    """Every training output that the report reads."""
    return expand(f"{RESULTS}/models/voxel_xattn/{{modality}}/{{name}}",
                  modality=VOXEL_MODALITIES, name=TRAIN_OUTPUTS['voxel_xattn'])


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
    shell:
        "BRAINHEAD_NO_PROGRESS=${{BRAINHEAD_NO_PROGRESS:-1}} {params.python} -m brainhead.cli "
        "train voxel_xattn --study {params.study:q} --modality {wildcards.modality} "
        "--features {input.features:q} --out {params.out:q} --threads {threads} "
        "{input.responses:q} > {log:q} 2>&1"
