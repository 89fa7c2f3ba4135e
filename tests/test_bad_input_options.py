"""What a user opts into for files as people have them: channel renaming before the
montage, runs whose clocks drift a little, and dropping NaN channels or voxels with
the count reported. Without the option each of these is an error (the cases in
``tests/_bad_inputs_eeg.py`` and ``tests/_bad_inputs_fmri.py``)."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
import yaml
from _bad_inputs_eeg import NAMES_10_20, SFREQ, _edf, _signals, write_stream
from _bad_inputs_fmri import AFFINE, block_events, write_bold, write_study

from brainhead.io.readers import RecordingError
from brainhead.preprocess import run_preprocessing
from brainhead.specs import load_study

STIMULI = "stim_id\ttext\n" + "".join(f"s{k}\tsentence {k}\n" for k in range(8))
EVENTS = tuple((2.0 + 3 * k, "stim") for k in range(5))


def _eeg_study(root, source: dict, preprocess: dict | None = None):
    (root / "subjects").mkdir(parents=True, exist_ok=True)
    (root / "stimuli.tsv").write_text(STIMULI)
    (root / "study.yaml").write_text(yaml.safe_dump({"name": "o", "seed": 0,
                                                     "stimuli": "stimuli.tsv"}))
    sub = {"subject": "01", "modality": "eeg", "source": source}
    if preprocess:
        sub["preprocess"] = preprocess
    (root / "subjects" / "sub-01.yaml").write_text(yaml.safe_dump(sub))
    return load_study(root)


# --------------------------------------------------------------------------- renaming
def test_prefix_suffix_and_mapping_before_the_montage(tmp_path):
    names = [f"EEG {n}-REF" for n in NAMES_10_20[:-1]] + ["EEG T3-REF"]
    _edf(tmp_path / "raw" / "rec.edf", names, events=EVENTS)
    source = {"files": ["raw/rec.edf"]}
    with pytest.raises(RecordingError, match=r"channels \['EEG Fp1-REF'.*are not in montage"):
        run_preprocessing(_eeg_study(tmp_path, source), "01", tmp_path / "results")
    study = _eeg_study(tmp_path, source, {"strip_prefix": "EEG ", "strip_suffix": "-REF",
                                          "rename_channels": {"T3": "T7"}})
    table = run_preprocessing(study, "01", tmp_path / "results")
    assert table.targets.name.tolist() == NAMES_10_20[:-1] + ["T7"]
    assert np.isfinite(table.targets.coords).all()  # every new name is in the montage


def test_bad_channels_use_the_new_names(tmp_path):
    _edf(tmp_path / "raw" / "rec.edf", [f"EEG {n}" for n in NAMES_10_20], events=EVENTS)
    root = tmp_path
    _eeg_study(root, {"files": ["raw/rec.edf"]}, {"strip_prefix": "EEG "})
    sub = yaml.safe_load((root / "subjects" / "sub-01.yaml").read_text())
    sub["bad_channels"] = ["O2"]
    (root / "subjects" / "sub-01.yaml").write_text(yaml.safe_dump(sub))
    table = run_preprocessing(load_study(root), "01", tmp_path / "results")
    assert "O2" not in table.targets.name and "O1" in table.targets.name


# --------------------------------------------------------------------------- clock drift
def test_runs_within_rate_tolerance_are_resampled_and_logged(tmp_path, caplog):
    kw = {"jitter": 0.0, "seconds": 12.0, "markers": {512: "stim", 1536: "stim"}}
    write_stream(tmp_path / "raw" / "r1.csv", NAMES_10_20, sfreq=256.0255, **kw)
    write_stream(tmp_path / "raw" / "r2.csv", NAMES_10_20, sfreq=256.0276, seed=1, **kw)
    study = _eeg_study(tmp_path, {"files": ["raw/r1.csv", "raw/r2.csv"]})
    with caplog.at_level(logging.WARNING, logger="brainhead"):
        table = run_preprocessing(study, "01", tmp_path / "results")
    assert table.info["sfreq"] == pytest.approx(256.0255, abs=1e-5)  # stamps in µs
    assert table.view("stimulus").X.shape[0] == 4
    assert sorted(set(table.view("stimulus").rows["group"])) == ["1", "2"]
    logged = [r.getMessage() for r in caplog.records if "resampled" in r.getMessage()]
    assert len(logged) == 1 and "r2.csv" in logged[0]
    assert "sampling rate 256.0275" in logged[0] and "first run's 256.0255 Hz" in logged[0]
    # a tolerance of 0 refuses the same runs
    study = _eeg_study(tmp_path, {"files": ["raw/r1.csv", "raw/r2.csv"]},
                       {"sfreq_tolerance_hz": 0.0})
    with pytest.raises(RecordingError, match=r"r2\.csv: sampling rate .* differs from the "
                                             r"first run's .*sfreq_tolerance_hz"):
        run_preprocessing(study, "01", tmp_path / "results")


# --------------------------------------------------------------------------- NaN
def test_eeg_nan_channel_dropped_on_request(tmp_path, caplog):
    import mne

    data = _signals(len(NAMES_10_20), 2000) * 1e-6
    data[3, 500:600] = np.nan
    raw = mne.io.RawArray(data, mne.create_info(NAMES_10_20, SFREQ, "eeg"), verbose="error")
    raw.set_annotations(mne.Annotations([2.0, 6.0, 10.0], 0.0, ["stim"] * 3))
    (tmp_path / "raw").mkdir()
    raw.save(tmp_path / "raw" / "nan_raw.fif", verbose="error")
    study = _eeg_study(tmp_path, {"files": ["raw/nan_raw.fif"]}, {"drop_nonfinite": True})
    with caplog.at_level(logging.WARNING, logger="brainhead"):
        table = run_preprocessing(study, "01", tmp_path / "results")
    assert "F4" not in table.targets.name and len(table.targets.name) == 11
    assert table.info["n_nonfinite_channels"] == 1
    assert table.info["bads"] == {"1": {"nan": ["F4"]}}
    assert any("1 channel(s) with NaN or infinite samples dropped" in r.getMessage()
               for r in caplog.records)
    assert np.isfinite(table.view("stimulus").X).all()


def _nan_bold(root, shape=(6, 6, 5)):
    events = block_events()
    bold = write_bold(root / "raw" / "bold.nii.gz", shape=shape, events=events)
    events.to_csv(root / "raw" / "events.tsv", sep="\t", index=False)
    img = nib.load(bold)
    data = np.asarray(img.dataobj, dtype=np.float32)
    c = tuple(n // 2 - 1 for n in shape)  # (2, 2, 1) in the small image: inside the brain
    data[c[0], c[1], c[2] + 1, 10:20] = np.nan
    data[c[0] + 1, c[1] + 1, c[2] + 1, :] = np.nan  # NaN in every volume
    nib.save(nib.Nifti1Image(data, img.affine, img.header), bold)
    mask = np.zeros(data.shape[:3], np.uint8)
    mask[1:-1, 1:-1, 1:-1] = 1
    nib.save(nib.Nifti1Image(mask, AFFINE), root / "raw" / "mask.nii.gz")
    return {"subject": "f1", "modality": "fmri",
            "source": {"files": ["raw/bold.nii.gz"], "events": ["raw/events.tsv"],
                       "mask": "raw/mask.nii.gz"}}


def test_fmri_nan_voxels_dropped_on_request(tmp_path, caplog):
    sub = _nan_bold(tmp_path)
    with pytest.raises(RecordingError, match=r"sub-f1: .*bold\.nii\.gz: 2 of 48 voxels .*key "
                                             r"'preprocess\.drop_nonfinite'"):
        run_preprocessing(write_study(tmp_path, [sub]), "f1", tmp_path / "results")
    sub["preprocess"] = {"drop_nonfinite": True}
    with caplog.at_level(logging.WARNING, logger="brainhead"):
        table = run_preprocessing(write_study(tmp_path, [sub]), "f1", tmp_path / "results")
    assert len(table.targets.name) == 46
    assert table.info["n_nonfinite_voxels"] == 2
    for view in table.views.values():
        assert np.isfinite(view.X).all()
        # no plateau: every kept voxel still varies over volumes
        if view.X.ndim == 2 and view.X.shape[0] > 10:
            assert (view.X.std(axis=0) > 0).all()
    assert any("2 voxels with NaN or infinite values left out" in r.getMessage()
               for r in caplog.records)


def test_old_montage_name_read_by_the_pipeline_too():
    """Specs built by hand (not through load_study) get the alias as well."""
    from types import SimpleNamespace

    from brainhead.preprocess.eeg import _montage

    spec = SimpleNamespace(subject="x", path="sub-x.yaml", preprocess={})
    montage = _montage({"montage": "standard_1005"}, spec)
    assert "FCC3h" in montage.ch_names  # a 10-05 position


def test_fmri_nan_voxels_with_a_mask_computed_from_the_data(tmp_path):
    """Without a mask, the EPI mask is computed as if the NaN were 0; the NaN voxels
    inside it are then an error, or left out on request."""
    sub = _nan_bold(tmp_path, shape=(12, 12, 10))  # big enough for compute_epi_mask
    del sub["source"]["mask"]
    with pytest.raises(RecordingError, match=r"sub-f1: .*bold\.nii\.gz: 2 of \d+ voxels "
                                             r"inside the brain mask hold NaN"):
        run_preprocessing(write_study(tmp_path, [sub]), "f1", tmp_path / "results")
    sub["preprocess"] = {"drop_nonfinite": True}
    table = run_preprocessing(write_study(tmp_path, [sub]), "f1", tmp_path / "results")
    assert table.info["n_nonfinite_voxels"] == 2
    assert table.info["mask"] == "data"
    assert np.isfinite(table.view("stimulus").X).all()


def test_band_above_the_rate_of_a_stream_refused_in_the_job(tmp_path):
    """A stream's rate is only known once read: the job refuses the band, naming it."""
    write_stream(tmp_path / "raw" / "rec.csv", NAMES_10_20, sfreq=100.0,
                 markers={200: "stim", 600: "stim"})
    study = _eeg_study(tmp_path, {"files": ["raw/rec.csv"]},
                       {"bands": {"alpha": [8, 14], "high": [45, 60]}})
    with pytest.raises(RecordingError, match=r"sub-01: .*rec\.csv: key 'preprocess\.bands': "
                                             r"band high \[45, 60\] Hz is not below the "
                                             r"Nyquist frequency \(49\.9\d* Hz\)"):
        # (the rate estimated from jittered stamps is a hair under 100 Hz)
        run_preprocessing(study, "01", tmp_path / "results")
