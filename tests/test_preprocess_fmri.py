"""fMRI preprocessing: events, masks, confounds, GLM modes, parcels, bad input, Haxby."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from _bad_inputs_fmri import CASES, block_events, write_bold, write_haxby, write_study
from brainhead.io import RecordingError
from brainhead.io.datasets import FmriRun, FmriRuns
from brainhead.preprocess import preprocess_subject, run_preprocessing
from brainhead.preprocess.fmri import (lsa_betas, lss_betas, preprocess_fmri_runs,
                                       read_onset_files, volume_responses)
from brainhead.specs import SpecError
from conftest import SHARED_DATA, needs_shared_data

HAXBY = SHARED_DATA / "haxby2001"


def _files_study(tmp_path, n_runs=2, preprocess=None, **source):
    """A study of one fMRI subject given as files: ``a`` blocks drive the front voxels."""
    files, events = [], []
    for run in range(1, n_runs + 1):
        ev = block_events()
        write_bold(tmp_path / "raw" / f"run{run}.nii.gz", events=ev, seed=run)
        ev.to_csv(tmp_path / "raw" / f"run{run}.tsv", sep="\t", index=False)
        files.append(f"raw/run{run}.nii.gz")
        events.append(f"raw/run{run}.tsv")
    mask = np.zeros((6, 6, 5), np.uint8)
    mask[1:-1, 1:-1, 1:-1] = 1
    nib.save(nib.Nifti1Image(mask, np.diag([4.0, 4, 4, 1])), tmp_path / "raw" / "mask.nii.gz")
    sub = {"subject": "f1", "modality": "fmri",
           "source": {"files": files, "events": events, "mask": "raw/mask.nii.gz", **source}}
    if preprocess:
        sub["preprocess"] = preprocess
    return write_study(tmp_path, [sub])


def test_files_lsa_and_timeseries(tmp_path):
    study = _files_study(tmp_path)
    t = run_preprocessing(study, "f1", tmp_path / "results")
    v = t.view("stimulus")
    assert v.X.shape[0] == 8  # 4 blocks × 2 runs, one beta each
    assert v.rows["stim_id"].tolist() == ["a1", "b1", "a2", "b2"] * 2
    assert v.rows["group"].tolist() == ["1"] * 4 + ["2"] * 4
    assert v.rows["y"].tolist() == ["a", "b", "a", "b"] * 2
    ts = t.view("timeseries")
    assert ts.X.shape == (120, len(t.targets))
    assert ts.events["onset"].tolist() == block_events()["onset"].tolist() * 2
    assert ts.events["duration"].tolist() == [12.0] * 8
    # per-run z-scoring of the time series
    np.testing.assert_allclose(ts.X[:60].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(ts.X[:60].std(0, ddof=1), 1, atol=1e-3)
    # the planted response: front voxels answer "a" blocks more than "b" blocks
    x = t.targets.coords[:, 0]
    front = x < np.median(x)
    a = v.rows["y"] == "a"
    assert v.X[a][:, front].mean() > v.X[~a][:, front].mean() + 0.5
    assert v.X[~a][:, ~front].mean() > v.X[a][:, ~front].mean() + 0.5


def test_lss_equals_lsa_without_overlap():
    """With one event per regressor and no overlap, LSS and LSA give close betas."""
    rng = np.random.default_rng(0)
    ft = np.arange(100) * 2.0
    ev = pd.DataFrame({"onset": [10.0, 60.0, 110.0, 160.0], "duration": 4.0,
                       "trial_type": ["a", "b", "a", "b"]})
    Y = rng.normal(size=(100, 3))
    lsa = lsa_betas(Y, ft, ev, "glover", 0.01)
    lss = lss_betas(Y, ft, ev, "glover", 0.01)
    assert lsa.shape == lss.shape == (4, 3)
    np.testing.assert_allclose(lsa, lss, atol=0.15)
    assert not np.allclose(lsa, 0)


def test_volume_responses_shift_and_cover():
    ft = np.arange(20) * 2.0
    Y = np.arange(20, dtype=float)[:, None]
    ev = pd.DataFrame({"onset": [4.0, 20.0], "duration": [6.0, 0.5]})
    X, idx = volume_responses(Y, ft, ev, delay=4.0)
    # event 0 drives [8, 14) s → volumes 4, 5, 6; event 1 is short → first volume ≥ 24 s
    assert X[:, 0].tolist() == [4.0, 5.0, 6.0, 12.0]
    assert idx.tolist() == [0, 0, 0, 1]


def test_volume_mode_lss_mni_mask_and_confounds(tmp_path):
    study = _files_study(tmp_path, preprocess={"response": "volume", "volume_delay": 4.0})
    t = run_preprocessing(study, "f1", tmp_path / "r")
    v = t.view("stimulus")
    assert t.info["response"] == "volume"
    # 12 s blocks at TR 2 s: 6 volumes per block, 4 blocks, 2 runs
    assert v.X.shape[0] == 48 and set(v.rows["y"]) == {"a", "b"}
    spec = study.subjects["f1"]
    lss = dataclasses.replace(spec, preprocess={**spec.preprocess, "glm": "lss"})
    lsa = dataclasses.replace(spec, preprocess={**spec.preprocess, "response": "glm"})
    s2 = dataclasses.replace(study, subjects={"f1": lss})
    s3 = dataclasses.replace(study, subjects={"f1": lsa})
    assert run_preprocessing(s2, "f1", tmp_path / "r").view("stimulus").X.shape[0] == 48
    assert run_preprocessing(s3, "f1", tmp_path / "r").view("stimulus").X.shape[0] == 8


def test_mni152_mask_resampled(tmp_path):
    """The template mask lands on the BOLD grid: voxels only where the template is brain."""
    ev = block_events()
    bold = tmp_path / "bold.nii.gz"
    img = nib.load(write_bold(bold, shape=(12, 14, 12), events=ev))
    centred = nib.Nifti1Image(np.asarray(img.dataobj) + 1000.0,
                              np.array([[12.0, 0, 0, -72], [0, 12, 0, -100],
                                        [0, 0, 12, -60], [0, 0, 0, 1]]), img.header)
    spec = _files_study(tmp_path).subjects["f1"]
    spec = dataclasses.replace(spec, preprocess={**spec.preprocess, "brain_mask": "mni152"})
    data = FmriRuns(runs=[FmriRun("1", centred, ev, t_r=2.0, path=bold)])
    t = preprocess_fmri_runs(spec, data)
    assert t.info["mask"] == "mni152"
    n = len(t.targets)
    assert 0.2 * 12 * 14 * 12 < n < 0.9 * 12 * 14 * 12  # a brain, not the whole box
    assert np.all(np.abs(t.targets.coords[:, 0]) < 80)


def test_parcellation_targets(tmp_path):
    labels = np.zeros((6, 6, 5), np.int16)
    labels[1:3, 1:5, 1:4] = 1
    labels[3:5, 1:5, 1:4] = 2
    nib.save(nib.Nifti1Image(labels, np.diag([4.0, 4, 4, 1])), tmp_path / "parc.nii.gz")
    (tmp_path / "parc.tsv").write_text("index\tname\n1\tfront\n2\tback\n")
    study = _files_study(tmp_path, preprocess={"parcellation": "parc.nii.gz"})
    t = run_preprocessing(study, "f1", tmp_path / "r")
    assert t.targets.name.tolist() == ["front", "back"]
    assert t.targets.kind.tolist() == ["parcel", "parcel"]
    np.testing.assert_allclose(t.targets.coords[:, 0], [6.0, 14.0])
    v = t.view("stimulus")
    a = v.rows["y"] == "a"
    assert v.X[a, 0].mean() > v.X[~a, 0].mean() and v.X[~a, 1].mean() > v.X[a, 1].mean()


def test_openfmri_onsets(tmp_path):
    write_haxby(tmp_path / "hx")
    folder = tmp_path / "hx" / "sub001" / "model" / "model001" / "onsets" / "task001_run001"
    ev = read_onset_files(folder, {"cond001": "house", "cond002": "face", "cond003": "cat"})
    assert ev["onset"].tolist() == [10.0, 55.0, 100.0]
    assert ev["trial_type"].tolist() == ["face", "cat", "house"]
    assert ev["duration"].tolist() == [22.5] * 3
    with pytest.raises(RecordingError, match="cond004.txt: onset file of condition cond004"):
        read_onset_files(folder, {"cond004": "shoe"}, subject="x")


@pytest.mark.parametrize("case_id, make", [c for c in CASES])
def test_bad_inputs(tmp_path, case_id, make):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    sub, expected = make(study_dir)
    written = {p.name for p in study_dir.rglob("*") if p.is_file()}
    out = tmp_path / "results" / f"sub-{sub['subject']}" / "responses.h5"
    with pytest.raises((RecordingError, SpecError)) as err:
        study = write_study(study_dir, [sub])
        preprocess_subject(study, sub["subject"], tmp_path / "results", out)
    msg = str(err.value)
    assert expected in msg
    assert f"sub-{sub['subject']}" in msg
    assert any(name in msg for name in written), msg
    assert not out.exists() and not out.parent.exists()


# --------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def haxby_table():
    from brainhead.specs import load_study

    from conftest import ROOT

    study = load_study(ROOT / "data_specs" / "haxby")
    return run_preprocessing(study, "01", ROOT / "results" / "haxby")


@needs_shared_data
def test_haxby_blocks_match_events(haxby_table):
    t = haxby_table
    v = t.view("stimulus")
    assert t.info["t_r"] == 2.5 and t.info["runs"] == [str(r) for r in range(1, 13)]
    assert v.X.shape == (96, len(t.targets))  # 8 category blocks × 12 runs
    runs = sorted((HAXBY / "sub001" / "BOLD").glob("task001_run*"))
    for k, run in enumerate(runs):
        events = pd.read_csv(run / "bold_events.tsv", sep="\t")
        assert v.rows["stim_id"][8 * k: 8 * k + 8].tolist() == events["trial_type"].tolist()
        assert set(v.rows["group"][8 * k: 8 * k + 8]) == {str(k + 1)}
    mask = np.asarray(nib.load(HAXBY / "sub001" / "masks" / "25mm" / "brain.nii.gz").dataobj)
    assert len(t.targets) == int((mask > 0).sum())
    ts = t.view("timeseries")
    assert ts.X.shape == (12 * 121, len(t.targets))
    assert len(ts.events["onset"]) == 96


@needs_shared_data
def test_haxby_face_vs_house_decodable(haxby_table):
    """Face vs house from block betas, leave-one-run-out, against label permutations.

    Measured: accuracy 0.875 (chance 0.5), permutation p = 0.005 (200 permutations).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut, permutation_test_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    v = haxby_table.view("stimulus")
    sel = np.isin(v.rows["stim_id"], ["face", "house"])
    assert sel.sum() == 24
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    score, perm, p = permutation_test_score(
        clf, v.X[sel], v.rows["stim_id"][sel], groups=v.rows["group"][sel],
        cv=LeaveOneGroupOut(), n_permutations=100, random_state=0)
    assert score >= 0.75, score
    assert perm.mean() < 0.6
    assert p < 0.05, p
