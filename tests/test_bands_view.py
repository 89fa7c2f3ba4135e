"""The EEG ``bands`` view scored by alignment (a target per channel and band), and the
report's per-band topomaps drawn from it."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from brainhead.align import align_subject
from brainhead.io.store import provenance, write_arrays, write_responses
from brainhead.io.table import ResponseTable, Targets, View
from brainhead.report.brain import brain_figure, load_target_maps

CHANNELS = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Fz", "Pz"]
BANDS = ["alpha", "beta"]
N_STIM, N_LAYERS, DIM = 60, 3, 8
PARAMS = {"view": {"eeg": "bands"}, "alphas_log10": [-1, 4, 6], "n_inner_splits": 3,
          "n_permutations": 50, "n_bootstraps": 50, "ci": 0.95, "min_ceiling": 0.3}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """An EEG subject whose alpha power follows layer 0 and beta power layer 2."""
    import mne

    tmp = tmp_path_factory.mktemp("bands")
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((N_LAYERS, N_STIM, DIM))
    signal = np.stack([feats[0] @ rng.standard_normal((DIM, len(CHANNELS))),
                       feats[2] @ rng.standard_normal((DIM, len(CHANNELS)))], axis=-1)
    de = signal + 0.5 * rng.standard_normal(signal.shape)  # (stimuli, channels, bands)
    pos = mne.channels.make_standard_montage("colin27_1020").get_positions()["ch_pos"]
    coords = np.array([pos[c] for c in CHANNELS]) * 1000.0
    targets = Targets(CHANNELS, ["channel"] * len(CHANNELS), coords,
                      np.where(coords[:, 1] > 0, "anterior", "posterior"))
    stim = np.array([f"s{i:02d}" for i in range(N_STIM)])
    rows = {"stim_id": stim, "group": np.repeat(np.arange(4), N_STIM // 4)}
    table = ResponseTable("b01", "eeg", targets, {
        "stimulus": View(X=de.mean(-1).astype(np.float32), rows=rows),
        "bands": View(X=de.astype(np.float32), rows=dict(rows),
                      labels={"band": np.array(BANDS)})})
    responses = write_responses(tmp / "sub-b01" / "responses.h5", table,
                                provenance("preprocess", {}))
    features = write_arrays(tmp / "features" / "toy.h5",
                            {"trained": feats.astype(np.float32),
                             "random": rng.standard_normal(feats.shape).astype(np.float32),
                             "stim_id": stim}, provenance("features", {}))
    out = tmp / "align" / "sub-b01_toy.h5"
    summary = align_subject(responses, features, "toy", PARAMS, out,
                            tmp / "align" / "sub-b01_toy.tsv", seed=0)
    return responses, out, summary


def test_bands_view_scores_a_target_per_channel_and_band(scored):
    _, out, summary = scored
    assert set(summary["view"]) == {"bands"}
    with h5py.File(out, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["target_name"][()]]
        r = f["r_trained"][()]
        assert f.attrs["view"] == "bands"
    assert names == [f"{c}:{b}" for c in CHANNELS for b in BANDS]
    assert r.shape == (N_LAYERS, len(CHANNELS) * len(BANDS))
    best = r.argmax(0).reshape(len(CHANNELS), len(BANDS))
    # each band's planted layer wins in most channels
    assert (best[:, 0] == 0).mean() >= 0.75 and (best[:, 1] == 2).mean() >= 0.75


def test_report_draws_one_row_of_topomaps_per_band(scored):
    responses, out, _ = scored
    maps = load_target_maps(out, responses)
    assert list(dict.fromkeys(maps.bands)) == BANDS
    assert list(maps.band("beta").names) == CHANNELS
    assert np.array_equal(maps.band("alpha").best_layer, maps.best_layer[maps.bands == "alpha"])
    fig, caption = brain_figure(out, responses)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"{b}: {t}" for b in BANDS
                      for t in ("r at best layer (o: q < 0.05)", "best layer per channel")]
    assert "alpha, beta" in caption and "channel-band pairs" in caption
