"""The haxby and nsd adapters on small files written in their documented layouts."""

from __future__ import annotations

import numpy as np
import pytest

from _bad_inputs_fmri import write_haxby, write_nsd, write_study
from brainhead.io import RecordingError
from brainhead.io.datasets import FmriRuns, load_dataset
from brainhead.preprocess import run_preprocessing
from brainhead.specs import SpecError
from conftest import SHARED_DATA, needs_shared_data


def _haxby_study(tmp_path, **source):
    write_haxby(tmp_path / "haxby")
    return write_study(tmp_path, [{"subject": "h1", "modality": "fmri",
                                   "source": {"dataset": "haxby", "root": "haxby", **source}}])


def test_haxby_adapter_reads_layout(tmp_path):
    study = _haxby_study(tmp_path)
    data = load_dataset(study.subjects["h1"])
    assert isinstance(data, FmriRuns)
    assert [r.label for r in data.runs] == ["1", "2"]
    assert data.mask.name == "brain.nii.gz" and data.info["response"] == "glm"
    ev = data.runs[0].events
    # run 1: cond002 (face) at 10 s, cond003 (cat) at 55 s, cond001 (house) at 100 s
    assert ev["trial_type"].tolist() == ["face", "cat", "house"]
    assert ev["onset"].tolist() == [10.0, 55.0, 100.0]
    assert data.runs[0].confounds.shape == (60, 6)
    t = run_preprocessing(study, "h1", tmp_path / "results")
    v = t.view("stimulus")
    assert v.X.shape == (6, 4 * 5 * 3)  # 3 blocks × 2 runs; the mask's inner voxels
    assert v.rows["group"].tolist() == ["1"] * 3 + ["2"] * 3
    assert t.info["t_r"] == 2.5


def test_haxby_options(tmp_path):
    study = _haxby_study(tmp_path, conditions=["face", "house"], runs=[2], mask="vt",
                         level="volume")
    data = load_dataset(study.subjects["h1"])
    assert [r.label for r in data.runs] == ["2"]
    assert sorted(set(data.runs[0].events["trial_type"])) == ["face", "house"]
    t = run_preprocessing(study, "h1", tmp_path / "r")
    assert len(t.targets) == 8 and t.info["response"] == "volume"
    # 22.5 s blocks at TR 2.5 s: 9 volumes each
    assert t.view("stimulus").X.shape[0] == 18


def test_haxby_option_errors(tmp_path):
    with pytest.raises(SpecError, match="key 'source.level': 'trial' is not one of"):
        _haxby_study(tmp_path, level="trial")
    study = write_study(tmp_path, [{"subject": "h1", "modality": "fmri", "source": {
        "dataset": "haxby", "root": "haxby", "conditions": ["dog"]}}])
    with pytest.raises(RecordingError, match=r"\['dog'\] are not conditions of"):
        load_dataset(study.subjects["h1"])
    study = write_study(tmp_path, [{"subject": "h1", "modality": "fmri", "source": {
        "dataset": "haxby", "root": "haxby", "bold": "bold_1slice"}}])
    with pytest.raises(RecordingError, match="BOLD variant 'bold_1slice' not found"):
        load_dataset(study.subjects["h1"])


@pytest.mark.parametrize("fmt", ["hdf5", "nifti"])
def test_nsd_adapter(tmp_path, fmt):
    truth = write_nsd(tmp_path / "nsd", fmt=fmt)
    study = write_study(tmp_path, [{"subject": "n1", "modality": "fmri", "source": {
        "dataset": "nsd", "root": "nsd", "subject": 1, "format": fmt, "zscore": False}}])
    t = run_preprocessing(study, "n1", tmp_path / "results")
    v = t.view("stimulus")
    assert set(t.views) == {"stimulus"}
    assert v.X.shape == (12, 2 * 3 * 3)  # 2 sessions × 6 trials; ROI 2×3×3 voxels
    assert v.rows["stim_id"].tolist() == ["101", "102", "103"] * 4
    assert v.rows["group"].tolist() == ["1"] * 6 + ["2"] * 6
    # values: int16 / 300 at the ROI voxels, in the NIfTI (i, j, k) order
    ijk = np.array([[int(x) for x in n[1:].split("-")] for n in t.targets.name])
    expected = np.concatenate([truth[s][tuple(ijk.T)].T for s in (1, 2)])
    np.testing.assert_allclose(v.X, expected, rtol=1e-6)
    np.testing.assert_allclose(t.targets.coords, ijk * 4.0)
    assert set(t.targets.region) == {"nsdgeneral"}


def test_nsd_sessions_and_zscore(tmp_path):
    write_nsd(tmp_path / "nsd", sessions=(1, 2, 3))
    study = write_study(tmp_path, [{"subject": "n1", "modality": "fmri", "source": {
        "dataset": "nsd", "root": "nsd", "subject": 1, "sessions": [3, 1]}}])
    t = run_preprocessing(study, "n1", tmp_path / "r")
    v = t.view("stimulus")
    assert v.rows["group"].tolist() == ["3"] * 6 + ["1"] * 6
    np.testing.assert_allclose(v.X[:6].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(v.X[:6].std(0), 1, atol=1e-4)


def test_nsd_missing_session(tmp_path):
    write_nsd(tmp_path / "nsd")
    study = write_study(tmp_path, [{"subject": "n1", "modality": "fmri", "source": {
        "dataset": "nsd", "root": "nsd", "subject": 1, "sessions": [4]}}])
    with pytest.raises(RecordingError, match="sub-n1: .*betas_session04.hdf5: betas file not found"):
        load_dataset(study.subjects["n1"])


@needs_shared_data
def test_haxby_adapter_on_real_layout(tmp_path):
    """The onset files give the same events as the run's bold_events.tsv."""
    import pandas as pd

    root = SHARED_DATA / "haxby2001"
    study = write_study(tmp_path, [{"subject": "h1", "modality": "fmri", "source": {
        "dataset": "haxby", "root": str(root)}}])
    data = load_dataset(study.subjects["h1"])
    assert len(data.runs) == 12
    for run in data.runs:
        ref = pd.read_csv(run.path.parent / "bold_events.tsv", sep="\t")
        assert run.events["trial_type"].tolist() == ref["trial_type"].tolist()
        np.testing.assert_allclose(run.events["onset"], ref["onset"])
        np.testing.assert_allclose(run.events["duration"], ref["duration"])
        assert run.confounds.shape == (121, 6)


def test_shipped_nsd_study_on_generated_layout(tmp_path):
    """data_specs/nsd validates and runs once its root points at an NSD-layout folder."""
    import shutil

    import yaml

    from brainhead.specs import load_study
    from conftest import ROOT

    study_dir = tmp_path / "nsd_study"
    shutil.copytree(ROOT / "data_specs" / "nsd", study_dir)
    write_nsd(tmp_path / "data", sessions=(1, 2, 3))
    sub_file = study_dir / "subjects" / "sub-01.yaml"
    sub = yaml.safe_load(sub_file.read_text())
    sub["source"]["root"] = "../data"
    sub_file.write_text(yaml.safe_dump(sub))
    (study_dir / "stimuli.tsv").write_text("stim_id\ttext\n101\ta\n102\tb\n103\tc\n"
        + "".join(f"x{k}\tfiller {k}\n" for k in range(8)))  # align.min_stimuli: 8
    t = run_preprocessing(load_study(study_dir), "01", tmp_path / "results")
    v = t.view("stimulus")
    assert v.X.shape == (18, 18) and sorted(set(v.rows["group"])) == ["1", "2", "3"]
    # every image is repeated: what a noise ceiling needs
    assert (np.unique(v.rows["stim_id"], return_counts=True)[1] == 6).all()
