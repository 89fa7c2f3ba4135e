"""`brainhead validate` catches what a job would fail on, and files as people have them.

Each case breaks a small valid study in one way and runs ``brainhead validate`` on it:
the exit status is non-zero, one problem line names the file, the subject (for subject
files) and the key, no traceback is printed, and nothing is written. A sample of the
cases also goes through the Snakefile, which must stop before any job starts.
``brainhead inspect`` on files that are not artifacts is tested at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainhead.cli import main

REPO = Path(__file__).parents[1]
STIMULI = "stim_id\ttext\n" + "".join(f"s{k}\tsentence number {k}\n" for k in range(10))


# --------------------------------------------------------------------------- the study
def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _study(root: Path) -> Path:
    """A valid study: 10 stimuli, one EEG subject ``01`` with one EDF file."""
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "rec.edf").write_bytes(b"")  # validate never reads recordings
    (root / "stimuli.tsv").write_text(STIMULI)
    _write(root / "study.yaml", {"name": "v", "seed": 0, "stimuli": "stimuli.tsv"})
    _write(root / "subjects" / "sub-01.yaml",
           {"subject": "01", "modality": "eeg", "source": {"files": ["raw/rec.edf"]}})
    return root


def _edit_study(**changes):
    def edit(root: Path):
        data = yaml.safe_load((root / "study.yaml").read_text())
        for dotted, value in changes.items():
            node = data
            *parents, last = dotted.split("__")
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
        _write(root / "study.yaml", data)
    return edit


def _edit_subject(**changes):
    def edit(root: Path):
        path = root / "subjects" / "sub-01.yaml"
        data = yaml.safe_load(path.read_text())
        for dotted, value in changes.items():
            node = data
            *parents, last = dotted.split("__")
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
        _write(path, data)
    return edit


def _text(relpath: str, text: str | bytes):
    def edit(root: Path):
        target = root / relpath
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)
    return edit


def _stimuli_rows(*rows: str):
    return _text("stimuli.tsv", "stim_id\ttext\n" + "".join(f"s{k}\tsentence {k}\n"
                                                            for k in range(8))
                 + "".join(r + "\n" for r in rows))


def _eeg(**params):
    return _edit_study(preprocess={"eeg": params})


def _seeg_subject(**params):
    def edit(root: Path):
        _edit_study(preprocess={"seeg": params})(root)
        (root / "raw" / "ieeg.fif").write_bytes(b"")
        _write(root / "subjects" / "sub-02.yaml",
               {"subject": "02", "modality": "seeg", "source": {"files": ["raw/ieeg.fif"]}})
    return edit


def _edf_study(sfreq: float, **params):
    """The subject's EDF written for real (its header gives the rate), with ``params``."""
    def edit(root: Path):
        from _bad_inputs_eeg import NAMES_10_20, _edf

        _edf(root / "raw" / "rec.edf", NAMES_10_20, sfreq=sfreq)
        _eeg(**params)(root)
    return edit


def _subject_dir(root: Path):
    (root / "subjects" / "sub-09.yaml").mkdir()


def _symlink_loop(root: Path):
    a, b = root / "subjects" / "sub-09.yaml", root / "subjects" / "sub-10.yaml"
    os.symlink(b.name, a)
    os.symlink(a.name, b)


def _dangling_link(root: Path):
    os.symlink("elsewhere/sub-09.yaml", root / "subjects" / "sub-09.yaml")


def _recording_dir(root: Path):
    (root / "raw" / "rec2.edf").mkdir()
    _edit_subject(source={"files": ["raw/rec.edf", "raw/rec2.edf"]})(root)


def _bids_root_file(root: Path):
    _edit_subject(source={"bids_root": "raw/rec.edf", "task": "x"})(root)


def _unsupported(root: Path):
    (root / "raw" / "rec.txt").write_text("1 2 3\n")
    _edit_subject(source={"files": ["raw/rec.txt"]})(root)


def _fmri_events_dir(root: Path):
    (root / "raw" / "bold.nii.gz").write_bytes(b"")
    (root / "raw" / "events.tsv").mkdir()
    _write(root / "subjects" / "sub-03.yaml",
           {"subject": "03", "modality": "fmri",
            "source": {"files": ["raw/bold.nii.gz"], "events": ["raw/events.tsv"]}})


def _fmri_wrong_ext(root: Path):
    (root / "raw" / "bold.img").write_bytes(b"")
    _write(root / "subjects" / "sub-03.yaml",
           {"subject": "03", "modality": "fmri", "source": {"files": ["raw/bold.img"]}})


BOMB = ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e]\n")
SUB = "subjects/sub-01.yaml"
SUBJECT = "subject '01'"

# (id, edit, file named, subject named or None, substrings of the same problem line)
CASES = [
    # ----- align and statistics
    ("alphas-reversed", _edit_study(align={"alphas_log10": [6, -1, 3]}), "study.yaml", None,
     ["key 'align.alphas_log10'", "needs start < stop"]),
    ("alphas-fraction-count", _edit_study(align={"alphas_log10": [-1, 6, 2.5]}), "study.yaml",
     None, ["key 'align.alphas_log10'", "2.5", "whole number"]),
    ("n-permutations-zero", _edit_study(align={"n_permutations": 0}), "study.yaml", None,
     ["key 'align.n_permutations'", "less than the minimum of 1"]),
    ("ci-nan", _text("study.yaml", "name: v\nseed: 0\nstimuli: stimuli.tsv\nalign: {ci: .nan}\n"),
     "study.yaml", None, ["key 'align.ci'", "nan is not a finite number"]),
    ("reject-inf", _eeg(reject_uv=float("inf")), "study.yaml", None,
     ["key 'preprocess.eeg.reject_uv'", "inf is not a finite number"]),
    ("subject-nan", _text(SUB, "subject: '01'\nmodality: eeg\nsource: {files: [raw/rec.edf]}\n"
                               "preprocess: {l_freq: .nan}\n"), SUB, SUBJECT,
     ["key 'preprocess.l_freq'", "not a finite number"]),
    ("seed-too-large", _edit_study(seed=2 ** 32), "study.yaml", None,
     ["key 'seed'", "4294967296 is greater than the maximum of 4294967295"]),
    ("seed-negative", _edit_study(seed=-1), "study.yaml", None,
     ["key 'seed'", "-1 is less than the minimum of 0"]),
    ("features-path-missing", _edit_study(features={"models": [{"name": "m",
                                                                "path": "models/nowhere"}]}),
     "study.yaml", None, ["key 'features.models.0.path'", "'models/nowhere' is neither"]),
    # ----- the design
    ("too-few-stimuli", _text("stimuli.tsv", "stim_id\ttext\nleft\tLeft fist.\nright\tRight.\n"),
     "study.yaml", None, ["key 'align.min_stimuli'", "degenerate design", "2 distinct"]),
    ("two-texts-many-ids", _text("stimuli.tsv", "stim_id\ttext\n" + "".join(
        f"t{k}\t{'Imagine the left fist.' if k % 2 else 'Imagine the right fist.'}\n"
        for k in range(40))),
     "study.yaml", None, ["key 'align.min_stimuli'", "degenerate design",
                          "has 40 stimuli but only 2 distinct texts"]),
    ("simulated-ceiling-no-repeats",
     _text("study.yaml", "name: v\nseed: 0\nsimulate: {n_repeats: 1}\n"
                         "align: {ceiling: ncsnr}\n"),
     "study.yaml", None, ["key 'align.ceiling'", "degenerate design", "n_repeats is 1"]),
    # ----- the stimuli table
    ("stimuli-duplicate-id", _stimuli_rows("s3\tanother sentence"), "stimuli.tsv", None,
     ["key 'stimuli'", "duplicate stim_id ['s3']"]),
    ("stimuli-blank-text", _stimuli_rows("x1\t   "), "stimuli.tsv", None,
     ["key 'stimuli'", "1 stimuli have no text", "x1"]),
    ("stimuli-na-text", _stimuli_rows("x1\tNA"), "stimuli.tsv", None,
     ["key 'stimuli'", "no text (blank, NA or None)", "'NA'"]),
    ("stimuli-none-text", _stimuli_rows("x1\tNone"), "stimuli.tsv", None,
     ["key 'stimuli'", "'None'"]),
    ("stimuli-blank-id", _stimuli_rows("\tsome text"), "stimuli.tsv", None,
     ["key 'stimuli'", "stim_id is blank on line(s) [10]"]),
    ("stimuli-no-text-column", _text("stimuli.tsv", "stim_id,text\na,b\n"), "stimuli.tsv",
     None, ["key 'stimuli'", "lacks column(s) ['stim_id', 'text']"]),
    ("stimuli-not-utf8", _text("stimuli.tsv", "stim_id\ttext\na\tcaf\xe9\n".encode("latin-1")),
     "stimuli.tsv", None, ["key 'stimuli'", "not UTF-8"]),
    ("stimuli-is-directory", _edit_study(stimuli="raw"), "study.yaml", None,
     ["key 'stimuli'", "is a directory"]),
    # ----- EEG preprocessing
    ("montage-unknown", _eeg(montage="colin27_1025"), "study.yaml", None,
     ["key 'preprocess.eeg.montage'", "'colin27_1025' is not an MNE built-in montage",
      "did you mean 'colin27_1020'"]),
    ("montage-subject-unknown", _edit_subject(preprocess={"montage": "biosemi65"}), SUB,
     SUBJECT, ["key 'preprocess.montage'", "did you mean 'biosemi64'"]),
    ("event-id-integer-keys", _text("study.yaml", "name: v\nseed: 0\nstimuli: stimuli.tsv\n"
                                                  "preprocess: {eeg: {event_id: {1: left, 2: "
                                                  "right}}}\n"),
     "study.yaml", None, ["key 'preprocess.eeg.event_id'", "[1, 2] are numbers",
                          "quote them ('1', '2')"]),
    ("window-after-tmax", _eeg(window=[0.5, 1.2]), "study.yaml", None,
     ["key 'preprocess.eeg.window'", "[0.5, 1.2] s is outside the epochs",
      "tmax 0.8"]),
    ("baseline-before-tmin", _eeg(baseline=[-0.5, 0.0]), "study.yaml", None,
     ["key 'preprocess.eeg.baseline'", "outside the epochs (preprocess.tmin -0.2"]),
    ("window-backwards", _eeg(window=[0.5, 0.3]), "study.yaml", None,
     ["key 'preprocess.eeg.window'", "must start before it ends"]),
    ("subject-window-outside", _edit_subject(preprocess={"tmax": 0.4}), SUB, SUBJECT,
     ["key 'preprocess.window'", "[0.3, 0.5] s is outside the epochs"]),
    ("tmin-after-tmax", _eeg(tmin=1.0, tmax=0.5, window=[0.6, 0.7]), "study.yaml", None,
     ["key 'preprocess.eeg.tmax'", "not after preprocess.tmin"]),
    ("fixed-window-too-long", _eeg(epoching="fixed", fixed_length=1.0, window=[0.0, 2.0]),
     "study.yaml", None, ["key 'preprocess.eeg.window'", "fixed_length 1"]),
    ("lfreq-above-hfreq", _eeg(l_freq=40.0, h_freq=1.0), "study.yaml", None,
     ["key 'preprocess.eeg.l_freq'", "40 Hz is not below preprocess.h_freq 1 Hz",
      "band-stop"]),
    ("hfreq-above-nyquist", _eeg(resample=64.0, h_freq=40.0), "study.yaml", None,
     ["key 'preprocess.eeg.h_freq'", "Nyquist frequency 32 Hz"]),
    ("band-above-nyquist", _eeg(resample=80.0, h_freq=30.0), "study.yaml", None,
     ["key 'preprocess.eeg.bands.gamma'", "[31, 49] Hz reaches above the Nyquist frequency 40"]),
    ("band-above-edf-rate", _edf_study(100.0, bands={"gamma": [31, 60]}), SUB, SUBJECT,
     ["key 'preprocess.bands.gamma': [31, 60] Hz reaches above the Nyquist frequency 50 Hz",
      "rec.edf (100 Hz)"]),
    ("hfreq-above-edf-rate", _edf_study(64.0, h_freq=40.0), SUB, SUBJECT,
     ["key 'preprocess.h_freq': 40 Hz is not below the Nyquist frequency 32 Hz of",
      "rec.edf (64 Hz)"]),
    ("band-backwards", _eeg(bands={"alpha": [14, 8]}), "study.yaml", None,
     ["key 'preprocess.eeg.bands.alpha'", "0 <= low < high"]),
    ("seeg-high-gamma-backwards", _seeg_subject(high_gamma=[150, 70]), "study.yaml", None,
     ["key 'preprocess.seeg.high_gamma'", "[150, 70]"]),
    ("seeg-window-outside", _seeg_subject(window=[0.1, 1.5]), "study.yaml", None,
     ["key 'preprocess.seeg.window'", "outside the epochs"]),
    # ----- recordings
    ("recording-unsupported-type", _unsupported, SUB, SUBJECT,
     ["key 'source.files[0]'", "unsupported file type '.txt'"]),
    ("recording-is-directory", _recording_dir, SUB, SUBJECT,
     ["key 'source.files[1]'", "rec2.edf is a directory"]),
    ("bids-root-is-file", _bids_root_file, SUB, SUBJECT,
     ["key 'source.bids_root'", "a BIDS root is a folder"]),
    ("fmri-events-is-directory", _fmri_events_dir, "sub-03.yaml", "subject '03'",
     ["key 'source.events[0]'", "is a directory"]),
    ("fmri-unsupported-type", _fmri_wrong_ext, "sub-03.yaml", "subject '03'",
     ["key 'source.files[0]'", "unsupported file type '.img'", ".nii.gz"]),
    ("source-event-id-removed", _edit_subject(source={"files": ["raw/rec.edf"],
                                                      "event_id": {"T1": 1}}),
     SUB, SUBJECT, ["unknown key 'source.event_id'"]),
    ("stream-options-without-stream", _edit_subject(source={"files": ["raw/rec.edf"],
                                                            "stream": {"units": "mV"}}),
     SUB, SUBJECT, ["key 'source.stream'", "none of source.files is one"]),
    ("stream-unknown-unit", _edit_subject(source={"files": ["raw/rec.edf"],
                                                  "stream": {"units": "microvolt"}}),
     SUB, SUBJECT, ["key 'source.stream.units': 'microvolt' is not one of"]),
    # ----- files as people have them
    ("subject-not-utf8", _text(SUB, "subject: '01'\nmodality: eeg\n# caf\xe9\n"
                                    "source: {files: [raw/rec.edf]}\n".encode("latin-1")),
     SUB, SUBJECT, ["not UTF-8 text: byte 0xe9 on line 3"]),
    ("study-not-utf8", _text("study.yaml", "name: v\nseed: 0\ndescription: \xe9t\xe9\n"
                                           "stimuli: stimuli.tsv\n".encode("latin-1")),
     "study.yaml", None, ["not UTF-8 text: byte 0xe9 on line 3"]),
    ("subject-file-is-directory", _subject_dir, "sub-09.yaml", "subject '09'",
     ["is a directory, not a YAML file"]),
    ("subject-symlink-loop", _symlink_loop, "sub-09.yaml", "subject '09'",
     ["cannot be read", "symbolic link"]),
    ("subject-dangling-symlink", _dangling_link, "sub-09.yaml", "subject '09'",
     ["cannot be read", "symbolic link whose target is missing"]),
    ("subject-duplicate-key", _text(SUB, "subject: '01'\nmodality: eeg\nmodality: fmri\n"
                                         "source: {files: [raw/rec.edf]}\n"),
     SUB, SUBJECT, ["key 'modality': given twice (lines 2 and 3)"]),
    ("study-duplicate-nested-key", _text("study.yaml", "name: v\nseed: 0\nstimuli: "
                                                       "stimuli.tsv\nalign:\n  ci: 0.9\n"
                                                       "  n_bootstraps: 10\n  ci: 0.5\n"),
     "study.yaml", None, ["key 'align.ci': given twice (lines 5 and 7)"]),
    ("subject-alias-bomb", _text(SUB, BOMB), SUB, SUBJECT,
     ["YAML aliases expand to", "more than the 100000"]),
    ("study-alias-bomb", _text("study.yaml", BOMB), "study.yaml", None,
     ["YAML aliases expand to"]),
]


def _snapshot(root: Path) -> dict:
    return {p: (p.stat().st_size if p.is_file() else -1)
            for p in root.rglob("*") if not p.is_symlink()}


@pytest.mark.parametrize("edit, filename, subject, expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate_names_file_subject_and_key(tmp_path, monkeypatch, capsys, edit, filename,
                                             subject, expected):
    root = _study(tmp_path / "study")
    edit(root)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    code = main(["validate", "study"])
    out = capsys.readouterr()
    assert code == 1, out.out
    assert "Traceback" not in out.err
    lines = [ln for ln in out.err.splitlines()
             if all(text in ln for text in expected)]
    assert lines, f"no problem line with {expected} in:\n{out.err}"
    assert filename in lines[0], lines[0]
    if subject is not None:
        assert subject in lines[0], lines[0]
    assert len(out.err) < 5000  # a message, not a flood
    assert _snapshot(tmp_path) == before  # nothing written
    assert not (tmp_path / "results").exists()


def test_at_least_forty_validate_kinds():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- what is accepted
def test_old_montage_names_are_aliases(tmp_path, monkeypatch, capsys):
    from brainhead.specs import load_study

    root = _study(tmp_path / "study")
    _eeg(montage="standard_1005")(root)
    _edit_subject(preprocess={"montage": "standard_1020"})(root)
    (root / "subjects" / "sub-02.yaml").write_text(
        "subject: '02'\nmodality: eeg\nsource: {files: [raw/rec.edf]}\n"
        "preprocess: {montage: GSN-HydroCel-64_1.0}\n")  # a built-in name with a dot
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "study"]) == 0, capsys.readouterr().err
    study = load_study("study")
    assert study.subjects["01"].preprocess["montage"] == "colin27_1020"
    assert study.subjects["02"].preprocess["montage"] == "GSN-HydroCel-64_1.0"
    assert study.config["preprocess"]["eeg"]["montage"] == "standard_1005"
    from brainhead.specs import montage_name

    assert montage_name("standard_1005") == "colin27_1005"


def test_anchors_that_stay_small_and_quoted_keys_are_fine(tmp_path, monkeypatch, capsys):
    root = _study(tmp_path / "study")
    (root / "study.yaml").write_text(
        "name: v\nseed: 0\nstimuli: stimuli.tsv\n"
        "preprocess:\n  eeg: &eeg {l_freq: 1.0, h_freq: 30.0, event_id: {'1': left}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "study"]) == 0, capsys.readouterr().err


def test_stimuli_texts_are_read_as_text(tmp_path):
    """NA-like ids are ids; a stimuli table is never turned into NaN."""
    from brainhead.io.readers import stimulus_table

    path = tmp_path / "stimuli.tsv"
    path.write_text("stim_id\ttext\nNA\tNot applicable is a sentence.\n007\tJames.\n")
    table = stimulus_table(path)
    assert table["stim_id"].tolist() == ["NA", "007"]
    path.write_text("stim_id\ttext\na\tnan\n")
    with pytest.raises(ValueError, match=r"stimuli\.tsv: key 'stimuli': 1 stimuli have no text"):
        stimulus_table(path)


# --------------------------------------------------------------------------- the Snakefile
# Not "study-not-utf8": Snakemake's CLI parses --configfile itself before the Snakefile
# runs, and a study.yaml that is not UTF-8 fails there with Snakemake's own traceback;
# `brainhead validate` (above) is where that file gets its clear message.
SNAKEMAKE_CASES = ["lfreq-above-hfreq", "subject-duplicate-key", "stimuli-na-text",
                   "recording-is-directory", "study-alias-bomb", "study-duplicate-nested-key",
                   "subject-not-utf8"]


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    work = tmp_path_factory.mktemp("validate_workflow")
    shutil.copy2(REPO / "Snakefile", work / "Snakefile")
    shutil.copytree(REPO / "workflows", work / "workflows")
    return work


@pytest.mark.parametrize("case_id", SNAKEMAKE_CASES)
def test_snakefile_refuses_before_any_job(workflow_copy, case_id):
    _, edit, filename, subject, expected = next(c for c in CASES if c[0] == case_id)
    study = workflow_copy / "data_specs" / case_id
    _study(study)
    edit(study)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "-n",
                           "--configfile", f"data_specs/{case_id}/study.yaml"],
                          cwd=workflow_copy, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode != 0
    assert "invalid study spec" in proc.stderr
    line = next((ln for ln in proc.stderr.splitlines() if all(t in ln for t in expected)),
                None)
    assert line is not None, proc.stderr[-3000:]
    assert filename in line and (subject is None or subject in line)
    assert not (workflow_copy / "results").exists()


# --------------------------------------------------------------------------- inspect
@pytest.mark.parametrize("kind", ["missing", "not-hdf5", "directory", "damaged-hdf5"])
def test_inspect_refuses_what_is_not_an_artifact(tmp_path, capsys, kind):
    path = tmp_path / "responses.h5"
    expected = {"missing": "file not found", "not-hdf5": "not an HDF5 file",
                "directory": "is a directory", "damaged-hdf5": "cannot be read as HDF5"}[kind]
    if kind == "not-hdf5":
        path.write_text("stim_id\ttext\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "damaged-hdf5":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    code = main(["inspect", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{path}: {expected}" in err
    assert "Traceback" not in err


def test_a_study_problem_is_reported_once(tmp_path, monkeypatch, capsys):
    """A subject that overrides something else does not repeat the study's problem."""
    root = _study(tmp_path / "study")
    _eeg(l_freq=40.0, h_freq=1.0)(root)
    _edit_subject(preprocess={"notch": [50]})(root)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "study"]) == 1
    problems = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("  - ")]
    assert len(problems) == 1 and "study.yaml: key 'preprocess.eeg.l_freq'" in problems[0]
    # the subject's own override is reported against the subject file
    _edit_subject(preprocess={"h_freq": 0.5})(root)
    assert main(["validate", "study"]) == 1
    problems = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("  - ")]
    assert len(problems) == 2
    assert any("sub-01.yaml: subject '01': key 'preprocess.l_freq': 40 Hz is not below "
               "preprocess.h_freq 0.5 Hz" in p for p in problems)
