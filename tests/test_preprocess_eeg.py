"""EEG preprocessing: each configurable step, bad inputs, and the eegmmidb study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from brainhead.io import RecordingError
from brainhead.preprocess import preprocess_subject, run_preprocessing
from brainhead.specs import SpecError, load_study

from _bad_inputs_eeg import CASES, NAMES_10_20, _edf
from conftest import ROOT, SHARED_DATA, needs_shared_data

EEGMMIDB = SHARED_DATA / "eegmmidb-S001"


def _study(study_dir: Path, subject: dict, preprocess: dict | None = None):
    """Write a plain study around one subject mapping and load it."""
    (study_dir / "subjects").mkdir(parents=True, exist_ok=True)
    cfg = {"name": "t", "seed": 0, "stimuli": "stimuli.tsv"}
    if preprocess:
        cfg["preprocess"] = {"eeg": preprocess}
    (study_dir / "study.yaml").write_text(yaml.safe_dump(cfg))
    (study_dir / "stimuli.tsv").write_text("stim_id\ttext\nstim\tword\n"
        + "".join(f"x{k}\tfiller {k}\n" for k in range(8)))  # align.min_stimuli: 8
    (study_dir / "subjects" / f"sub-{subject['subject']}.yaml").write_text(
        yaml.safe_dump(subject))
    return load_study(study_dir)


# --------------------------------------------------------------------------- bad input
def test_at_least_nine_eeg_cases():
    ids = [case for case, _ in CASES]
    assert len(ids) >= 9 and len(set(ids)) == len(ids)
    assert all(case.isalnum() for case in ids)


@pytest.mark.parametrize("case, make", CASES, ids=[c for c, _ in CASES])
def test_bad_input(case, make, tmp_path):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    subject, expected = make(study_dir)
    assert subject["subject"] == case
    written = {p.name for p in study_dir.rglob("*") if p.is_file()}
    out = tmp_path / "results" / f"sub-{case}" / "responses.h5"
    with pytest.raises((RecordingError, SpecError)) as err:
        study = _study(study_dir, subject)
        preprocess_subject(study, case, tmp_path / "results", out)
    message = str(err.value)
    assert expected in message
    assert f"sub-{case}" in message or f"subject '{case}'" in message
    named = [name for name in written | {"absent.edf", "S001R08.edf"} if name in message]
    assert named, f"no file named in: {message}"
    assert not out.exists() and not out.parent.exists()


# --------------------------------------------------------------------------- steps
def _raw_study(tmp_path, preprocess: dict, *, names=NAMES_10_20, data_uv=None,
               events=None, bad_channels=()):
    kwargs = {} if events is None else {"events": events}
    _edf(tmp_path / "rec.edf", list(names), data_uv=data_uv, **kwargs)
    subject = {"subject": "t01", "modality": "eeg", "source": {"files": ["rec.edf"]},
               "bad_channels": list(bad_channels)}
    return _study(tmp_path, subject, {"baseline": None, **preprocess})


def _alpha_events(n_ch=12, seconds=40.0, seed=1):
    """Noise plus a 10 Hz burst on O1/O2 after every 'on' event; 'off' events have none."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 100)
    data = rng.normal(0, 5.0, (n_ch, n))
    t = np.arange(n) / 100
    onsets = np.arange(2.0, seconds - 2, 2.0)
    events = []
    for k, onset in enumerate(onsets):
        cond = "on" if k % 2 == 0 else "off"
        events.append((float(onset), cond))
        if cond == "on":
            sel = (t >= onset) & (t < onset + 1.0)
            for ch in (NAMES_10_20.index("O1"), NAMES_10_20.index("O2")):
                data[ch, sel] += 30 * np.sin(2 * np.pi * 10 * t[sel])
    return data, tuple(events)


def test_event_id_mapping_and_bands(tmp_path):
    data, events = _alpha_events()
    study = _raw_study(tmp_path, {"event_id": {"on": "burst", "off": "quiet"},
                                  "tmin": 0.0, "tmax": 1.0, "window": [0.0, 1.0],
                                  "l_freq": 1.0, "h_freq": 40.0},
                       data_uv=data, events=events)
    table = run_preprocessing(study, "t01", tmp_path / "results")
    v = table.view("bands")
    assert v.X.shape == (len(events), 12, 4)
    assert sorted(set(v.rows["y"])) == ["burst", "quiet"]
    alpha = v.X[:, [NAMES_10_20.index("O1"), NAMES_10_20.index("O2")], 1].mean(1)
    burst = v.rows["y"] == "burst"
    assert alpha[burst].min() > alpha[~burst].max()
    assert table.info["n_epochs_kept"] == len(events)
    assert table.info["epochs_per_run"] == {"1": {"kept": len(events), "rejected": 0}}


def test_detect_flat_and_noisy_then_interpolate(tmp_path):
    data, events = _alpha_events()
    data[NAMES_10_20.index("C3")] = 0.0
    data[NAMES_10_20.index("P4")] *= 40
    study = _raw_study(tmp_path, {"detect_bads": True, "interpolate_bads": True,
                                  "tmin": 0.0, "tmax": 1.0, "window": [0.0, 1.0]},
                       data_uv=data, events=events)
    table = run_preprocessing(study, "t01", tmp_path / "results")
    assert table.info["bads"] == {"1": {"flat": ["C3"], "noisy": ["P4"]}}
    assert table.targets.name.tolist() == NAMES_10_20  # interpolated, not dropped
    x = table.view("stimulus").X
    assert np.isfinite(x).all()
    # the interpolated flat channel now carries signal
    assert table.view("bands").X[:, NAMES_10_20.index("C3")].std() > 0


def test_detect_without_interpolation_drops(tmp_path):
    data, events = _alpha_events()
    data[NAMES_10_20.index("C3")] = 0.0
    study = _raw_study(tmp_path, {"detect_bads": True, "tmin": 0.0, "tmax": 1.0,
                                  "window": [0.0, 1.0]}, data_uv=data, events=events)
    table = run_preprocessing(study, "t01", tmp_path / "results")
    assert "C3" not in table.targets.name.tolist() and len(table.targets) == 11


def test_listed_bad_channel_interpolated(tmp_path):
    data, events = _alpha_events()
    study = _raw_study(tmp_path, {"interpolate_bads": True, "tmin": 0.0, "tmax": 1.0,
                                  "window": [0.0, 1.0]}, data_uv=data, events=events,
                       bad_channels=["Cz"])
    table = run_preprocessing(study, "t01", tmp_path / "results")
    assert "Cz" in table.targets.name.tolist() and len(table.targets) == 12


@pytest.mark.parametrize("reference", ["REST", ["O1", "O2"], "none"])
def test_references(tmp_path, reference):
    data, events = _alpha_events()
    study = _raw_study(tmp_path, {"reference": reference, "tmin": 0.0, "tmax": 1.0,
                                  "window": [0.0, 1.0], "l_freq": 1.0},
                       data_uv=data, events=events)
    table = run_preprocessing(study, "t01", tmp_path / "results")
    names = table.targets.name.tolist()
    if isinstance(reference, list):
        # the reference channels are used up; the rest are referenced to their mean
        assert names == [n for n in NAMES_10_20 if n not in reference]
    else:
        assert names == NAMES_10_20
    assert np.isfinite(table.view("bands").X).all()


def test_resample_fixed_windows_and_reject(tmp_path):
    data, events = _alpha_events(seconds=30.0)
    data[0, 1000:1010] += 3000  # one huge artefact at 10 s
    study = _raw_study(tmp_path, {"epoching": "fixed", "fixed_length": 2.0,
                                  "resample": 50.0, "reject_uv": 500.0, "tmin": 0.0,
                                  "window": [0.0, 1.0], "l_freq": 1.0, "h_freq": 20.0,
                                  "bands": {"theta": [4, 8], "alpha": [8, 14]}},
                       data_uv=data, events=events)
    table = run_preprocessing(study, "t01", tmp_path / "results")
    assert table.info["sfreq"] == 50.0
    assert table.info["n_epochs_kept"] == 14 and table.info["n_epochs_rejected"] == 1
    assert set(table.view("stimulus").rows["y"]) == {"fixed"}


def test_band_above_nyquist_named(tmp_path):
    data, events = _alpha_events()
    # the rate is known from preprocess.resample: refused when the study is loaded
    with pytest.raises(SpecError, match=r"study\.yaml: key 'preprocess\.eeg\.bands\.gamma': "
                                        r"\[31, 49\] Hz reaches above the Nyquist frequency 25"):
        _raw_study(tmp_path, {"resample": 50.0, "h_freq": 20.0, "tmin": 0.0, "tmax": 1.0,
                              "window": [0.0, 1.0]}, data_uv=data, events=events)
    # the rate is in the EDF header (100 Hz): refused when the study is loaded, too
    with pytest.raises(SpecError, match=r"sub-t01\.yaml: subject 't01': key "
                                        r"'preprocess\.bands\.high': \[45, 60\] Hz reaches "
                                        r"above the Nyquist frequency 50 Hz of .*rec\.edf"):
        _raw_study(tmp_path, {"tmin": 0.0, "tmax": 1.0, "window": [0.0, 1.0],
                              "bands": {"alpha": [8, 14], "high": [45, 60]}},
                   data_uv=data, events=events)


# Besides the blink, the synthetic sources are Gaussian noise, which FastICA cannot
# unmix (so it reports non-convergence); the blink component is found all the same.
@pytest.mark.filterwarnings("ignore:FastICA did not converge")
def test_ica_removes_eog_component(tmp_path):
    rng = np.random.default_rng(3)
    n = 6000
    blinks = np.zeros(n)
    for start in range(300, n - 100, 700):
        blinks[start:start + 40] = np.hanning(40) * 200
    names = NAMES_10_20 + ["VEOG"]
    data = rng.normal(0, 5.0, (len(names), n))
    weights = np.linspace(1.0, 0.1, len(NAMES_10_20))  # frontal channels see most of it
    data[:-1] += weights[:, None] * blinks
    data[-1] += blinks
    events = tuple((float(s), "stim") for s in np.arange(2.0, 56.0, 4.0))
    # with 8 components a z-score can never reach 3 ((n - 1) / sqrt(n) < 3): use correlation
    study = _raw_study(tmp_path, {"ica": True, "ica_n_components": 8, "eog_channels": ["VEOG"],
                                  "ica_eog_measure": "correlation", "ica_eog_threshold": 0.8,
                                  "l_freq": 1.0, "h_freq": 40.0, "reference": "none",
                                  "tmin": 0.0, "tmax": 1.0, "window": [0.0, 1.0]},
                       names=names, data_uv=data, events=events)
    table = run_preprocessing(study, "t01", tmp_path / "results")
    assert len(table.info["ica_excluded"]["1"]) == 1
    assert "VEOG" not in table.targets.name.tolist()
    # the blinks are gone from the frontal channel's epochs: compare with ICA off
    plain = _raw_study(tmp_path / "plain", {"l_freq": 1.0, "h_freq": 40.0, "reference": "none",
                                            "eog_channels": ["VEOG"],
                                            "tmin": 0.0, "tmax": 1.0, "window": [0.0, 1.0]},
                       names=names, data_uv=data, events=events)
    before = run_preprocessing(plain, "t01", tmp_path / "r2").view("bands").X[:, 0, 0]
    after = table.view("bands").X[:, 0, 0]
    assert before.max() > after.max() + 1.0  # the epochs with a blink lose its power


def test_ica_without_eog_is_an_error(tmp_path):
    data, events = _alpha_events()
    study = _raw_study(tmp_path, {"ica": True, "tmin": 0.0, "tmax": 1.0}, data_uv=data,
                       events=events)
    with pytest.raises(RecordingError, match=r"sub-t01: .*rec\.edf: key 'preprocess\.ica'"):
        run_preprocessing(study, "t01", tmp_path / "results")


def test_montage_file(tmp_path):
    import mne

    data, events = _alpha_events()
    montage = mne.channels.make_standard_montage("colin27_1020")
    pos = montage.get_positions()["ch_pos"]
    lines = [f"{n}\t{pos[n][0]:.5f}\t{pos[n][1]:.5f}\t{pos[n][2]:.5f}" for n in NAMES_10_20]
    (tmp_path / "caps.xyz").write_text("\n".join(
        f"{i + 1}\t{line.split(chr(9), 1)[1]}\t{n}" for i, (n, line)
        in enumerate(zip(NAMES_10_20, lines))) + "\n")
    study = _raw_study(tmp_path, {"montage": "caps.xyz", "tmin": 0.0, "tmax": 1.0,
                                  "window": [0.0, 1.0]}, data_uv=data, events=events)
    table = run_preprocessing(study, "t01", tmp_path / "results")
    assert np.isfinite(table.targets.coords).all()
    with pytest.raises(SpecError, match=r"sub-t01\.yaml: subject 't01': key "
                                        r"'preprocess\.montage': file not found"):
        _raw_study(tmp_path, {"montage": "nope.elc", "tmin": 0.0, "tmax": 1.0},
                   data_uv=data, events=events)
    with pytest.raises(SpecError, match="key 'preprocess.eeg.montage': 'colin27_10_20' is not "
                                        "an MNE built-in montage"):
        _raw_study(tmp_path, {"montage": "colin27_10_20", "tmin": 0.0, "tmax": 1.0},
                   data_uv=data, events=events)


def test_window_outside_epochs_named(tmp_path):
    data, events = _alpha_events()
    with pytest.raises(SpecError, match=r"study\.yaml: key 'preprocess\.eeg\.window': the "
                                        r"window \[0\.3, 0\.9\] s is outside the epochs"):
        _raw_study(tmp_path, {"tmin": 0.0, "tmax": 0.5, "window": [0.3, 0.9]},
                   data_uv=data, events=events)


# --------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def eegmmidb_study(tmp_path_factory):
    """The shipped eegmmidb study, its root pointed at the shared recordings."""
    import shutil

    if not EEGMMIDB.is_dir():
        pytest.skip("../shared/data/eegmmidb-S001 is absent")
    study_dir = tmp_path_factory.mktemp("eegmmidb") / "eegmmidb"
    shutil.copytree(ROOT / "data_specs" / "eegmmidb", study_dir)
    sub = study_dir / "subjects" / "sub-S001.yaml"
    cfg = yaml.safe_load(sub.read_text())
    cfg["source"]["root"] = str(EEGMMIDB)
    sub.write_text(yaml.safe_dump(cfg))
    return load_study(study_dir, design=False)  # preprocessing only: 2 conditions


@needs_shared_data
def test_shipped_eegmmidb_spec_points_at_shared_data():
    study = load_study(ROOT / "data_specs" / "eegmmidb", design=False)
    assert Path(study.subjects["S001"].source["root"]) == EEGMMIDB.resolve()


@needs_shared_data
def test_eegmmidb_table_matches_annotations(eegmmidb_study, tmp_path):
    import mne

    expected_labels = []
    for run in (4, 8, 12):
        ann = mne.read_annotations(EEGMMIDB / "S001" / f"S001R{run:02d}.edf")
        expected_labels += [{"T1": "left", "T2": "right"}[d] for d in ann.description
                            if d in ("T1", "T2")]
    out = tmp_path / "sub-S001" / "responses.h5"
    preprocess_subject(eegmmidb_study, "S001", tmp_path, out)
    from brainhead.io import read_responses

    table = read_responses(out)
    v = table.view("bands")
    assert v.rows["y"].tolist() == expected_labels
    assert len(expected_labels) == 45 and expected_labels.count("left") == 23
    assert v.X.shape == (45, 64, 4)
    assert sorted(set(v.rows["group"]), key=int) == ["4", "8", "12"]
    assert table.info["n_epochs_kept"] == 45 and table.info["n_epochs_rejected"] == 0
    assert "FC5" in table.targets.name.tolist()
    assert np.isfinite(table.targets.coords).all()


def _csp_data(study):
    """Our epochs of S001 band-passed 8-30 Hz and cropped to 0.5-2.5 s, labels, runs, rank."""
    import mne

    from brainhead.io.datasets import load_dataset
    from brainhead.preprocess.eeg import eeg_epochs

    spec = study.subjects["S001"]
    epochs, _ = eeg_epochs(spec, load_dataset(spec))
    epochs = epochs.filter(8.0, 30.0, verbose="error").crop(0.5, 2.5)
    # the average reference removes one dimension: CSP is told the data's rank
    rank = mne.compute_rank(epochs, rank=None, verbose="error")
    y = (epochs.metadata["condition"] == "left").to_numpy().astype(int)
    return epochs.get_data(copy=False), y, epochs.metadata["group"].to_numpy(), rank


def _csp_lda(rank):
    from mne.decoding import CSP
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline

    return make_pipeline(CSP(n_components=4, reg=None, log=True, rank=rank),
                         LinearDiscriminantAnalysis())


@needs_shared_data
def test_csp_lda_decoder_on_eegmmidb(eegmmidb_study):
    """CSP + LDA on our epochs: 5-fold stratified and leave-one-run-out accuracies."""
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold, cross_val_score

    x, y, runs, rank = _csp_data(eegmmidb_study)
    assert x.shape[0] == 45 and rank == {"eeg": 63}
    strat = cross_val_score(_csp_lda(rank), x, y,
                            cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()
    by_run = cross_val_score(_csp_lda(rank), x, y, groups=runs, cv=LeaveOneGroupOut()).mean()
    print(f"\nCSP+LDA eegmmidb S001 runs 4/8/12 (45 trials, chance 0.51): "
          f"5-fold {strat:.3f}, leave-one-run-out {by_run:.3f}")
    assert 0.0 <= strat <= 1.0 and 0.0 <= by_run <= 1.0


@pytest.mark.slow
@needs_shared_data
def test_csp_lda_permutation_p(eegmmidb_study):
    """Chance level and p-value of the 5-fold accuracy by label permutation (200)."""
    from sklearn.model_selection import StratifiedKFold, permutation_test_score

    x, y, _, rank = _csp_data(eegmmidb_study)
    score, perm, p = permutation_test_score(
        _csp_lda(rank), x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
        n_permutations=200, random_state=0)
    print(f"\nCSP+LDA eegmmidb S001: accuracy {score:.3f}, permutation null mean "
          f"{perm.mean():.3f} (95th pct {np.percentile(perm, 95):.3f}), p = {p:.3f}")
    assert 0.0 <= score <= 1.0 and 1 / 201 <= p <= 1.0
    assert abs(perm.mean() - 0.5) < 0.1  # the null sits at chance
