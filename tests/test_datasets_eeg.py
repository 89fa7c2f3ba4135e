"""EEG dataset adapters on tiny files written here in each dataset's published layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from brainhead.io import RecordingError
from brainhead.io.datasets import ADAPTERS, load_dataset
from brainhead.preprocess import run_preprocessing
from brainhead.specs import SpecError, load_study

from _bad_inputs_eeg import _edf
from conftest import ROOT, SHARED_DATA, needs_shared_data


def _example_study(tmp_path: Path, dataset: str, root: Path, **source) -> object:
    """The shipped data_specs/<dataset> study, its root pointed at ``root``."""
    study_dir = tmp_path / "spec"
    shutil.copytree(ROOT / "data_specs" / dataset, study_dir)
    sub = next((study_dir / "subjects").glob("sub-*.yaml"))
    cfg = yaml.safe_load(sub.read_text())
    cfg["source"]["root"] = str(root)
    cfg["source"].update(source)
    sub.write_text(yaml.safe_dump(cfg))
    return load_study(study_dir, design=False)  # preprocessing only: eegmmidb has 2 cues


def _only_subject(study):
    return next(iter(study.subjects.values()))


def test_registry_lists_the_eeg_adapters():
    from brainhead.io.datasets import _load_adapters

    _load_adapters()
    for name in ("eegmmidb", "deap", "seed", "dreamer"):
        adapter = ADAPTERS[name]
        assert adapter.modalities == ("eeg",)
        assert adapter.options["subject"].required
        assert all(opt.description for opt in adapter.options.values())


# --------------------------------------------------------------------------- eegmmidb
EEGMMIDB_NAMES = ["Fc5.", "Cz..", "Pz..", "Oz..", "T10.", "Iz.."]


def _eegmmidb(root: Path, runs=(4, 8)) -> Path:
    for run in runs:
        _edf(root / "S007" / f"S007R{run:02d}.edf", EEGMMIDB_NAMES, seconds=30.0,
             sfreq=160.0, events=((0.0, "T0"), (4.0, "T1"), (8.0, "T0"), (12.0, "T2"),
                                  (16.0, "T0"), (20.0, "T1")))
    return root


def test_eegmmidb_adapter(tmp_path):
    root = _eegmmidb(tmp_path / "mmi")
    study = _example_study(tmp_path, "eegmmidb", root, subject=7, runs=[4, 8])
    runs = load_dataset(_only_subject(study))
    assert [r.label for r in runs] == ["4", "8"]
    raw = runs[0].raw
    assert raw.ch_names == ["FC5", "Cz", "Pz", "Oz", "T10", "Iz"]
    assert list(raw.annotations.description) == ["left/left", "right/right", "left/left"]
    np.testing.assert_allclose(raw.annotations.onset, [4.0, 12.0, 20.0])
    study = _example_study(tmp_path / "b", "eegmmidb", root, subject=7, runs=[4],
                           keep_rest=True)
    raw = load_dataset(_only_subject(study))[0].raw
    assert list(raw.annotations.description).count("rest/rest") == 3


def test_eegmmidb_through_preprocessing(tmp_path):
    root = _eegmmidb(tmp_path / "mmi")
    study = _example_study(tmp_path, "eegmmidb", root, subject=7, runs=[4, 8])
    table = run_preprocessing(study, _only_subject(study).subject, tmp_path / "res")
    v = table.view("bands")
    assert v.rows["y"].tolist() == ["left", "right", "left"] * 2
    assert v.rows["group"].tolist() == ["4"] * 3 + ["8"] * 3
    assert v.rows["stim_id"].tolist() == v.rows["y"].tolist()


def test_eegmmidb_unknown_annotation(tmp_path):
    root = tmp_path / "mmi"
    _edf(root / "S007" / "S007R04.edf", EEGMMIDB_NAMES, events=((1.0, "T9"),))
    study = _example_study(tmp_path, "eegmmidb", root, subject=7, runs=[4])
    with pytest.raises(RecordingError, match=r"sub-S001: .*S007R04\.edf: unexpected "
                                             r"annotations \['T9'\]"):
        load_dataset(_only_subject(study))


def test_eegmmidb_bad_option_named(tmp_path):
    with pytest.raises(SpecError, match=r"sub-S001.yaml: subject 'S001': key "
                                        r"'source.subject': expected int, got 'one'"):
        _example_study(tmp_path, "eegmmidb", tmp_path, subject="one")


@needs_shared_data
def test_eegmmidb_real_channel_names_standardised():
    import mne

    from brainhead.io.datasets.eeg import load_eegmmidb

    class Spec:
        subject, path = "S001", Path("sub-S001.yaml")

    runs = load_eegmmidb(Spec, SHARED_DATA / "eegmmidb-S001",
                         {"subject": 1, "runs": [4], "keep_rest": False})
    montage = mne.channels.make_standard_montage("colin27_1005")
    assert len(runs[0].raw.ch_names) == 64
    assert set(runs[0].raw.ch_names) <= set(montage.ch_names)


# --------------------------------------------------------------------------- deap
DEAP_RATINGS = np.column_stack([np.tile([2.0, 7.5], 20), np.linspace(1, 9, 40),
                                np.full(40, 5.0), np.full(40, 6.0)])


@pytest.fixture(scope="module")
def deap_root(tmp_path_factory):
    """s01.mat: 40 x 40 x 8064; high-valence trials carry 10 Hz alpha on channel Oz."""
    import scipy.io

    from brainhead.io.datasets.eeg import DEAP_CHANNELS

    root = tmp_path_factory.mktemp("deap")
    rng = np.random.default_rng(0)
    data = rng.normal(0, 5.0, (40, 40, 8064)).astype(np.float32)
    t = np.arange(8064) / 128.0
    oz = DEAP_CHANNELS.index("Oz")
    data[DEAP_RATINGS[:, 0] > 5, oz, 384:] += (20 * np.sin(2 * np.pi * 10 * t[384:]))
    folder = root / "data_preprocessed_matlab"
    folder.mkdir()
    scipy.io.savemat(folder / "s01.mat", {"data": data, "labels": DEAP_RATINGS})
    return root


def test_deap_adapter(deap_root, tmp_path):
    study = _example_study(tmp_path, "deap", deap_root)
    epochs = load_dataset(_only_subject(study))
    assert len(epochs) == 40 and epochs.tmin == -3.0
    assert len(epochs.times) == 8064 and epochs.info["sfreq"] == 128.0
    assert epochs.ch_names[:3] == ["Fp1", "AF3", "F3"] and len(epochs.ch_names) == 32
    meta = epochs.metadata
    assert meta["condition"].tolist() == ["low", "high"] * 20
    assert meta["stim_id"].iloc[5] == "video06" and meta["group"].nunique() == 40
    np.testing.assert_array_equal(meta["arousal"], DEAP_RATINGS[:, 1])
    # microvolts in the file, volts in the epochs
    assert 3e-6 < epochs.get_data(picks="Fp1").std() < 7e-6


def test_deap_label_threshold_peripheral(deap_root, tmp_path):
    study = _example_study(tmp_path, "deap", deap_root, label="arousal", threshold=7,
                           peripheral=True, baseline="drop")
    epochs = load_dataset(_only_subject(study))
    assert (epochs.metadata["condition"] == "high").sum() == (DEAP_RATINGS[:, 1] > 7).sum()
    assert len(epochs.ch_names) == 40 and epochs.get_channel_types()[32] == "eog"
    assert epochs.tmin == 0.0 and len(epochs.times) == 60 * 128


def test_deap_baseline_remove(tmp_path):
    import scipy.io

    root = tmp_path / "deap"
    root.mkdir()
    one_second = np.sin(np.linspace(0, 6, 128))
    data = np.tile(one_second, (40, 40, 63)) * 10.0  # the trial repeats the baseline
    data[:, :, 384:] += 1.0
    scipy.io.savemat(root / "s01.mat", {"data": data, "labels": DEAP_RATINGS})
    study = _example_study(tmp_path, "deap", root, baseline="remove")
    epochs = load_dataset(_only_subject(study))
    assert epochs.tmin == 0.0 and len(epochs.times) == 7680
    np.testing.assert_allclose(epochs.get_data(), 1e-6, atol=1e-12)


def test_deap_study_end_to_end(deap_root, tmp_path):
    study = _example_study(tmp_path, "deap", deap_root)
    table = run_preprocessing(study, "01", tmp_path / "res")
    v = table.view("bands")
    assert v.X.shape == (40, 32, 4)
    assert v.rows["y"].tolist() == ["low", "high"] * 20
    oz = table.targets.name.tolist().index("Oz")
    alpha = v.X[:, oz, 1]
    high = v.rows["y"] == "high"
    # DEAP-style baseline correction: low-valence trials are baseline-like (~0)
    assert alpha[high].min() > 1.5 and np.abs(alpha[~high]).max() < 0.5
    assert table.info["dataset"] == "deap" and table.info["n_epochs_kept"] == 40


def test_deap_refuses_python_release(tmp_path):
    root = tmp_path / "deap"
    (root / "data_preprocessed_matlab").mkdir(parents=True)
    (root / "data_preprocessed_matlab" / "s01.dat").write_bytes(b"\x80\x04pickle")
    study = _example_study(tmp_path, "deap", root)
    with pytest.raises(RecordingError, match=r"s01\.mat: only the pickled python release"):
        load_dataset(_only_subject(study))


# --------------------------------------------------------------------------- seed
SEED_LABELS = np.array([1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1])


def _seed(root: Path) -> Path:
    import scipy.io

    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for date, offset in (("20131027", 0.0), ("20131030", 100.0)):
        trials = {f"djc_eeg{k}": rng.normal(offset, 1.0, (62, 800 + 100 * k))
                  for k in range(1, 16)}
        scipy.io.savemat(root / f"1_{date}.mat", trials)
    scipy.io.savemat(root / "label.mat", {"label": SEED_LABELS[None, :]})
    return root


def test_seed_adapter_segments(tmp_path):
    root = _seed(tmp_path / "seed")
    study = _example_study(tmp_path, "seed", root, session=2)
    epochs = load_dataset(_only_subject(study))
    per_trial = [(800 + 100 * k) // 800 for k in range(1, 16)]
    assert len(epochs) == sum(per_trial) and len(epochs.times) == 800
    meta = epochs.metadata
    assert meta.groupby("group", sort=True).size().tolist() == per_trial
    conds = {-1: "negative", 0: "neutral", 1: "positive"}
    assert meta.drop_duplicates("group")["condition"].tolist() == [conds[v] for v in SEED_LABELS]
    assert meta["stim_id"].iloc[-1] == "clip15"
    assert epochs.ch_names[:3] == ["Fp1", "Fpz", "Fp2"] and len(epochs.ch_names) == 62
    assert abs(epochs.get_data().mean() - 100e-6) < 1e-6  # session 2 is the later date
    coords = epochs.get_montage().get_positions()["ch_pos"]
    assert np.isnan(coords["CB1"]).all() and np.isfinite(coords["Fpz"]).all()


def test_seed_whole_trials_cropped(tmp_path):
    root = _seed(tmp_path / "seed")
    study = _example_study(tmp_path, "seed", root, segment=None)
    epochs = load_dataset(_only_subject(study))
    assert len(epochs) == 15 and len(epochs.times) == 900


def test_seed_study_end_to_end(tmp_path):
    root = _seed(tmp_path / "seed")
    study = _example_study(tmp_path, "seed", root)
    table = run_preprocessing(study, "01", tmp_path / "res")
    v = table.view("bands")
    assert v.X.shape[1:] == (62, 5)
    assert len(set(v.rows["group"])) == 15
    assert np.isnan(table.targets.coords[table.targets.name == "CB1"]).all()


def test_seed_wrong_trial_count(tmp_path):
    import scipy.io

    root = tmp_path / "seed"
    root.mkdir()
    scipy.io.savemat(root / "1_20130101.mat",
                     {f"x_eeg{k}": np.zeros((62, 400)) for k in range(1, 15)})
    scipy.io.savemat(root / "label.mat", {"label": SEED_LABELS})
    study = _example_study(tmp_path, "seed", root)
    with pytest.raises(RecordingError, match=r"1_20130101\.mat: expected 15 trials"):
        load_dataset(_only_subject(study))


def test_seed_missing_session(tmp_path):
    root = _seed(tmp_path / "seed")
    study = _example_study(tmp_path, "seed", root, session=3)
    with pytest.raises(RecordingError, match=r"session 3 asked, but 2 file"):
        load_dataset(_only_subject(study))


# --------------------------------------------------------------------------- dreamer
def _dreamer(root: Path, n_subjects: int = 2) -> Path:
    import scipy.io

    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    data = np.empty((1, n_subjects), dtype=object)
    for s in range(n_subjects):
        stimuli = np.empty((18, 1), dtype=object)
        baseline = np.empty((18, 1), dtype=object)
        for k in range(18):
            stimuli[k, 0] = 4200 + rng.normal(0, 5, (128 * (8 + k), 14)) + s
            baseline[k, 0] = 4200 + rng.normal(0, 5, (128 * 61, 14))
        data[0, s] = {"Age": 25, "EEG": {"stimuli": stimuli, "baseline": baseline},
                      "ScoreValence": np.arange(18)[:, None] % 5 + 1.0,
                      "ScoreArousal": np.full((18, 1), 2.0),
                      "ScoreDominance": np.full((18, 1), 4.0)}
    scipy.io.savemat(root / "DREAMER.mat", {"DREAMER": {"Data": data,
                                                        "EEG_SamplingRate": 128}})
    return root


def test_dreamer_adapter(tmp_path):
    root = _dreamer(tmp_path / "dreamer")
    study = _example_study(tmp_path, "dreamer", root, subject=2)
    epochs = load_dataset(_only_subject(study))
    per_trial = [(8 + k) // 4 for k in range(18)]
    assert len(epochs) == sum(per_trial) and epochs.info["sfreq"] == 128.0
    meta = epochs.metadata.drop_duplicates("group")
    valence = np.arange(18) % 5 + 1.0
    assert meta["condition"].tolist() == np.where(valence > 3, "high", "low").tolist()
    assert meta["valence"].tolist() == valence.tolist()
    assert epochs.ch_names == "AF3 F7 F3 FC5 T7 P7 O1 O2 P8 T8 FC6 F4 F8 AF4".split()
    assert abs(epochs.get_data().mean() - 4201e-6) < 1e-6  # participant 2 (offset + 1)


def test_dreamer_subject_out_of_range(tmp_path):
    root = _dreamer(tmp_path / "dreamer")
    study = _example_study(tmp_path, "dreamer", root, subject=5)
    with pytest.raises(RecordingError, match=r"DREAMER\.mat: key 'source.subject': "
                                             r"participant 5 asked, the file holds 2"):
        load_dataset(_only_subject(study))


def test_dreamer_study_end_to_end(tmp_path):
    root = _dreamer(tmp_path / "dreamer", n_subjects=1)
    study = _example_study(tmp_path, "dreamer", root, subject=1)
    table = run_preprocessing(study, "01", tmp_path / "res")
    assert table.view("bands").X.shape[1:] == (14, 4)
    assert np.isfinite(table.targets.coords).all()
