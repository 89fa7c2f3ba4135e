"""Preprocessing of the simulated BIDS subjects and its errors on bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from brainhead.io import RecordingError, read_responses
from brainhead.preprocess import preprocess_subject, run_preprocessing


@pytest.fixture(scope="module")
def tables(small_demo):
    study, results = small_demo
    return {s: run_preprocessing(study, s, results) for s in ("e01", "f01", "s01")}


def test_eeg_table(tables):
    t = tables["e01"]
    assert t.modality == "eeg"
    # the demo decodes raw-signal models too (decode.models), so the epochs are kept
    assert set(t.views) == {"stimulus", "bands", "epochs"}
    assert t.view("stimulus").X.shape == (48, 32)
    assert t.view("epochs").X.shape[:2] == (48, 32) and t.view("epochs").X.shape[2] > 1
    assert t.view("bands").X.shape == (48, 32, 4)
    assert t.view("bands").labels["band"].tolist() == ["theta", "alpha", "beta", "gamma"]
    assert set(t.targets.region) == {"posterior", "anterior"}
    assert sorted(set(t.view("stimulus").rows["group"])) == ["1", "2", "3", "4"]
    assert len(set(t.view("stimulus").rows["stim_id"])) == 48
    assert t.info["n_epochs_kept"] == 48 and t.info["n_epochs_rejected"] == 0
    assert np.isfinite(t.targets.coords).all()


def test_eeg_condition_modulates_band_power(tables):
    """Active trials carry an alpha burst on posterior channels (planted)."""
    t = tables["e01"]
    v = t.view("bands")
    alpha = v.X[:, t.targets.region == "posterior", 1].mean(1)
    active = v.rows["y"] == "active"
    assert alpha[active].mean() > alpha[~active].mean() + 0.1


def test_seeg_table(tables):
    t = tables["s01"]
    assert set(t.views) == {"stimulus", "timeseries", "epochs"}
    assert t.view("stimulus").X.shape == (48, 32)
    assert t.view("epochs").X.shape[:2] == (48, 32) and t.view("epochs").X.shape[2] > 1
    assert t.targets.kind.tolist() == ["electrode"] * 32
    ts = t.view("timeseries")
    assert ts.X.shape[1] == 32 and len(ts.events["onset"]) == 48
    # coordinates in mm, inside a head-sized box
    assert np.all(np.abs(t.targets.coords) < 120)
    assert t.targets.name[0] == "A1"


def test_fmri_table(tables, small_demo):
    t = tables["f01"]
    v = t.view("stimulus")
    assert v.X.shape[0] == 48 and v.X.shape[1] == len(t.targets) > 1000
    assert set(t.targets.region) == {"posterior", "middle", "anterior"}
    ts = t.view("timeseries")
    assert ts.X.shape[1] == v.X.shape[1]
    assert t.info["t_r"] == 2.0
    # posterior voxels lie behind anterior ones (MNI y)
    y = t.targets.coords[:, 1]
    assert y[t.targets.region == "posterior"].max() <= y[t.targets.region == "anterior"].min()


def test_writes_atomically_with_provenance(small_demo, tmp_path):
    from brainhead.io import read_attrs

    study, results = small_demo
    out = tmp_path / "sub-s01" / "responses.h5"
    preprocess_subject(study, "s01", results, out)
    assert read_responses(out).subject == "s01"
    attrs = read_attrs(out)
    assert attrs["brainhead_step"] == "preprocess" and len(attrs["params_hash"]) == 16
    assert [p.name for p in out.parent.iterdir()] == ["responses.h5"]


def _with(study, subject, **changes):
    spec = dataclasses.replace(study.subjects[subject], **changes)
    return dataclasses.replace(study, subjects={**study.subjects, subject: spec})


@pytest.mark.parametrize("subject, changes, match", [
    ("e01", {"bad_channels": ["XYZ"]}, "bad_channels \\['XYZ'\\] are not channels"),
    ("e01", {"exclude_runs": ["1", "2", "3", "4"]}, "every run is excluded"),
    ("s01", {"preprocess": {"notch": [], "reference": "average", "high_gamma": [70, 300],
                            "tmin": -0.2, "tmax": 0.8, "baseline": None,
                            "window": [0.1, 0.6], "timeseries_sfreq": 20.0}},
     "Nyquist"),
])
def test_bad_input_errors_name_subject_and_write_nothing(small_demo, tmp_path, subject,
                                                         changes, match):
    study, results = small_demo
    bad = _with(study, subject, **changes)
    out = tmp_path / f"sub-{subject}" / "responses.h5"
    with pytest.raises(RecordingError, match=match) as err:
        preprocess_subject(bad, subject, results, out)
    assert f"sub-{subject}" in str(err.value)
    assert not out.exists() and not out.parent.exists()


def test_fmri_mask_mismatch(small_demo, tmp_path):
    import nibabel as nib

    study, results = small_demo
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4)), mask)
    spec = study.subjects["f01"]
    bad = _with(study, "f01", preprocess={**spec.preprocess, "mask": str(mask)})
    with pytest.raises(RecordingError, match="does not match the BOLD grid"):
        run_preprocessing(bad, "f01", results)


def test_fmri_events_outside_run(small_demo, tmp_path):
    import shutil

    import pandas as pd

    study, results = small_demo
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    ev = next((copy / "bids" / "sub-f01" / "func").glob("*run-1_events.tsv"))
    table = pd.read_csv(ev, sep="\t")
    table.loc[0, "onset"] = 10_000.0
    table.to_csv(ev, sep="\t", index=False)
    with pytest.raises(RecordingError, match="outside the"):
        run_preprocessing(study, "f01", copy)


def test_eeg_without_events(tmp_path, small_demo):
    import mne

    from brainhead.preprocess._common import Run, parse_events

    raw = mne.io.RawArray(np.zeros((2, 100)), mne.create_info(["Cz", "Pz"], 100.0, "eeg"),
                          verbose="error")
    with pytest.raises(RecordingError, match="no events"):
        parse_events(raw, Run("1", raw, tmp_path / "x.edf", None), "e09")
