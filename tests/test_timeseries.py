"""Tests of brainhead.align.timeseries: layer-by-layer encoding of continuous recordings
(fMRI per TR with FIR delays, sEEG envelopes with TRF lags), with circular-shift
p-values and block-bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from brainhead.align import timeseries
from brainhead.align.scores import BEST_COLUMNS, SUMMARY_COLUMNS
from brainhead.align.timeseries import (
    lag_samples,
    onset_matrix,
    run_groups,
    score_timeseries,
)
from brainhead.io import RecordingError, View

N_RUNS, N_SAMPLES, DIM, N_LAYERS = 4, 300, 8, 3
PLANTED = {"A": 1, "B": 2}
PARAMS = {"alphas_log10": [-1, 4, 6], "n_inner_splits": 3, "n_permutations": 200,
          "n_bootstraps": 200, "ci": 0.95, "n_components": 64, "block_s": 20.0}
#: Sampling period, spacing of events (samples) and response kernel (lag in samples ->
#: weight) of each modality: an fMRI at a TR of 2 s with 2 s long events and a response
#: 4-6 s after them; an sEEG envelope at 10 Hz with a response 0.1-0.4 s after onsets.
SETUPS = {"fmri": {"dt": 2.0, "every": 2, "kernel": {2: 0.6, 3: 1.0}},
          "seeg": {"dt": 0.1, "every": 5, "kernel": {1: 0.5, 2: 1.0, 4: 0.5}}}


def _toy_features(rng, n_stim):
    """Trained layers share a component (neighbouring layers correlate); random do not."""
    shared = rng.normal(size=(n_stim, DIM))
    trained = np.stack([0.6 * shared + rng.normal(size=(n_stim, DIM))
                        for _ in range(N_LAYERS)])
    return trained, rng.normal(size=(N_LAYERS, n_stim, DIM))


def _events(modality, n_runs=N_RUNS, rng=None):
    """Onsets (s), stimulus ids and runs: one new stimulus every few samples."""
    setup = SETUPS[modality]
    onset, stim, run = [], [], []
    per_run = N_SAMPLES // setup["every"] - 4
    for r in range(n_runs):
        # sEEG onsets fall between samples (placed at the next sample)
        jitter = 0.0 if modality == "fmri" else 0.03
        onset += (setup["dt"] * setup["every"] * np.arange(per_run) + jitter).tolist()
        stim += [f"s{r}_{i:03d}" for i in range(per_run)]
        run += [f"run-{r + 1}"] * per_run
    events = {"onset": np.array(onset), "stim_id": np.array(stim), "group": np.array(run)}
    if modality == "fmri":
        events["duration"] = np.full(len(onset), setup["dt"])
    return events


def _recording(modality, *, seed=0, planted=True, n_runs=N_RUNS, events=None,
               smooth=0.0, n_extra=0):
    """A time-series view with regions A and B following trained layers 1 and 2.

    Returns ``(view, regions, features, feature_rows)``. Targets: 4 in A, 4 in B and
    ``1 + n_extra`` without region (noise). Without ``planted`` all responses are noise.
    The noise is a stationary AR(1) process with coefficient ``smooth`` in each run
    (autocorrelated like real recordings).
    """
    rng = np.random.default_rng(seed)
    setup = SETUPS[modality]
    events = _events(modality, n_runs) if events is None else events
    stims = np.unique(events["stim_id"])
    trained, random = _toy_features(rng, len(stims))
    rows = {s: i for i, s in enumerate(stims)}
    time = np.tile(setup["dt"] * np.arange(N_SAMPLES), n_runs)
    group = np.repeat([f"run-{r + 1}" for r in range(n_runs)], N_SAMPLES)
    regions = np.array(["A"] * 4 + ["B"] * 4 + [""] * (1 + n_extra))
    Y = rng.normal(size=(len(time), len(regions)))
    for t in range(len(time)):  # stationary AR(1) in each run
        same = t > 0 and group[t] == group[t - 1]
        Y[t] = smooth * Y[t - 1] + Y[t] if same else Y[t] / np.sqrt(1 - smooth**2)
    if planted:
        onsets = np.zeros((len(time), len(stims)))
        for o, s, g in zip(events["onset"], events["stim_id"], events["group"]):
            sample = int(np.ceil(o / setup["dt"] - 1e-9))
            onsets[np.flatnonzero(group == g)[sample], rows[s]] += 1
        for j, region in enumerate(regions[:8]):
            drive = onsets @ (trained[PLANTED[region]] @ rng.normal(size=DIM))
            signal = np.zeros(len(time))
            for lag, weight in setup["kernel"].items():
                shifted = np.roll(drive, lag)
                shifted[np.r_[[True] * lag, group[lag:] != group[:-lag]]] = 0.0
                signal += weight * shifted
            Y[:, j] += signal / signal.std()
    view = View(X=Y.astype(np.float32), rows={"time": time, "group": group}, events=events)
    return view, regions, {"trained": trained, "random": random}, rows


@pytest.fixture(scope="module", params=sorted(SETUPS))
def planted(request):
    view, regions, features, rows = _recording(request.param)
    out = score_timeseries(view, regions, features, rows, PARAMS, request.param, seed=1,
                           label="sub-t1")
    return request.param, out


def _r(rows, region, control="trained"):
    r = {row["layer"]: row for row in rows
         if row["metric"] in ("r", "r_diff") and row["region"] == region
         and row["control"] == control}
    return [r[k] for k in range(len(r))]


# --------------------------------------------------------------------------- the design
def test_onset_matrix_places_events_at_or_after_onset():
    time = np.tile(0.1 * np.arange(10), 2)
    group = np.repeat(["a", "b"], 10)
    events = {"onset": np.array([0.05, 0.3, 0.3, 1.5, 0.0]),
              "stim_id": np.array(["x", "y", "x", "late", "z"]),
              "group": np.array(["a", "a", "b", "a", "b"])}
    view = View(X=np.zeros((20, 1), np.float32), rows={"time": time, "group": group},
                events=events)
    onsets, stims = onset_matrix(view, "seeg")
    assert stims.tolist() == ["x", "y", "z"]  # "late" is after the end of run a
    dense = onsets.toarray()
    assert dense.shape == (20, 3)
    assert np.flatnonzero(dense[:, 0]).tolist() == [1, 13]  # 0.05 -> 0.1 s; 0.3 in run b
    assert np.flatnonzero(dense[:, 1]).tolist() == [3]  # exactly on a sample
    assert np.flatnonzero(dense[:, 2]).tolist() == [10]
    assert dense.sum() == 4


def test_onset_matrix_fmri_spreads_over_the_event_duration():
    time = np.tile(2.0 * np.arange(6), 1)
    events = {"onset": np.array([1.0, 6.0]), "duration": np.array([4.0, 0.5]),
              "stim_id": np.array(["x", "y"]), "group": np.array(["a", "a"])}
    view = View(X=np.zeros((6, 1), np.float32), rows={"time": time, "group": ["a"] * 6},
                events=events)
    dense = onset_matrix(view, "fmri")[0].toarray()
    assert np.flatnonzero(dense[:, 0]).tolist() == [1, 2]  # TRs at 2 and 4 s of [1, 5)
    assert np.flatnonzero(dense[:, 1]).tolist() == [3]  # shorter than a TR: one sample
    # EEG/sEEG events are impulses at their onset, whatever their duration
    assert onset_matrix(view, "seeg")[0].toarray().sum() == 2


def test_lag_samples_in_whole_samples():
    assert lag_samples({}, "fmri", 2.0).tolist() == [1, 2, 3, 4]
    assert lag_samples({}, "fmri", 1.5).tolist() == [1, 3, 4, 5]
    assert lag_samples({}, "seeg", 0.05).tolist() == [0, 2, 4, 6, 8, 10, 12]
    assert lag_samples({"trf_lags_s": [-0.1, 0.2], "trf_step_s": 0.1}, "eeg",
                       0.1).tolist() == [-1, 0, 1, 2]
    with pytest.raises(ValueError, match="modality must be one of"):
        lag_samples({}, "meg", 0.1)


# --------------------------------------------------------------------------- scores
def test_score_timeseries_output_layout(planted):
    modality, (rows, best, per_target) = planted
    ident = {"subject", "modality", "view", "model"}  # added by the caller
    keys = set(SUMMARY_COLUMNS) - ident
    assert all(set(row) == keys for row in rows)
    assert {row["metric"] for row in rows} == {"r", "r_diff"}
    assert len(rows) == 3 * N_LAYERS * 3
    assert {(row["region"], row["control"], row["layer"]) for row in rows} == {
        (g, c, k) for g in ("all", "A", "B") for c in ("trained", "random", "trained-random")
        for k in range(N_LAYERS)}
    assert all(row["n_clipped"] == 0 for row in rows)
    assert {row["n_targets"] for row in rows if row["region"] == "all"} == {9}
    for row in rows:
        assert 0 < row["p"] <= 1 and row["q"] >= row["p"] - 1e-12
        assert row["ci_low"] <= row["ci_high"]
    assert set(per_target) == {"ceiling", "r_trained", "r_random", "p_trained", "p_random",
                               "q_trained", "q_random"}
    for key, arr in per_target.items():
        assert arr.dtype == np.float32
        assert arr.shape == ((9,) if key == "ceiling" else (N_LAYERS, 9))
    assert np.isnan(per_target["ceiling"]).all()
    best_keys = [c for c in BEST_COLUMNS if c not in ident]
    assert [list(row) for row in best] == [best_keys] * 3
    assert [row["region"] for row in best] == ["all", "A", "B"]
    # the region score is the mean of its targets' r
    a = [row["score"] for row in _r(rows, "A")]
    np.testing.assert_allclose(a, per_target["r_trained"][:, :4].mean(1), rtol=1e-5)


def test_score_timeseries_finds_planted_layers(planted):
    modality, (rows, best, per_target) = planted
    best = {row["region"]: row for row in best}
    for region, layer in PLANTED.items():
        curve = _r(rows, region)
        scores = [row["score"] for row in curve]
        assert int(np.argmax(scores)) == layer, (modality, region, scores)
        assert best[region]["best_layer"] == layer
        assert best[region]["layers_per_fold"].split() == [str(layer)] * N_RUNS
        assert curve[layer]["score"] > 0.5
        assert curve[layer]["ci_low"] < curve[layer]["score"] < curve[layer]["ci_high"]
        assert curve[layer]["p"] == pytest.approx(2 / 201)  # the smallest possible
        assert curve[layer]["q"] < 0.05
        cols = slice(0, 4) if region == "A" else slice(4, 8)
        assert (per_target["p_trained"][layer, cols] < 0.05).all()
        random = [row["score"] for row in _r(rows, region, "random")]
        assert curve[layer]["score"] > random[layer] + 0.3
        assert best[region]["random_score"] < curve[layer]["score"] - 0.3
        diff = _r(rows, region, "trained-random")[layer]
        assert diff["score"] == pytest.approx(curve[layer]["score"] - random[layer])
        assert diff["ci_low"] > 0.2 and diff["p"] < 0.05
    # the target without a region is pure noise
    assert abs(per_target["r_trained"][:, 8]).max() < 0.2


def test_score_timeseries_null_pvalues_are_not_anticonservative():
    """Autocorrelated noise responses: small p-values stay rare over seeds. A null that
    shuffled time points, ignoring the autocorrelation, fails this test (about 15% of
    the per-target p-values below 0.1)."""
    params = {**PARAMS, "n_permutations": 100, "n_bootstraps": 10}
    small, per_target_p = [], []
    for seed in range(20):
        modality = sorted(SETUPS)[seed % 2]
        view, regions, features, rows = _recording(modality, seed=seed, planted=False,
                                                   n_runs=3, smooth=0.9, n_extra=40)
        features = {"trained": features["trained"][:1]}
        out, _, per_target = score_timeseries(view, regions, features, rows, params,
                                              modality, seed=seed)
        small += [row["p"] < 0.05 for row in out if row["region"] in ("A", "B")]
        per_target_p.append(per_target["p_trained"][0])
    assert sum(small) <= 4, sum(small)  # of 40 (expected at most 2)
    p = np.concatenate(per_target_p)
    for alpha in (0.05, 0.1, 0.2):
        assert np.mean(p < alpha) <= alpha + 2.5 * np.sqrt(alpha * (1 - alpha) / p.size)
    assert np.mean(p < 0.5) > 0.1  # not degenerate


def test_score_timeseries_is_repeatable():
    view, regions, features, rows = _recording("seeg", n_runs=3)
    features = {control: F[:1] for control, F in features.items()}
    params = {**PARAMS, "n_permutations": 20, "n_bootstraps": 20}
    a = score_timeseries(view, regions, features, rows, params, "seeg", seed=4)
    b = score_timeseries(view, regions, features, rows, params, "seeg", seed=4)
    assert a[0] == b[0] and a[1] == b[1]


# --------------------------------------------------------------------------- folds
def test_runs_sharing_a_stimulus_stay_on_one_side(monkeypatch):
    """Runs 1 and 2 share a stimulus, runs 2 and 3 another (merged transitively): every
    outer and inner split keeps all of their samples on one side."""
    events = _events("seeg", n_runs=5)
    shared = events["stim_id"].copy()
    shared[np.flatnonzero(events["group"] == "run-2")[3]] = shared[
        np.flatnonzero(events["group"] == "run-1")[0]]
    shared[np.flatnonzero(events["group"] == "run-3")[7]] = shared[
        np.flatnonzero(events["group"] == "run-2")[5]]
    events["stim_id"] = shared
    view, regions, features, rows = _recording("seeg", n_runs=5, events=events)
    features = {"trained": features["trained"][:1]}

    seen = []
    real_fit_layer = timeseries.fit_layer

    def spy(X, Y, folds, groups, *args, **kwargs):
        seen.append((folds, groups))
        return real_fit_layer(X, Y, folds, groups, *args, **kwargs)

    monkeypatch.setattr(timeseries, "fit_layer", spy)
    params = {**PARAMS, "n_permutations": 10, "n_bootstraps": 10}
    _, best, _ = score_timeseries(view, regions, features, rows, params, "seeg")
    assert len(best[0]["layers_per_fold"].split()) == 3  # {1, 2, 3}, {4}, {5}

    run_of_row = view.rows["group"]
    stims_of_run = {g: set(events["stim_id"][events["group"] == g]) for g in
                    np.unique(run_of_row)}
    folds, groups = seen[0]
    assert len(folds) == 3
    for train, test in folds:
        train_stims = set().union(*(stims_of_run[g] for g in np.unique(run_of_row[train])))
        test_stims = set().union(*(stims_of_run[g] for g in np.unique(run_of_row[test])))
        assert not train_stims & test_stims
        assert len(train) + len(test) == len(run_of_row)
        # inner folds (alpha choice) split by the same merged groups
        assert not set(groups[train]) & set(groups[test])
    assert len(np.unique(groups[np.isin(run_of_row, ["run-1", "run-2", "run-3"])])) == 1


def test_run_groups_without_shared_stimuli_are_runs():
    runs = np.repeat(["a", "b", "c"], 4)
    groups = run_groups(runs, np.array(["x", "y", "z", "w"]), np.array(["a", "b", "c", "c"]))
    assert groups.tolist() == np.repeat([0, 1, 2], 4).tolist()


# --------------------------------------------------------------------------- errors
def test_single_run_is_an_error():
    view, regions, features, rows = _recording("seeg", n_runs=1)
    with pytest.raises(ValueError, match="at least 3 groups of runs"):
        score_timeseries(view, regions, features, rows, PARAMS, "seeg")


def test_runs_all_merged_is_an_error():
    events = _events("seeg")
    events["stim_id"] = events["stim_id"].astype("U16")
    first = np.flatnonzero(np.r_[True, events["group"][1:] != events["group"][:-1]])
    events["stim_id"][first] = "everywhere"  # one stimulus in every run
    view, regions, features, rows = _recording("seeg", events=events)
    with pytest.raises(ValueError, match=r"4 run\(s\).*sharing a stimulus are merged"):
        score_timeseries(view, regions, features, rows, PARAMS, "seeg")


def test_missing_stimulus_features_is_an_error():
    view, regions, features, rows = _recording("fmri")
    del rows["s2_010"]
    with pytest.raises(RecordingError, match=r"sub-t9: 1 stimuli.*s2_010"):
        score_timeseries(view, regions, features, rows, PARAMS, "fmri", label="sub-t9")


def test_short_runs_for_the_shift_null_are_an_error():
    view, regions, features, rows = _recording("seeg")
    keep = view.rows["time"] < 15.0  # 15 s runs: shifts of >= 10 s need 20 s
    view = View(X=view.X[keep], rows={k: v[keep] for k, v in view.rows.items()},
                events=view.events)
    with pytest.raises(ValueError, match="circular shifts of at least 100 samples"):
        score_timeseries(view, regions, features, rows, PARAMS, "seeg")


# --------------------------------------------------------------------------- onset baseline
def _evoked_only(modality, seed=0):
    """A recording whose only response is the same evoked response to every stimulus."""
    view, regions, features, rows = _recording(modality, seed=seed, planted=False)
    setup = SETUPS[modality]
    time, group = view.rows["time"], view.rows["group"]
    onsets, _ = onset_matrix(view, modality)
    presence = np.asarray(onsets.sum(axis=1)).ravel()
    evoked = np.zeros(len(time))
    for lag, weight in setup["kernel"].items():
        shifted = np.roll(presence, lag)
        shifted[np.r_[[True] * lag, group[lag:] != group[:-lag]]] = 0.0
        evoked += weight * shifted
    X = view.X + (2.0 * evoked / evoked.std())[:, None].astype(np.float32)
    # transformer features, trained or random, have a large mean over stimuli: placed at
    # the onsets they carry "a stimulus is on"
    features = {control: F + 3.0 for control, F in features.items()}
    return View(X=X, rows=view.rows, events=view.events), regions, features, rows


@pytest.mark.parametrize("modality", sorted(SETUPS))
def test_onset_baseline_removes_the_content_free_response(modality):
    view, regions, features, rows = _evoked_only(modality)
    params = {**PARAMS, "n_permutations": 100, "n_bootstraps": 50}
    without, _, _ = score_timeseries(view, regions, features, rows,
                                     {**params, "timeseries_baseline": "none"}, modality,
                                     seed=2)
    # any features at the onsets predict an evoked response, random ones too
    for control in ("trained", "random"):
        assert min(row["score"] for row in _r(without, "all", control)) > 0.3
    with_baseline, _, _ = score_timeseries(view, regions, features, rows,
                                           {**params, "timeseries_baseline": "onset"},
                                           modality, seed=2)
    for control in ("trained", "random"):
        scores = [row["score"] for row in _r(with_baseline, "all", control)]
        assert max(abs(s) for s in scores) < 0.1, scores


def test_onset_baseline_is_fitted_on_training_rows_only():
    view, regions, _, _ = _evoked_only("seeg", seed=3)
    runs = np.asarray(view.rows["group"]).astype(str)
    onsets, _ = onset_matrix(view, "seeg")
    groups = run_groups(runs, view.events["stim_id"], view.events["group"])
    folds = timeseries.outer_folds(groups)
    delayer = timeseries.Lagger(lags_s=[0.0, 0.1, 0.2, 0.4], sfreq=10.0)
    Y = view.X.astype(np.float64)
    alphas = np.logspace(-1, 4, 6)
    before = timeseries.onset_baseline_residuals(onsets, delayer, runs, Y, folds, groups,
                                                 alphas, 3)
    train, test = folds[0]
    Y2 = Y.copy()
    Y2[test] = np.random.default_rng(0).normal(size=Y2[test].shape)
    after = timeseries.onset_baseline_residuals(onsets, delayer, runs, Y2, folds, groups,
                                                alphas, 3)
    # fold 0's baseline never saw its test rows: its training residuals are unchanged
    np.testing.assert_allclose(after[0][train], before[0][train], atol=1e-5)
    assert not np.allclose(after[1][train], before[1][train])  # fold 1 trains on them
    none = timeseries.onset_baseline_residuals(onsets, delayer, runs, Y, folds, groups,
                                               alphas, 3, "none")
    assert len(none) == len(folds) and np.allclose(none[0], Y)
    with pytest.raises(ValueError, match="timeseries_baseline must be one of"):
        timeseries.onset_baseline_residuals(onsets, delayer, runs, Y, folds, groups,
                                            alphas, 3, "mean")
