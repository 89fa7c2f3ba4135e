# brainhead: from raw recordings to a brain-model alignment report.
#
#   snakemake --cores 2                                    # the built-in demo study
#   snakemake --cores 8 --configfile data_specs/<study>/study.yaml
#   snakemake --profile workflows/profiles/slurm --configfile ...   # on a cluster
#
# The study spec and every subject file are validated before any job starts.

include: "workflows/rules/common.smk"
include: "workflows/rules/simulate.smk"
include: "workflows/rules/preprocess.smk"
include: "workflows/rules/features.smk"
include: "workflows/rules/align.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/report.smk"


rule all:
    input:
        f"{RESULTS}/report.html",
    default_target: True
