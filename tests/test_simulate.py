"""The demo simulator: stimuli, BIDS output read back by the real readers, planted truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainhead.simulate import make_stimuli
from brainhead.simulate.signals import (
    ar1_noise,
    assign_regions,
    pink_noise,
    planted_responses,
    schedule,
)


def test_stimuli_deterministic_unique():
    a, b = make_stimuli(100, seed=3), make_stimuli(100, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert a["text"].is_unique and a["stim_id"].is_unique
    assert not make_stimuli(100, seed=4)["text"].equals(a["text"])
    assert set(a["condition"]) <= {"active", "passive", "intransitive"}
    assert a["text"].str.endswith(".").all()


def test_stimuli_bad_count():
    with pytest.raises(ValueError, match="n_stimuli"):
        make_stimuli(0, seed=0)


def test_assign_regions_posterior_first():
    y = np.array([50.0, -80, 0, 10, -40, 70])
    regions = assign_regions(y, ["post", "mid", "ant"])
    assert regions.tolist() == ["ant", "post", "mid", "mid", "post", "ant"]


def test_planted_responses_follow_their_layer():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((3, 200, 16))
    regions = np.array(["a"] * 5 + ["b"] * 5)
    resp = planted_responses(feats, regions, {"a": 0, "b": 2}, rng)
    assert resp.shape == (200, 10)
    np.testing.assert_allclose(resp.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(resp.std(0), 1, atol=1e-10)
    # each column lies in the span of its own layer's features
    for cols, layer in ((slice(0, 5), 0), (slice(5, 10), 2)):
        X = feats[layer] - feats[layer].mean(0)
        coef, res, *_ = np.linalg.lstsq(X, resp[:, cols], rcond=None)
        np.testing.assert_allclose(X @ coef, resp[:, cols], atol=1e-8)
    with pytest.raises(ValueError, match="outside the model"):
        planted_responses(feats, regions, {"a": 7}, rng)


def test_noise_generators():
    rng = np.random.default_rng(1)
    pink = pink_noise(4096, 2, rng)
    assert pink.shape == (2, 4096)
    np.testing.assert_allclose(pink.std(1), 1, rtol=1e-6)
    spec = np.abs(np.fft.rfft(pink[0])) ** 2
    assert spec[5:50].mean() > 5 * spec[500:1000].mean()  # 1/f: low frequencies dominate
    ar = ar1_noise(20000, 1, 0.5, rng)[:, 0]
    assert abs(np.corrcoef(ar[:-1], ar[1:])[0, 1] - 0.5) < 0.05
    runs = schedule(10, 3, rng)
    assert sorted(np.concatenate(runs).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="too few"):
        schedule(3, 2, rng)


def test_simulated_study_layout(small_demo):
    study, results = small_demo
    truth = json.loads((results / "truth.json").read_text())
    assert set(truth["subjects"]) == {"e01", "f01", "s01"}
    assert truth["subjects"]["f01"]["regions"] == {"posterior": 2, "middle": 4, "anterior": 6}
    stimuli = pd.read_csv(results / "stimuli.tsv", sep="\t")
    assert len(stimuli) == 48
    bids = results / "bids"
    assert (bids / "dataset_description.json").is_file()
    assert len(list((bids / "sub-e01" / "eeg").glob("*_eeg.edf"))) == 4
    assert len(list((bids / "sub-s01" / "ieeg").glob("*_ieeg.edf"))) == 4
    assert len(list((bids / "sub-f01" / "func").glob("*_bold.nii.gz"))) == 4
    events = pd.read_csv(next((bids / "sub-f01" / "func").glob("*run-1_events.tsv")), sep="\t")
    assert {"onset", "duration", "stim_id"} <= set(events.columns)
    electrodes = pd.read_csv(next((bids / "sub-s01" / "ieeg").glob("*electrodes.tsv")), sep="\t")
    assert len(electrodes) == 32 and "region" in electrodes.columns


def test_simulation_is_deterministic(small_demo, tmp_path):
    import nibabel as nib

    from brainhead.simulate import simulate_study

    study, results = small_demo
    simulate_study(study, tmp_path)
    name = "sub-f01/func/sub-f01_task-sentences_run-2_bold.nii.gz"
    a = np.asarray(nib.load(results / "bids" / name).dataobj)
    b = np.asarray(nib.load(tmp_path / "bids" / name).dataobj)
    np.testing.assert_array_equal(a, b)
    assert (results / "truth.json").read_text() == (tmp_path / "truth.json").read_text()


def test_different_subjects_have_different_sizes(demo_study):
    from brainhead.simulate.eeg import _implant
    from brainhead.simulate.fmri import _subject_mask

    n_vox = {s: int(_subject_mask(demo_study.subjects[s].simulate["voxel_size"]).get_fdata().sum())
             for s in ("f01", "f02", "f03")}
    assert len(set(n_vox.values())) == 3
    rng = np.random.default_rng(0)
    names1, xyz1 = _implant(4, 8, rng)
    names2, xyz2 = _implant(3, 10, rng)
    assert len(names1) == 32 and len(names2) == 30 and xyz1.shape == (32, 3)
