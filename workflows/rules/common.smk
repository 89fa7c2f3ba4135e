# Setup shared by all rules: find the study, validate it, define input functions.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("8.0")

from brainhead._logging import log_to
from brainhead._parallel import limit_threads
from brainhead.decode import OUTPUTS as DECODE_OUTPUTS, epochs_view_rate
from brainhead.specs import SCHEMA_DIR, SpecError, has_stimuli, load_study
from brainhead.train.jobs import OUTPUTS as TRAIN_OUTPUTS, family_modalities, train_subjects

# Each job runs in its own process that parses this workflow again: the functions the
# rules call are imported on first call, so a job imports only what its rule needs
# (a preprocess job need not load torch and transformers).
def _lazy(target):
    where, name = target.split(":")

    def call(*args, **kwargs):
        from importlib import import_module

        return getattr(import_module(where), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


align_subject = _lazy("brainhead.align:align_subject")
collect_alignment = _lazy("brainhead.align:collect_alignment")
write_features = _lazy("brainhead.features:write_features")
preprocess_subject = _lazy("brainhead.preprocess:preprocess_subject")
make_report = _lazy("brainhead.report:make_report")
simulate_study = _lazy("brainhead.simulate:simulate_study")
run_decoding = _lazy("brainhead.decode:run_decoding")


def step(log, func, *args, threads=None, **kwargs):
    """Run one brainhead function with its log going to the rule's log file.

    ``threads`` (the rule's) caps torch and BLAS threads while it runs.
    """
    with log_to(log[0]), limit_threads(threads):
        return func(*args, **kwargs)


def _study_file():
    """The study of this run: ``--config study=PATH`` (a study folder or its study.yaml,
    read by brainhead's own loader), else the last --configfile, else the built-in demo.

    ``--config study=PATH`` is the recommended form: Snakemake parses a --configfile
    itself before this file runs, so a study.yaml that is not UTF-8 (or not YAML) stops
    there with Snakemake's traceback instead of brainhead's message.
    """
    cli_files = list(workflow.overwrite_configfiles or [])
    if "study" in config:
        named = config.pop("study")
        if cli_files:
            raise SpecError([f"--config study={named} and --configfile "
                             f"{os.path.relpath(cli_files[-1])} both name a study; give one "
                             "of them"])
        if not isinstance(named, str) or not named.strip():
            raise SpecError([f"--config study={named!r}: expected the path of a study "
                             "folder or of its study.yaml"])
        return Path(named)
    if cli_files:
        return Path(cli_files[-1])
    return Path(workflow.basedir) / "data_specs" / "demo" / "study.yaml"


try:
    STUDY = load_study(_study_file())
except SpecError as err:
    sys.stderr.write(f"brainhead: invalid study spec ({len(err.problems)} problem(s)):\n")
    for problem in err.problems:
        sys.stderr.write(f"  - {problem}\n")
    raise SystemExit(1)

if config:
    # The same structure check through Snakemake's own validator.
    validate(config, str(SCHEMA_DIR / "study.schema.yaml"))
config.update(STUDY.config)

RESULTS = f"results/{STUDY.name}"
LOGS = f"logs/{STUDY.name}"
SUBJECTS = list(STUDY.subjects)
MODELS = [m["name"] for m in STUDY.config["features"]["models"]]
MODEL_CFG = {m["name"]: m for m in STUDY.config["features"]["models"]}


wildcard_constraints:
    subject="|".join(SUBJECTS),
    model="|".join(MODELS),


def stimuli_table():
    """The stimuli TSV: written by `simulate`, or named in study.yaml."""
    if STUDY.simulated:
        return f"{RESULTS}/stimuli.tsv"
    return str(STUDY.root / STUDY.config["stimuli"])


def subject_inputs(wildcards):
    """Recordings a subject's preprocessing depends on."""
    spec = STUDY.subjects[wildcards.subject]
    if spec.source == "simulated":
        return [f"{RESULTS}/truth.json"]
    if "dataset" in spec.source:
        return [spec.source["root"]]
    return [spec.source["bids_root"]] if "bids_root" in spec.source else spec.source["files"]


# Training (workflows/rules/train.smk): which families train on which modalities.
TRAIN = STUDY.config["train"]
TRAIN_MODEL = TRAIN["model"] or MODELS[0]
# Ask a cluster for GPUs only when training may use them (train.device: cpu asks none).
TRAIN_GPUS = 0 if TRAIN["device"] == "cpu" else (
    TRAIN["devices"] if isinstance(TRAIN["devices"], int) else 1)


# Decoding (workflows/rules/decode.smk): a study with a decode section; one without
# stimuli (HAS_STIMULI false) has no features, alignment or training rules.
HAS_STIMULI = has_stimuli(STUDY.config)
DECODE = "decode" in STUDY.config
DECODE_SUBJECTS = [s.subject for s in STUDY.subjects.values()
                   if DECODE and s.modality in STUDY.config["decode"]["modalities"]]


def decode_epochs(wildcards):
    """Rate of the epochs view a subject's preprocessing writes for decoding (a param of
    the preprocess rule, so that adding a decode section reruns preprocessing)."""
    return epochs_view_rate(STUDY.config, STUDY.subjects[wildcards.subject].modality)


def decode_outputs():
    """The decode stage's outputs that the report reads (none without a decode section)."""
    return [f"{RESULTS}/decode/{name}" for name in DECODE_OUTPUTS] if DECODE else []


def train_outputs():
    """Every training output that the report reads."""
    return [path for family, names in TRAIN_OUTPUTS.items()
            for path in expand(f"{RESULTS}/models/{family}/{{modality}}/{{name}}",
                               modality=family_modalities(STUDY, family), name=names)]
