"""Electrode multi-head attention (encoders.electrode_mha) and its estimator.

Simulated trials with a planted electrode group carry the class signal:

- scalp EEG: subjects share channel names (some subjects miss a few channels), the
  class shifts two bands of a group of named channels up or down;
- sEEG: every subject has contacts at its own coordinates; contacts inside a planted
  sphere carry the class signal in one band; a held-out subject's contacts were never
  seen in training.

Training runs are tiny (d_model 16-32, 1 block, <= 30 epochs, one torch thread).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Small settings: each fit takes about a second on one thread.
SMALL = {"d_model": 32, "n_blocks": 1, "n_heads": 2, "dropout": 0.0, "lr": 3e-3,
         "max_epochs": 30, "patience": 8, "device": "cpu"}
PLANTED_EEG = list(range(8, 14))
SEEG_CENTRE = np.array([0.03, -0.02, 0.02])
SEEG_RADIUS = 0.02


# ---------------------------------------------------------------------------- simulation
def simulate_eeg(n_subjects: int = 3, n_trials: int = 120, n_chans: int = 32,
                 n_bands: int = 5, effect: float = 0.6, offset: float = 0.3, seed: int = 0,
                 drop: dict | None = None):
    """Scalp EEG trials: class "right" raises bands 2 and 3 of channels E08-E13, "left"
    lowers them; per-subject channel offsets; ``drop``: subject index -> channels absent."""
    from brainhead.train.electrode import ElectrodeTrials

    drop = drop or {}
    names_all = [f"E{i:02d}" for i in range(n_chans)]
    parts, labels = [], []
    for s in range(n_subjects):
        rng = np.random.default_rng([seed, s])
        keep = [i for i in range(n_chans) if i not in drop.get(s, ())]
        y = rng.integers(0, 2, n_trials)
        X = offset * rng.normal(0, 1, (1, n_chans, n_bands))
        X = X + rng.normal(0, 1, (n_trials, n_chans, n_bands))
        sign = np.where(y == 1, 1.0, -1.0)[:, None]
        for band in (2, 3):
            X[:, [i for i in PLANTED_EEG if i < n_chans], band] += effect * sign
        parts.append((f"s{s}", X[:, keep], [names_all[i] for i in keep], None))
        labels.append(np.array(["left", "right"])[y])
    return ElectrodeTrials.from_arrays(parts), np.concatenate(labels)


def simulate_seeg(n_subjects: int = 4, n_trials: int = 100, n_bands: int = 5,
                  effect: float = 0.8, seed: int = 0):
    """sEEG trials: 24-35 contacts per subject at random MNI positions (metres), a sixth
    of them placed in the planted sphere, where "task" raises band 4 and "rest" lowers
    it. Returns the trials, labels and a (n_trials, n_electrodes) bool: planted contact."""
    from brainhead.train.electrode import ElectrodeTrials

    parts, labels, planted = [], [], []
    for s in range(n_subjects):
        rng = np.random.default_rng([seed, 100 + s])
        n_c = int(rng.integers(24, 36))
        xyz = rng.uniform(-0.06, 0.06, (n_c, 3))
        k = max(4, n_c // 6)
        xyz[:k] = SEEG_CENTRE + rng.uniform(-1, 1, (k, 3)) * SEEG_RADIUS / 2
        xyz = xyz[rng.permutation(n_c)]
        inside = np.linalg.norm(xyz - SEEG_CENTRE, axis=1) < SEEG_RADIUS
        y = rng.integers(0, 2, n_trials)
        X = rng.normal(0, 1, (n_trials, n_c, n_bands))
        X[:, inside, 4] += effect * np.where(y == 1, 1.0, -1.0)[:, None]
        parts.append((f"p{s}", X, [f"c{j}" for j in range(n_c)], xyz))
        labels.append(np.array(["rest", "task"])[y])
        planted.append(inside)
    trials = ElectrodeTrials.from_arrays(parts)
    mask = np.zeros(trials.mask.shape, dtype=bool)
    row = 0
    for inside, (_, X, _, _) in zip(planted, parts):
        mask[row:row + len(X), :len(inside)] = inside
        row += len(X)
    return trials, np.concatenate(labels), mask


def _split(trials, held: str, n_val: int = 40, seed: int = 0):
    """Leave ``held`` out; validation trials carved from the other subjects."""
    test = np.flatnonzero(trials.subject == held)
    train = np.flatnonzero(trials.subject != held)
    perm = np.random.default_rng(seed).permutation(train)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val]), test


# ---------------------------------------------------------------------------- the model
def test_padding_is_masked_and_shapes_follow_electrode_counts():
    import torch

    from encoders.electrode_mha import ElectrodeMHA

    torch.manual_seed(0)
    for identity, kwargs in (("name", {"n_names": 12}), ("coords", {})):
        net = ElectrodeMHA(n_outputs=3, n_bands=4, identity=identity, d_model=16,
                           n_blocks=2, n_heads=3, **kwargs).eval()
        assert net.d_head == 5  # 16 // 3, projected back to 16
        x = torch.randn(5, 9, 4)
        mask = torch.ones(5, 9, dtype=torch.bool)
        mask[1, 6:] = False
        mask[3, 2:] = False
        ids = torch.randint(1, 12, (5, 9))
        coords = torch.rand(5, 9, 3) * 0.1
        extra = {"ids": ids} if identity == "name" else {"coords": coords}
        logits, attn = net(x, mask, return_attention=True, **extra)
        assert logits.shape == (5, 3) and len(attn) == 2
        assert attn[0].shape == (5, 3, 9, 9)
        assert torch.allclose(attn[1].sum(-1), torch.ones(5, 3, 9))
        assert (attn[0][1, :, :, 6:] == 0).all() and (attn[0][3, :, :, 2:] == 0).all()
        # anything in the padded places (features, ids, coordinates; also NaN) is ignored
        x2, ids2, coords2 = x.clone(), ids.clone(), coords.clone()
        x2[~mask] = float("nan")
        ids2[~mask] = 7
        coords2[~mask] = float("nan")
        extra2 = {"ids": ids2} if identity == "name" else {"coords": coords2}
        assert torch.equal(net(x2, mask, **extra2), net(x, mask, **extra))
        # and a trial with fewer electrodes is the same trial with its padding cut off
        cut = {k: v[3:4, :2] for k, v in extra.items()}
        assert torch.allclose(net(x[3:4, :2], mask[3:4, :2], **cut), logits[3:4], atol=1e-6)
        # the fused (no weights) and explicit attention paths agree
        assert torch.allclose(net(x, mask, **extra), logits, atol=1e-5)


def test_trials_pad_to_the_largest_montage():
    from brainhead.train.electrode import ElectrodeTrials

    trials, y = simulate_eeg(n_trials=10, n_chans=8, drop={1: (2, 5)})
    assert trials.X.shape == (30, 8, 5) and trials.X.dtype == np.float32
    assert trials.mask[:10].all() and trials.mask[10:20].sum(1).tolist() == [6] * 10
    assert (trials.names[10, 6:] == "").all() and (trials.X[10:20, 6:] == 0).all()
    assert trials.coords is None and list(np.unique(trials.subject)) == ["s0", "s1", "s2"]
    sub = trials.take(trials.subject == "s1")
    assert len(sub) == 10 and sub.names[0, 2] == "E03"
    with pytest.raises(ValueError, match="subject bad: X must be"):
        ElectrodeTrials.from_arrays([("bad", np.zeros((2, 3, 5)), ["a", "b"], None)])
    with pytest.raises(ValueError, match="some subjects have coordinates"):
        ElectrodeTrials.from_arrays([("a", np.zeros((2, 2, 5)), ["a", "b"], np.zeros((2, 3))),
                                     ("b", np.zeros((2, 2, 5)), ["a", "b"], None)])


# ---------------------------------------------------------------------------- estimator
def test_fit_predict_eeg_leave_one_subject_out_and_attention_on_planted_group():
    """Names shared across subjects: trained on s0, s1, tested on s2 (which misses two
    channels of the planted group); above chance, and the class-averaged attention that
    electrodes receive is largest on the planted group."""
    from scipy.stats import binomtest

    from brainhead.train.electrode import ElectrodeAttentionClassifier

    trials, y = simulate_eeg(drop={2: (9, 30)})
    fit, val, test = _split(trials, "s2")
    clf = ElectrodeAttentionClassifier(**SMALL).fit(trials.take(fit), y[fit],
                                                    val=(trials.take(val), y[val]))
    assert clf.identity_ == "name" and list(clf.classes_) == ["left", "right"]
    proba = clf.predict_proba(trials.take(test))
    assert proba.shape == (len(test), 2) and np.allclose(proba.sum(1), 1)
    acc = float(np.mean(clf.predict(trials.take(test)) == y[test]))
    p = binomtest(int(round(acc * len(test))), len(test), 0.5, alternative="greater").pvalue
    assert acc > 0.75 and p < 1e-3, (acc, p)
    assert clf.run_info_["dir"] is None and clf.n_params > 0

    maps = clf.attention_maps(trials.take(test), y[test])
    assert maps["maps"].shape == (2, 30, 30) and maps["coords"] is None
    names = np.array(maps["names"])  # s2's channels (it lacks E09 and E30), in its order
    assert names.tolist() == [f"E{i:02d}" for i in range(32) if i not in (9, 30)]
    assert np.isfinite(maps["maps"]).all()
    assert np.allclose(maps["maps"].sum(-1), 1, atol=1e-5)  # rows: attention of a query
    received = maps["maps"].mean(axis=(0, 1))  # mean attention that each key receives
    planted = np.isin(names, [f"E{i:02d}" for i in PLANTED_EEG])
    assert received[planted].min() > received[~planted].max(), received
