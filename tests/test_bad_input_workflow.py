"""Every kind of malformed recording, through real Snakemake: a non-zero exit, one clear
message naming the subject and what is wrong, and no ``responses.h5`` for that subject.

The cases are those of ``tests/_bad_inputs_eeg.py`` and ``tests/_bad_inputs_fmri.py``
(each also tested without Snakemake next to its pipeline). Problems found while loading
the study (a missing file, say) stop the run before any job starts; the others fail in
their subject's preprocessing job, which ``--keep-going`` runs side by side.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import _bad_inputs_eeg
import _bad_inputs_fmri
from conftest import ROOT

CASES = ([(f"eeg-{c}", make) for c, make in _bad_inputs_eeg.CASES]
         + [(f"fmri-{c}", make) for c, make in _bad_inputs_fmri.CASES])
STUDY = "badinputs"


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BRAINHEAD_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _write_study(study_dir: Path, subjects: list[dict]) -> None:
    (study_dir / "subjects").mkdir(parents=True, exist_ok=True)
    for old in (study_dir / "subjects").glob("*.yaml"):
        old.unlink()
    (study_dir / "stimuli.tsv").write_text("stim_id\ttext\na1\tone\n"
        + "".join(f"x{k}\tfiller {k}\n" for k in range(8)))  # align.min_stimuli: 8
    (study_dir / "study.yaml").write_text(yaml.safe_dump(
        {"name": STUDY, "seed": 0, "stimuli": "stimuli.tsv"}))
    for sub in subjects:
        (study_dir / "subjects" / f"sub-{sub['subject']}.yaml").write_text(yaml.safe_dump(sub))


def _rebase(value, case_dir: Path, prefix: str):
    """Paths of a subject mapping, relative to ``case_dir``, made relative to its parent."""
    if isinstance(value, dict):
        return {k: (f"{prefix}/{v}" if k == "root" else _rebase(v, case_dir, prefix))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, case_dir, prefix) for v in value]
    if isinstance(value, str) and ("/" in value or (
            "." in value and value != "." and (case_dir / value).exists())):
        return f"{prefix}/{value}"
    return value


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Run Snakemake on all job-level cases at once, and on each load-level case alone."""
    from brainhead.specs import SpecError, load_study

    work = tmp_path_factory.mktemp("bad_inputs")
    shutil.copy2(ROOT / "Snakefile", work / "Snakefile")
    shutil.copytree(ROOT / "workflows", work / "workflows")
    study_dir = work / "data_specs" / STUDY
    study_dir.mkdir(parents=True)
    made = {}
    for case_id, make in CASES:
        # each case writes into its own folder, so that files of the same name never clash
        case_dir = study_dir / case_id
        case_dir.mkdir()
        sub, message = make(case_dir)
        sub = _rebase(sub, case_dir, case_id)
        assert sub["subject"] not in {s["subject"] for s, _ in made.values()}, case_id
        made[case_id] = (sub, message)

    load_level, job_level = {}, {}
    for case_id, (sub, message) in made.items():
        _write_study(study_dir, [sub])
        try:
            load_study(study_dir)
        except SpecError:
            load_level[case_id] = (sub, message)
        else:
            job_level[case_id] = (sub, message)

    config = ["--configfile", f"data_specs/{STUDY}/study.yaml"]
    runs = {}
    for case_id, (sub, message) in load_level.items():
        _write_study(study_dir, [sub])
        runs[case_id] = ("load", _snakemake(work, *config, "-n"))
    _write_study(study_dir, [sub for sub, _ in job_level.values()])
    targets = [f"results/{STUDY}/sub-{sub['subject']}/responses.h5"
               for sub, _ in job_level.values()]
    together = _snakemake(work, *config, "--keep-going", *targets)
    for case_id in job_level:
        runs[case_id] = ("job", together)
    return work, made, runs


def test_there_are_at_least_fifteen_kinds():
    assert len(CASES) >= 15
    assert len({c for c, _ in CASES}) == len(CASES)


def test_there_are_at_least_fifty_kinds_with_validate():
    """Issue 14: >= 50 kinds of bad input, each a non-zero exit with a message naming
    file, subject and key and no artifact: the recordings here (through Snakemake) and
    the specs of ``tests/test_validate_cli.py`` (through ``brainhead validate``)."""
    import test_validate_cli

    kinds = {c for c, _ in CASES} | {c[0] for c in test_validate_cli.CASES}
    assert len(kinds) == len(CASES) + len(test_validate_cli.CASES)
    assert len(kinds) >= 50


@pytest.mark.parametrize("case_id", [c for c, _ in CASES])
def test_bad_input_fails_clearly_through_snakemake(bad_runs, case_id):
    work, made, runs = bad_runs
    sub, message = made[case_id]
    subject = sub["subject"]
    kind, proc = runs[case_id]
    assert proc.returncode != 0, (case_id, proc.stdout[-2000:])
    if kind == "load":
        text = proc.stderr
        assert "invalid study spec" in text  # stopped while loading, before any job
        assert not (work / "results" / STUDY / f"sub-{subject}").exists()
    else:
        log = work / "logs" / STUDY / "preprocess" / f"sub-{subject}.log"
        assert log.is_file(), (case_id, proc.stderr[-3000:])
        text = log.read_text()
        assert "step failed" in text
    assert message in text, (case_id, message, text[-2000:])
    assert subject in text, (case_id, text[-2000:])
    assert not (work / "results" / STUDY / f"sub-{subject}" / "responses.h5").exists()
    leftovers = list((work / "results" / STUDY).rglob("*.tmp*")) if (
        work / "results" / STUDY).exists() else []
    assert leftovers == []


# ------------------------------------------------------- the study file, named on the CLI
def _named_study(work: Path, name: str) -> Path:
    """A valid study (no stimuli, one generated sEEG recording) in a copied workflow."""
    study_dir = work / "data_specs" / name
    _bad_inputs_fmri.write_seeg_fif(study_dir / "raw" / "rec.fif", ["A1", "A2", "A3"],
                                    sfreq=250.0, duration=3.0)
    (study_dir / "subjects").mkdir()
    (study_dir / "subjects" / "sub-01.yaml").write_text(yaml.safe_dump(
        {"subject": "01", "modality": "seeg", "source": {"files": ["raw/rec.fif"]}}))
    (study_dir / "study.yaml").write_text(
        f"name: {name}\nseed: 0\nstimuli: null\n"
        "preprocess: {seeg: {high_gamma: [60, 110], epochs: false}}\n")
    return study_dir / "study.yaml"


@pytest.fixture
def named_work(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy2(ROOT / "Snakefile", work / "Snakefile")
    shutil.copytree(ROOT / "workflows", work / "workflows")
    return work


def test_a_study_file_that_is_not_utf8_fails_cleanly(named_work):
    """The README's form, ``--config study=PATH``: brainhead reads the file itself, so a
    latin-1 byte gets one message naming the file, the line and the byte offset (with
    ``--configfile`` Snakemake parses the file before the Snakefile runs and prints its
    own UnicodeDecodeError traceback, which no workflow code can intercept)."""
    study = _named_study(named_work, "latin1")
    good = study.read_bytes()
    study.write_bytes(b"# caf\xe9 au lait\n" + good)  # 0xe9: latin-1 e-acute, byte offset 5
    proc = _snakemake(named_work, "--config", "study=data_specs/latin1/study.yaml")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    problems = [ln for ln in proc.stderr.splitlines() if ln.startswith("  - ")]
    assert problems == ["  - data_specs/latin1/study.yaml: not UTF-8 text: byte 0xe9 on line 1 "
                        "(byte offset 5); save the file as UTF-8"], proc.stderr[-3000:]
    assert not (named_work / "results").exists()
    # the same file saved as UTF-8 runs, named by its folder or by its file
    study.write_bytes("# café au lait\n".encode() + good)
    for named in ("data_specs/latin1", "data_specs/latin1/study.yaml"):
        proc = _snakemake(named_work, "-n", "--config", f"study={named}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "results/latin1/report.html" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--config", "study=data_specs/absent"], "data_specs/absent: study file not found"),
    (["--config", "study=data_specs/named/study.yaml", "--configfile",
      "data_specs/named/study.yaml"],
     "--config study=data_specs/named/study.yaml and --configfile data_specs/named/study.yaml "
     "both name a study; give one of them"),
])
def test_a_study_named_wrongly_fails_cleanly(named_work, args, message):
    _named_study(named_work, "named")
    proc = _snakemake(named_work, "-n", *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"  - {message}" in proc.stderr.splitlines(), proc.stderr[-3000:]
    assert not (named_work / "results").exists()
