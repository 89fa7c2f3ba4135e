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
    shared_bases,
    zscore,
)

#: simulate.shared_rank of data_specs/demo/study.yaml
DEMO_SHARED_RANK = 16


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


def _independent_readouts(feats, regions, planted, rng):
    """The read-outs as they were before shared_rank: the reference of rank 0."""
    out = np.zeros((feats.shape[1], len(regions)))
    for region, layer in planted.items():
        cols = np.flatnonzero(regions == region)
        weights = rng.standard_normal((feats.shape[2], cols.size)) / np.sqrt(feats.shape[2])
        out[:, cols] = zscore(zscore(feats[layer]) @ weights)
    return out


@pytest.fixture
def layers():
    """Features (3 layers, 200 stimuli, 16 dims), two regions of 10 targets each."""
    feats = np.random.default_rng(0).standard_normal((3, 200, 16))
    return feats, np.array(["a"] * 10 + ["b"] * 10), {"a": 0, "b": 2}


def test_rank_zero_is_the_independent_readout(layers):
    feats, regions, planted = layers
    assert shared_bases(feats, planted, 0, seed=5) is None
    for bases in (None, shared_bases(feats, planted, 0, seed=5)):
        got = planted_responses(feats, regions, planted, np.random.default_rng(3), bases)
        ref = _independent_readouts(feats, regions, planted, np.random.default_rng(3))
        np.testing.assert_array_equal(got, ref)


def test_shared_bases_are_orthonormal_and_study_level(layers):
    feats, _, planted = layers
    bases = shared_bases(feats, planted, 4, seed=5, modality="eeg")
    assert set(bases) == {"a", "b"}
    for basis in bases.values():
        assert basis.shape == (16, 4)
        np.testing.assert_allclose(basis.T @ basis, np.eye(4), atol=1e-12)
    again = shared_bases(feats, planted, 4, seed=5, modality="eeg")
    np.testing.assert_array_equal(bases["a"], again["a"])
    # a region's basis depends on its name, not on the other regions or their layers
    alone = shared_bases(feats, {"b": 1}, 4, seed=5, modality="eeg")
    np.testing.assert_array_equal(bases["b"], alone["b"])
    for other in (shared_bases(feats, planted, 4, seed=6, modality="eeg"),
                  shared_bases(feats, planted, 4, seed=5, modality="fmri"),
                  shared_bases(feats, planted, 4, seed=5)):
        assert not np.allclose(bases["a"], other["a"])
    assert not np.allclose(bases["a"], bases["b"])


def _rank(a: np.ndarray) -> int:
    return int(np.linalg.matrix_rank(a, tol=1e-8 * np.linalg.norm(a, 2)))


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_subjects_share_each_regions_subspace(layers, rank):
    feats, regions, planted = layers
    bases = shared_bases(feats, planted, rank, seed=5, modality="fmri")
    sub1 = planted_responses(feats, regions, planted, np.random.default_rng(1), bases)
    regions2 = np.array(["b"] * 6 + ["a"] * 7)  # another subject, another size
    sub2 = planted_responses(feats, regions2, planted, np.random.default_rng(2), bases)
    np.testing.assert_allclose(sub1.std(0), 1, atol=1e-10)
    for region, layer in planted.items():
        a, b = sub1[:, regions == region], sub2[:, regions2 == region]
        assert not np.allclose(a[:, :b.shape[1]], b)  # own mixing weights per subject
        stacked = np.hstack([a, b])
        if rank == 0:
            assert _rank(stacked) == 16  # independent read-outs fill the whole layer
            continue
        assert _rank(stacked) == rank
        # ... and that subspace is the layer's standardised features times the basis
        span = zscore(feats[layer]) @ bases[region]
        coef = np.linalg.lstsq(span, stacked, rcond=None)[0]
        np.testing.assert_allclose(span @ coef, stacked, atol=1e-8)


def test_shared_bases_bad_input(layers):
    feats, regions, planted = layers
    with pytest.raises(ValueError, match="shared rank 17 must be between 0 and the "
                                         "feature dimension 16"):
        shared_bases(feats, planted, 17, seed=0)
    with pytest.raises(ValueError, match="shared rank -1"):
        shared_bases(feats, planted, -1, seed=0)
    with pytest.raises(ValueError, match="planted layer 3 of region 'b' is outside"):
        shared_bases(feats, {"b": 3}, 2, seed=0)
    with pytest.raises(ValueError, match="no shared basis for region 'b'"):
        planted_responses(feats, regions, planted, np.random.default_rng(0),
                          {"a": np.eye(16)[:, :2]})
    with pytest.raises(ValueError, match=r"must have shape \(dim, rank\).*got \(8, 2\)"):
        planted_responses(feats, regions, planted, np.random.default_rng(0),
                          {"a": np.eye(8)[:, :2], "b": np.eye(8)[:, :2]})


@pytest.mark.parametrize("value, message", [
    (-1, r"key 'simulate\.shared_rank': -1 is less than the minimum of 0"),
    (2.5, r"key 'simulate\.shared_rank': 2\.5 is not of type 'integer'"),
    ("8", r"key 'simulate\.shared_rank': '8' is not of type 'integer'"),
])
def test_schema_rejects_bad_shared_rank(value, message):
    from brainhead.specs import SpecError, validate_study_config

    with pytest.raises(SpecError, match=r"study\.yaml: " + message):
        validate_study_config({"name": "x", "seed": 0, "simulate": {"shared_rank": value}})


def test_schema_shared_rank_default_and_demo(demo_study):
    from brainhead.specs import validate_study_config

    config = validate_study_config({"name": "x", "seed": 0, "simulate": {}})
    assert config["simulate"]["shared_rank"] == 0
    config = validate_study_config({"name": "x", "seed": 0, "simulate": {"shared_rank": 3}})
    assert config["simulate"]["shared_rank"] == 3
    assert demo_study.config["simulate"]["shared_rank"] == DEMO_SHARED_RANK


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
    assert truth["shared_rank"] == DEMO_SHARED_RANK
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


def test_shared_rank_above_feature_dimension(small_demo, tmp_path):
    import dataclasses

    from brainhead.simulate import simulate_study

    study, _ = small_demo
    sim = {**study.config["simulate"], "shared_rank": 385}  # MiniLM has 384 features
    study = dataclasses.replace(study, config={**study.config, "simulate": sim})
    with pytest.raises(ValueError, match=r"study\.yaml: key 'simulate\.shared_rank': "
                                         r"385 is more than the 384 features"):
        simulate_study(study, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
