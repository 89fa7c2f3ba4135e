"""`brainhead init`: a study scaffolded from the demo's own BIDS output validates and
plans a run; malformed BIDS roots get one clear error and nothing is written."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import SHARED_DATA, copy_workflow, needs_shared_data

from brainhead.cli import main
from brainhead.scaffold import ScaffoldError, init_study, scan_bids
from brainhead.specs import load_study


@pytest.fixture
def bids(small_demo, tmp_path):
    """A copy of the small demo's BIDS dataset (1 EEG, 1 fMRI, 1 sEEG subject)."""
    _, results = small_demo
    dest = tmp_path / "bids"
    shutil.copytree(results / "bids", dest)
    return dest


def test_init_from_the_demo_bids_validates(bids, tmp_path):
    # mark one EEG channel bad in every run's channels.tsv
    for path in sorted((bids / "sub-e01" / "eeg").glob("*_channels.tsv")):
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        table.loc[table["name"] == "Cz", "status"] = "bad"
        table.to_csv(path, sep="\t", index=False)
    study_dir = tmp_path / "data_specs" / "mine"
    out = init_study(study_dir, bids)
    assert out["study"] == study_dir / "study.yaml"
    assert sorted(p.name for p in study_dir.iterdir()) == ["stimuli.tsv", "study.yaml",
                                                          "subjects"]
    study = load_study(study_dir)  # what `brainhead validate` runs
    assert study.name == "mine"
    assert {s: spec.modality for s, spec in study.subjects.items()} == {
        "e01": "eeg", "f01": "fmri", "s01": "seeg"}
    e01 = study.subjects["e01"]
    assert e01.source["task"] == "sentences" and e01.source["runs"] == [1, 2, 3, 4]
    assert e01.bad_channels == ["Cz"]
    assert study.subjects["s01"].bad_channels == []
    # every stimulus of the simulation, with its text (the fMRI events carry it)
    stimuli = pd.read_csv(study_dir / "stimuli.tsv", sep="\t", dtype=str)
    assert len(stimuli) == 48 and out["n_without_text"] == 0
    assert stimuli["text"].str.len().min() > 10
    # the study file: a section per modality found, schema defaults, one comment per key
    text = (study_dir / "study.yaml").read_text()
    config = yaml.safe_load(text)
    assert set(config["preprocess"]) == {"eeg", "seeg", "fmri"}
    assert config["preprocess"]["eeg"]["l_freq"] == 0.5
    assert config["align"]["n_permutations"] == 1000
    in_preprocess = text[text.index("preprocess:"):text.index("\nalign:")].splitlines()[1:]
    keys = [line for line in in_preprocess if line.startswith("    ") and ":" in line]
    assert len(keys) > 40
    assert [line for line in keys if "  # " not in line] == []  # each key explained
    assert "    tmin: -0.2  # Epoch start relative to" in text


def test_init_then_snakemake_plans_the_run(bids, tmp_path):
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work")
    init_study(work / "data_specs" / "mine", bids)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
         "data_specs/mine/study.yaml"], cwd=work, capture_output=True, text=True, timeout=300,
        check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rule, count in (("preprocess", 3), ("features", 1), ("align", 3), ("report", 1)):
        assert any(line.split() == [rule, str(count)] for line in proc.stdout.splitlines()), rule
    assert "results/mine/report.html" in proc.stdout


def test_cli_init_prints_and_validates(bids, tmp_path, capsys):
    assert main(["init", str(tmp_path / "s"), "--bids", str(bids), "--name", "pilot"]) == 0
    out = capsys.readouterr().out
    assert "with 3 subject file(s) and 48 stimuli" in out
    assert "sub-f01: fmri, task sentences, 4 run(s), 0 bad channel(s)" in out
    assert "study 'pilot' is valid" in out


@pytest.mark.parametrize("breakage, message", [
    (lambda b: (b / "dataset_description.json").unlink(),
     r"bids: not a BIDS root: no dataset_description.json"),
    (lambda b: (b / "dataset_description.json").write_text("{not json"),
     r"dataset_description.json: not valid JSON"),
    (lambda b: [shutil.rmtree(p) for p in b.glob("sub-*")], r"bids: no sub-\* subject folders"),
    (lambda b: shutil.rmtree(b / "sub-s01" / "ieeg"),
     r"sub-s01: subject 's01': no eeg, ieeg or func recordings"),
])
def test_malformed_bids_root_is_refused_before_writing(bids, tmp_path, breakage, message):
    breakage(bids)
    study_dir = tmp_path / "new"
    with pytest.raises(ScaffoldError, match=message):
        init_study(study_dir, bids)
    assert not study_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new")]


def test_init_refuses_a_non_empty_study_folder(bids, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "study.yaml").write_text("name: x\n")
    with pytest.raises(ScaffoldError, match="exists and is not an empty folder"):
        init_study(tmp_path / "taken", bids)
    assert (tmp_path / "taken" / "study.yaml").read_text() == "name: x\n"


def test_missing_bids_root(tmp_path, capsys):
    assert main(["init", str(tmp_path / "s"), "--bids", str(tmp_path / "none")]) == 1
    assert "BIDS root not found" in capsys.readouterr().err


@needs_shared_data
def test_ieeg_sample_is_not_bids(tmp_path):
    """../shared/data/ieeg-sample is a single FIF file, not a BIDS dataset: said so."""
    root = SHARED_DATA / "ieeg-sample"
    if not root.is_dir():
        pytest.skip("../shared/data/ieeg-sample is absent")
    with pytest.raises(ScaffoldError, match=r"ieeg-sample: not a BIDS root: no "
                                            r"dataset_description.json \(found \[.*\.fif"):
        scan_bids(root)
