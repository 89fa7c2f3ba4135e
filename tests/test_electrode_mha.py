"""Electrode multi-head attention (encoders.electrode_mha) and its estimator.

Simulated trials with a planted electrode group carry the class signal:

- scalp EEG: subjects share channel names (some subjects miss a few channels), the
  class shifts two bands of a group of named channels up or down;
- sEEG: every subject has contacts at its own coordinates; contacts inside a planted
  sphere carry the class signal in one band; a held-out subject's contacts were never
  seen in training.

Training runs are tiny (d_model 16-32, 1 block, <= 30 epochs, one torch thread). The
kill test runs a fit in a child process: this file is also the script that it runs
(``python tests/test_electrode_mha.py ROOT``, see :func:`fit_in`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _child import child_process

pytest.importorskip("torch")
pytest.importorskip("lightning")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The small settings that the demo can afford: a fit takes 1-3 s on one thread.
SMALL = {"d_model": 32, "n_blocks": 1, "n_heads": 2, "dropout": 0.0, "lr": 5e-3,
         "max_epochs": 20, "patience": 5, "batch_size": 32, "device": "cpu"}
PLANTED_EEG = list(range(8, 14))
SEEG_CENTRE = np.array([0.03, -0.02, 0.02])
SEEG_DECOY = np.array([-0.03, 0.02, -0.01])
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
                  effect: float = 1.0, seed: int = 0):
    """sEEG trials: 24-35 contacts per subject at random MNI positions (metres), a sixth
    of them in a planted sphere, where "task" raises band 4 and "rest" lowers it, and as
    many in a decoy sphere, where the class acts the other way round.

    Without knowing where a contact is, the two kinds look alike (for each class, as many
    contacts go up as go down), so decoding a subject needs the contacts' positions; the
    contact names (``c0``, ``c1``, ...) are in random order and mean nothing across
    subjects. Returns the trials, labels and a (n_trials, n_electrodes) bool: a contact
    inside either sphere.
    """
    from brainhead.train.electrode import ElectrodeTrials

    parts, labels, signal = [], [], []
    for s in range(n_subjects):
        rng = np.random.default_rng([seed, 100 + s])
        n_c = int(rng.integers(24, 36))
        xyz = rng.uniform(-0.06, 0.06, (n_c, 3))
        k = max(4, n_c // 6)
        xyz[:k] = SEEG_CENTRE + rng.uniform(-1, 1, (k, 3)) * SEEG_RADIUS / 2
        xyz[k:2 * k] = SEEG_DECOY + rng.uniform(-1, 1, (k, 3)) * SEEG_RADIUS / 2
        xyz = xyz[rng.permutation(n_c)]
        planted = np.linalg.norm(xyz - SEEG_CENTRE, axis=1) < SEEG_RADIUS
        decoy = np.linalg.norm(xyz - SEEG_DECOY, axis=1) < SEEG_RADIUS
        y = rng.integers(0, 2, n_trials)
        sign = np.where(y == 1, 1.0, -1.0)[:, None]
        X = rng.normal(0, 1, (n_trials, n_c, n_bands))
        X[:, planted, 4] += effect * sign
        X[:, decoy, 4] -= effect * sign
        parts.append((f"p{s}", X, [f"c{j}" for j in range(n_c)], xyz))
        labels.append(np.array(["rest", "task"])[y])
        signal.append(planted | decoy)
    trials = ElectrodeTrials.from_arrays(parts)
    mask = np.zeros(trials.mask.shape, dtype=bool)
    row = 0
    for inside, (_, X, _, _) in zip(signal, parts):
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

    trials, _y = simulate_eeg(n_trials=10, n_chans=8, drop={1: (2, 5)})
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
    p = binomtest(round(acc * len(test)), len(test), 0.5, alternative="greater").pvalue
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
    blocks = clf.attention_maps(trials.take(test), y[test], per_block=True)
    assert blocks["maps"].shape == (1, 2, 30, 30)  # one block
    assert np.allclose(blocks["maps"][0], maps["maps"])
    assert (blocks["counts"] == np.bincount(clf._encode(y[test]))[:, None, None]).all()


def test_coordinates_embed_an_unseen_subjects_contacts():
    """sEEG: trained on three subjects, tested on a fourth whose contacts sit at
    coordinates never seen in training. Only positions tell the planted contacts from
    the decoys (:func:`simulate_seeg`): the coordinate model is above chance (binomial
    test), the same model with name identity (names that mean nothing across implants:
    the control) is not, and the attention that contacts receive is larger inside the
    two signal spheres than outside them."""
    from scipy.stats import binomtest

    from brainhead.train.electrode import ElectrodeAttentionClassifier

    trials, y, signal = simulate_seeg()
    fit, val, test = _split(trials, "p3")
    held = trials.take(test)
    seen = np.round(trials.take(fit).coords[trials.take(fit).mask], 6)
    assert not (np.round(held.coords[held.mask], 6)[:, None] == seen[None]).all(2).any()

    def accuracy(identity):
        clf = ElectrodeAttentionClassifier(**SMALL, identity=identity)
        clf.fit(trials.take(fit), y[fit], val=(trials.take(val), y[val]))
        return clf, float(np.mean(clf.predict(held) == y[test]))

    clf, acc = accuracy("auto")
    assert clf.identity_ == "coords" and clf.vocabulary_ is None
    p = binomtest(round(acc * len(test)), len(test), 0.5, alternative="greater").pvalue
    _, names_acc = accuracy("name")
    assert acc > 0.75 and p < 1e-4, (acc, p)
    assert names_acc < 0.65 and acc > names_acc + 0.2, (acc, names_acc)

    maps = clf.attention_maps(held, y[test])
    n = int(held.mask[0].sum())
    assert maps["maps"].shape == (2, n, n) and maps["coords"].shape == (n, 3)
    assert maps["names"][0] == "p3:c0"  # contacts are keyed by subject
    assert np.allclose(maps["coords"], held.coords[0, :n])
    received = maps["maps"].mean(axis=(0, 1))
    inside = signal[test[0], :n]
    assert received[inside].mean() > 1.5 * received[~inside].mean(), (received, inside)


def test_same_seed_same_probabilities_other_seed_differs():
    from brainhead.train.electrode import ElectrodeAttentionClassifier

    trials, y = simulate_eeg(n_subjects=2, n_trials=60, n_chans=12)
    settings = {**SMALL, "dropout": 0.1, "max_epochs": 4}
    fit, val, test = _split(trials, "s1", n_val=20)

    def proba(seed):
        clf = ElectrodeAttentionClassifier(**settings, seed=seed)
        clf.fit(trials.take(fit), y[fit], val=(trials.take(val), y[val]))
        return clf.predict_proba(trials.take(test))

    first = proba(0)
    assert np.array_equal(first, proba(0))
    assert not np.allclose(first, proba(1))


def test_names_share_embeddings_across_subjects():
    """One vocabulary entry per channel name whatever the subject; a trial is read by
    its channel names, not by positions: permuting a subject's channels (names along)
    leaves every probability as it is; an unknown name gets the zero embedding."""
    import torch

    from brainhead.train.electrode import ElectrodeAttentionClassifier, ElectrodeTrials

    trials, y = simulate_eeg(n_subjects=2, n_trials=40, n_chans=10, drop={1: (3,)})
    clf = ElectrodeAttentionClassifier(**{**SMALL, "max_epochs": 2}).fit(trials, y)
    assert clf.run_info_["epochs"] == 2  # no validation: a fixed number of epochs
    assert sorted(clf.vocabulary_) == [f"E{i:02d}" for i in range(10)]
    assert clf.net_.name_embedding.num_embeddings == 11
    ids = clf._tensors(trials)["ids"].numpy()
    for name in ("E00", "E05", "E09"):
        at = trials.names == name
        assert len(np.unique(ids[at])) == 1  # both subjects, one embedding
    s1 = trials.take(trials.subject == "s1")
    order = np.random.default_rng(0).permutation(9)
    moved = ElectrodeTrials.from_arrays([("s1", s1.X[:, order], s1.names[0, order], None)])
    assert moved.X.shape[1] == 9 and s1.X.shape[1] == 10  # s1 alone is not padded
    assert np.allclose(clf.predict_proba(moved), clf.predict_proba(s1), atol=1e-6)
    renamed = ElectrodeTrials.from_arrays([("s9", s1.X[:, :9],
                                            ["ZZ"] + list(s1.names[0, 1:9]), None)])
    assert clf._tensors(renamed)["ids"][0, 0] == 0
    assert torch.count_nonzero(clf.net_.name_embedding.weight[0]) == 0


def test_errors_name_the_problem():
    from brainhead.train.electrode import ElectrodeAttentionClassifier, ElectrodeTrials

    trials, y = simulate_eeg(n_subjects=2, n_trials=10, n_chans=6)
    clf = ElectrodeAttentionClassifier(**{**SMALL, "max_epochs": 1})
    with pytest.raises(RuntimeError, match="not fitted yet"):
        clf.predict(trials)
    with pytest.raises(ValueError, match="uses coordinates and these trials have none"):
        clone_with(clf, identity="coords").fit(trials, y)
    with pytest.raises(ValueError, match="fit: 20 trials but 19 labels"):
        clf.fit(trials, y[:-1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(trials, np.full(len(y), "left"))
    empty = ElectrodeTrials(trials.X, trials.mask.copy(), trials.names, None, trials.subject)
    empty.mask[13] = False
    with pytest.raises(ValueError, match="trial 13 \\(subject s1\\) has no electrode"):
        clf.fit(empty, y)
    nan = ElectrodeTrials(trials.X.copy(), trials.mask, trials.names, None, trials.subject)
    nan.X[4, 2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite band features in trial 4 \\(subject s0"):
        clf.fit(nan, y)
    seeg, y_seeg, _ = simulate_seeg(n_subjects=1, n_trials=10)
    seeg.coords[3, 5] = np.nan
    with pytest.raises(ValueError, match="subject p0, channel 'c5' has no finite coordinates"):
        clf.fit(seeg, y_seeg)
    clf.fit(trials, y)
    with pytest.raises(ValueError, match="predict: 3 bands, the model was fitted on 5"):
        clf.predict(ElectrodeTrials.from_arrays([("x", np.zeros((2, 4, 3)), list("abcd"),
                                                  None)]))
    with pytest.raises(ValueError, match=r"labels \['up'\] are not among"):
        clf.attention_maps(trials.take([0, 1]), np.array(["up", "left"]))


def clone_with(est, **params):
    from sklearn.base import clone

    return clone(est).set_params(**params)


def test_batch_plans_repeat_by_epoch_and_fill_min_steps():
    """An epoch's batches are a function of (seed, epoch) (so a resumed run sees the
    same ones); ``min_steps`` makes whole extra passes, each row once per pass."""
    import torch

    from brainhead.train.electrode import _loader

    tensors = {"x": torch.arange(64.0)[:, None], "y": torch.arange(64)}
    plan = _loader(tensors, batch_size=32, shuffle=True, seed=3, min_steps=5)
    assert len(plan) == 6  # 3 passes of 2 batches

    def rows(epoch):
        plan.sampler.set_epoch(epoch)
        return [b["y"].tolist() for b in plan]

    first = rows(0)
    assert len(first) == 6 and all(len(b) == 32 for b in first)
    counts = np.bincount(np.concatenate(first), minlength=64)
    assert (counts == 3).all()
    assert rows(0) == first and rows(1) != first
    val = _loader(tensors, batch_size=256, shuffle=False, seed=0, min_steps=5)
    assert [b["y"].tolist() for b in val] == [list(range(64))]


def test_braindecode_style_construction_from_chs_info():
    """``ElectrodeMHA(n_chans, n_outputs, n_times, chs_info=..., sfreq=...)`` as
    braindecode models are built; forward takes a plain (batch, n_chans, n_bands) tensor."""
    import mne
    import torch

    from encoders.electrode_mha import ElectrodeMHA

    info = mne.create_info(["C3", "Cz", "C4", "Pz"], 160.0, "eeg")
    x = torch.randn(3, 4, 5)
    named = ElectrodeMHA(n_outputs=2, n_bands=5, chs_info=info["chs"], d_model=16,
                         n_blocks=1, n_heads=2, sfreq=160.0, n_times=640)
    assert named.identity == "name" and named.n_chans == 4 and named.n_names == 5
    assert named(x).shape == (3, 2) and named.final_layer.out_features == 2
    info.set_montage("standard_1020")
    placed = ElectrodeMHA(4, 3, None, n_bands=5, chs_info=info["chs"], d_model=16,
                          n_blocks=1, n_heads=2)
    assert placed.identity == "coords"
    assert torch.allclose(placed.montage_coords[0],
                          torch.tensor(info["chs"][0]["loc"][:3], dtype=torch.float32))
    logits, attn = placed(x, return_attention=True)
    assert logits.shape == (3, 3) and attn[0].shape == (3, 2, 4, 4)
    with pytest.raises(ValueError, match="n_chans=5 but chs_info describes 4"):
        ElectrodeMHA(5, 2, n_bands=5, chs_info=info["chs"])
    with pytest.raises(ValueError, match="montage has 4 channels, x has 6"):
        placed(torch.randn(1, 6, 5))
    with pytest.raises(ValueError, match="forward needs `ids`"):
        ElectrodeMHA(n_outputs=2, n_bands=5, n_names=4)(x)


# ---------------------------------------------------------------------------- kill & resume
HOLD = "hold.json"
KILL_SETTINGS = {**SMALL, "dropout": 0.1, "max_epochs": 6, "patience": 100}


def kill_data():
    trials, y = simulate_eeg(n_subjects=2, n_trials=60, n_chans=12)
    fit, val, test = _split(trials, "s1", n_val=20)
    return trials.take(fit), y[fit], (trials.take(val), y[val]), trials.take(test)


def fit_in(root: Path, run_dir: Path) -> dict:
    """Fit :func:`kill_data` with ``run_dir``; save the test probabilities in ``root``.

    ``root/hold.json`` (``{"pause_epoch": k}``) makes training wait, to be killed, at the
    start of epoch ``k`` (after the checkpoint of epoch ``k - 1``).
    """
    import torch

    from brainhead.train import electrode

    hold = json.loads((root / HOLD).read_text()) if (root / HOLD).is_file() else {}
    base = electrode._module_class()

    class Pausing(base):
        def on_train_epoch_start(self):
            if self.current_epoch == hold.get("pause_epoch"):
                (root / "paused").write_text(str(self.current_epoch))
                time.sleep(600)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    electrode._ElectrodeModule = Pausing
    try:
        fit, y, val, test = kill_data()
        clf = electrode.ElectrodeAttentionClassifier(**KILL_SETTINGS, run_dir=run_dir)
        clf.fit(fit, y, val=val)
        np.save(root / "proba.npy", clf.predict_proba(test))
    finally:
        electrode._ElectrodeModule = base
        torch.set_num_threads(threads)
    return clf.run_info_


@pytest.fixture(scope="module", autouse=True)
def held_child(tmp_path_factory):
    """A fit in a child process, started with the module (torch and Lightning load
    while the other tests run); it waits at the start of epoch 3 to be killed."""
    root = tmp_path_factory.mktemp("electrode_kill")
    (root / HOLD).write_text(json.dumps({"pause_epoch": 3}))
    with child_process(__file__, root) as proc:
        yield root, proc


def test_sigkill_then_resume_equals_uninterrupted_and_checkpoints_are_weights_only(
        held_child, tmp_path):
    from test_train_resume import _kill, _wait_for

    from brainhead.train.checkpoints import load_checkpoint

    root, proc = held_child
    _wait_for(root / "paused", proc)
    _kill(proc)
    (run,) = (root / "runs").iterdir()
    assert run.name.startswith("electrode-") and not (run / "done.json").exists()
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")  # weights_only=True
    assert last["epoch"] == 2
    assert any(k.startswith("net.blocks.0.attn") for k in last["state_dict"])

    resumed = fit_in(tmp_path, root / "runs")  # the same fit, in this process
    assert resumed["resumed"] is True and resumed["epochs"] == KILL_SETTINGS["max_epochs"]
    (tmp_path / "ref").mkdir()
    reference = fit_in(tmp_path / "ref", tmp_path / "ref" / "runs")  # uninterrupted
    assert reference["resumed"] is False
    assert np.array_equal(np.load(tmp_path / "proba.npy"),
                          np.load(tmp_path / "ref" / "proba.npy"))
    assert ((run / "metrics.csv").read_bytes()
            == (Path(reference["dir"]) / "metrics.csv").read_bytes())
    best = load_checkpoint(run / "checkpoints" / "best.ckpt")
    assert set(best["state_dict"]) == set(last["state_dict"])

    again = fit_in(tmp_path / "ref", tmp_path / "ref" / "runs")  # complete: reused
    assert again["reused"] is True
    assert np.array_equal(np.load(tmp_path / "ref" / "proba.npy"),
                          np.load(tmp_path / "proba.npy"))


if __name__ == "__main__":
    fit_in(Path(sys.argv[1]), Path(sys.argv[1]) / "runs")
