# brainhead: from raw recordings to a brain-model alignment report.
#
#   snakemake --cores 2                                    # the built-in demo study
#   snakemake --cores 8 --config study=data_specs/<study>  # a study (folder or study.yaml)
#   snakemake --cores 8 --configfile data_specs/<study>/study.yaml   # the same, older form
#   snakemake --profile workflows/profiles/slurm --config study=...  # on a cluster
#
# `--config study=PATH` is read by brainhead's own loader; a --configfile is parsed by
# Snakemake before this file runs, so a study.yaml that is not UTF-8 stops there with
# Snakemake's traceback instead of brainhead's message.
#
# The study spec and every subject file are validated before any job starts.

include: "workflows/rules/common.smk"
include: "workflows/rules/simulate.smk"
include: "workflows/rules/preprocess.smk"
# A study that only decodes labels (a decode section, no stimuli) has no features,
# alignment or training; see HAS_STIMULI and DECODE in common.smk.
if HAS_STIMULI:

    include: "workflows/rules/features.smk"
    include: "workflows/rules/align.smk"
    include: "workflows/rules/train.smk"


if DECODE:

    include: "workflows/rules/decode.smk"


include: "workflows/rules/report.smk"


rule all:
    input:
        f"{RESULTS}/report.html",
    default_target: True
