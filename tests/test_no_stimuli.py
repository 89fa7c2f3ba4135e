"""A study without stimuli (``stimuli: null``): preprocess -> report, nothing else.

The recording is a small generated sEEG FIF (two shafts), so these tests need nothing
from ../shared; the real case is ``tests/test_studies.py::test_ieeg_sample``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from _bad_inputs_fmri import write_seeg_fif
from _mini_study import copy_workflow, snakemake

CONTACTS = ["A1", "A2", "A3", "A4", "B1", "B2", "B3"]
PAIRS = ["A1-A2", "A2-A3", "A3-A4", "B1-B2", "B2-B3"]


def _study(root: Path, **extra) -> Path:
    """data_specs-like folder: study.yaml with ``stimuli: null`` and one sEEG subject."""
    write_seeg_fif(root / "raw" / "rec.fif", CONTACTS, sfreq=250.0, duration=3.0)
    study = {"name": "nostim", "description": "two shafts, no stimuli", "seed": 0,
             "stimuli": None,
             "preprocess": {"seeg": {"reference": "bipolar", "high_gamma": [60, 110],
                                     "epochs": False, "timeseries_sfreq": 20.0}}, **extra}
    (root / "subjects").mkdir(parents=True, exist_ok=True)
    (root / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    (root / "subjects" / "sub-01.yaml").write_text(yaml.safe_dump(
        {"subject": "01", "modality": "seeg", "source": {"files": ["raw/rec.fif"]}}))
    return root


def _edit(root: Path, **changes) -> None:
    study = yaml.safe_load((root / "study.yaml").read_text())
    for key, value in changes.items():
        if value is ...:
            study.pop(key, None)
        else:
            study[key] = value
    (root / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))


def test_a_study_without_stimuli_loads(tmp_path):
    from brainhead.specs import has_stimuli, load_study, preprocess_only

    study = load_study(_study(tmp_path / "nostim"))
    assert study.config["stimuli"] is None
    assert not has_stimuli(study.config) and preprocess_only(study.config)
    assert list(study.subjects) == ["01"]


def test_a_study_without_stimuli_refuses_what_needs_them(tmp_path):
    from brainhead.specs import SpecError, load_study

    root = _study(tmp_path / "nostim")
    _edit(root, train={"families": ["voxel_xattn"]})
    with pytest.raises(SpecError, match=r"study\.yaml: key 'stimuli': required when the study "
                                        r"is not simulated and trains on stimulus features"):
        load_study(root)
    _edit(root, train=...)
    _edit(root, stimuli="None")  # YAML's None is a string: a file name, with a hint
    with pytest.raises(SpecError, match=r"key 'stimuli': file not found: .*None; for a study "
                                        r"without stimuli write 'stimuli: null'"):
        load_study(root)
    _edit(root, stimuli=...)  # left out (no decode section): still required, with the way out
    with pytest.raises(SpecError, match=r"key 'stimuli': required when the study is not "
                                        r"simulated .* or write 'stimuli: null'"):
        load_study(root)
    _edit(root, stimuli=None, simulate={"n_stimuli": 8})
    with pytest.raises(SpecError, match=r"key 'stimuli': null declares a study without "
                                        r"stimuli, but the simulate section writes"):
        load_study(root)


def test_a_study_with_stimuli_is_still_checked_for_a_degenerate_design(tmp_path):
    from brainhead.specs import SpecError, load_study

    root = _study(tmp_path / "nostim")
    (root / "stimuli.tsv").write_text("stim_id\ttext\na\tone\nb\ttwo\n")
    _edit(root, stimuli="stimuli.tsv")
    with pytest.raises(SpecError, match=r"key 'align.min_stimuli': degenerate design"):
        load_study(root)
    load_study(root, design=False)  # what preprocessing alone would accept


def test_the_dag_is_preprocess_then_report(tmp_path):
    work = copy_workflow(tmp_path / "work")
    _study(work / "data_specs" / "nostim")
    proc = snakemake(work, "-n", "--cores", "2", "--config", "study=data_specs/nostim")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout[proc.stdout.index("Job stats"):].split("\n\n")[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE))
    assert counts == {"all": "1", "preprocess": "1", "report": "1", "total": "3"}
    assert not (work / "results").exists()


def test_the_report_describes_the_preprocessing(tmp_path):
    from brainhead.preprocess import preprocess_subject
    from brainhead.report import make_report
    from brainhead.report.preprocessing import subject_summary
    from brainhead.specs import load_study

    study = load_study(_study(tmp_path / "nostim"))
    results = tmp_path / "results" / "nostim"
    responses = preprocess_subject(study, "01", results, results / "sub-01" / "responses.h5")
    summary = subject_summary(responses)
    assert summary["n_targets"] == len(PAIRS) and summary["bipolar"]
    assert summary["groups"] == {"A": PAIRS[:3], "B": PAIRS[3:]}
    assert summary["views"] == {"timeseries": (60, 5)}  # 3 s at 20 Hz
    assert summary["ts_rate"] == pytest.approx(20.0) and summary["ts_seconds"] == pytest.approx(3.0)
    assert summary["n_coords"] == 5 and summary["coord_frame"]  # as MNE stored the montage
    assert summary["reference"] == "bipolar" and summary["runs"] == ["1"]
    assert summary["settings"]["high_gamma"] == [60, 110]

    html = make_report(None, results / "report.html", study="nostim",
                       description=study.config["description"], spec=study.config,
                       results_dir=results, figures_dir=results / "figures").read_text()
    assert "stimuli: null" in html and "Preprocessed subjects" in html
    assert "<title>brainhead preprocessing report: nostim</title>" in html
    assert "<td>sub-01</td>" in html and "<td>5</td>" in html and "(bipolar pairs)" in html
    assert f"5 ({summary['coord_frame']} frame)" in html and "timeseries 60 × 5" in html
    assert "20 Hz" in html and "3.00 s" in html
    assert all(pair in html for pair in PAIRS)
    assert "Best layer per subject and region" not in html and "Alignment settings" not in html
    assert sorted(p.name for p in (results / "figures").iterdir()) == []

    # a study that aligns gets neither the section nor the note
    aligning = {**study.config, "stimuli": "stimuli.tsv"}
    html = make_report(None, tmp_path / "other.html", study="nostim", spec=aligning,
                       results_dir=results).read_text()
    assert "Preprocessed subjects" not in html and "stimuli: null" not in html
    assert "Best layer per subject and region" in html
    assert "<title>brainhead alignment report: nostim</title>" in html


@pytest.mark.slow
def test_snakemake_runs_it_to_its_report(tmp_path):
    work = copy_workflow(tmp_path / "work")
    _study(work / "data_specs" / "nostim")
    proc = snakemake(work, "--cores", "2", "--config", "study=data_specs/nostim")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = work / "results" / "nostim"
    assert sorted(p.name for p in results.iterdir()) == [
        "benchmarks", "figures", "report.html", "sub-01"]
    assert sorted(p.name for p in (results / "benchmarks").iterdir()) == ["preprocess", "report"]
    html = (results / "report.html").read_text()
    assert "Preprocessed subjects" in html and all(pair in html for pair in PAIRS)
