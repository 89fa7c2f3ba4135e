"""Decoding studies (issue 10): protocols and the leakage check, scores with chance and p,
label and window bookkeeping, baselines, and a decode-only study through the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from brainhead.decode.metrics import fold_scores, pooled_scores
from brainhead.decode.protocols import (
    CrossSession,
    CrossSubject,
    LeakageError,
    WithinSession,
    block_groups,
    check_split,
    validation_split,
)
from brainhead.decode.trials import DecodeRows
from brainhead.io import ResponseTable, Targets, View
from brainhead.specs import SpecError, load_study

from _bad_inputs_eeg import NAMES_10_20, _edf


# --------------------------------------------------------------------------- helpers
def _table(subject, y, *, trial=None, run=None, t_start=None, length=1.0, session=None,
           n_ch=4, n_times=50, rng=None, signal=0.0):
    """A response table with bands and epochs views; class index 1 has more power on
    channels 0-1 (``signal`` is the log-ratio of their standard deviation)."""
    rng = np.random.default_rng(0) if rng is None else rng
    y = np.asarray(y, str)
    n = len(y)
    ep = rng.standard_normal((n, n_ch, n_times)).astype(np.float32)
    ep[y == np.unique(y)[-1], :2] *= np.exp(signal)
    de = (0.5 * np.log(2 * np.pi * np.e * ep.var(-1)))[:, :, None].astype(np.float32)
    rows = {"stim_id": np.asarray(trial if trial is not None else
                                  [f"t{k}" for k in range(n)], str),
            "group": np.asarray(run if run is not None else ["1"] * n, str), "y": y}
    if t_start is not None:
        rows["t_start"] = np.asarray(t_start, float)
        rows["t_stop"] = rows["t_start"] + length
    if session is not None:
        rows["session"] = np.asarray(session, str)
    names = [f"C{k}" for k in range(n_ch)]
    return ResponseTable(
        subject, "eeg", Targets(names, ["channel"] * n_ch, np.zeros((n_ch, 3)), [""] * n_ch),
        {"bands": View(de, rows, labels={"band": np.array(["power"])}),
         "stimulus": View(de[:, :, 0].copy(), dict(rows)),
         "epochs": View(ep, dict(rows), labels={"time": np.arange(n_times) / 50.0})}).validate()


def _windows(subject="01", n_per_run=10, length=2.0, step=2.0):
    """A rest run (1) and a task run (2) of fixed windows every ``step`` s."""
    starts = np.concatenate([np.arange(n_per_run) * step] * 2)
    return _table(subject, ["rest"] * n_per_run + ["task"] * n_per_run,
                  trial=[f"run{r}-{k:04d}" for r in (1, 2) for k in range(n_per_run)],
                  run=["1"] * n_per_run + ["2"] * n_per_run, t_start=starts, length=length)


def _rows(*tables, windowed=False):
    return DecodeRows.from_tables("toy", "eeg", list(tables),
                                  windowed={t.subject: windowed for t in tables})


# --------------------------------------------------------------------------- bookkeeping
def test_blocks_are_contiguous_in_time():
    rows = _rows(_windows(n_per_run=10), windowed=True)
    idx = np.arange(len(rows))
    # hand-computed: 10 windows per run in 5 blocks of 2, in time order, in each run
    assert block_groups(rows, idx, 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] * 2
    assert block_groups(rows, idx, 3).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2] * 2


def test_within_session_windows_test_one_block_of_every_run():
    rows = _rows(_windows(n_per_run=10), windowed=True)
    folds = WithinSession(n_folds=5).split(rows)
    assert len(folds) == 5
    for k, fold in enumerate(folds):
        # block k of run 1 (rows 2k, 2k+1) and of run 2 (rows 10 + 2k, 10 + 2k + 1)
        assert fold.test.tolist() == [2 * k, 2 * k + 1, 10 + 2 * k, 11 + 2 * k]
        assert sorted(set(rows.y[fold.test])) == ["rest", "task"]
        assert fold.n_purged == 0 and len(fold.train) == 16


def test_overlapping_windows_are_purged_from_training():
    # 50% overlap: window k spans [k, k + 2) s; the neighbours of a test block overlap it
    rows = _rows(_windows(n_per_run=10, length=2.0, step=1.0), windowed=True)
    folds = WithinSession(n_folds=5).split(rows)
    inner = folds[2]  # block 2 = windows 4, 5: windows 3 and 6 overlap it, in both runs
    assert inner.n_purged == 4
    assert sorted(set(range(20)) - set(inner.train) - set(inner.test)) == [3, 6, 13, 16]
    edge = folds[0]  # block 0 = windows 0, 1: only window 2 overlaps
    assert edge.n_purged == 2


def test_repeated_trials_stay_on_one_side():
    # every trial twice (a stimulus heard in two runs): both presentations on one side
    trial = [f"s{k}" for k in range(10)] * 2
    y = ["a", "b"] * 10
    rows = _rows(_table("01", y, trial=trial, run=["1"] * 10 + ["2"] * 10))
    folds = WithinSession(n_folds=5, seed=3).split(rows)
    assert len(folds) == 5
    for fold in folds:
        assert not set(rows.trial[fold.train]) & set(rows.trial[fold.test])
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(20))


def test_label_selection_and_classes():
    table = _table("01", ["a", "b", "c", "a", "b", "c"])
    rows = DecodeRows.from_tables("toy", "eeg", [table], classes=["a", "c"])
    assert rows.y.tolist() == ["a", "c", "a", "c"]
    assert rows.trial.tolist() == ["t0", "t2", "t3", "t5"]
    assert rows.data["01"].bands.shape == (4, 4, 1) and rows.data["01"].epochs.shape == (4, 4, 50)
    with pytest.raises(ValueError, match=r"study toy: sub-01 \(eeg\): key 'decode.classes': "
                                         r"fewer than two classes"):
        DecodeRows.from_tables("toy", "eeg", [table], classes=["a", "z"])
    with pytest.raises(ValueError, match=r"key 'decode.label': the response table has no "
                                         r"per-row array 'cond'"):
        DecodeRows.from_tables("toy", "eeg", [table], label="cond")


# --------------------------------------------------------------------------- the check
def test_leak_overlapping_windows_raises():
    rows = _rows(_windows(n_per_run=10, length=2.0, step=1.0), windowed=True)
    # a split that ignores time: windows 4, 5 tested, their neighbours 3 and 6 trained on
    test = np.array([4, 5, 14, 15])
    train = np.setdiff1d(np.arange(20), test)
    with pytest.raises(LeakageError, match=r"study toy: eeg WithinSession: leaking test split: "
                                           r"sub-01: run 1: window\(s\) overlapping in time "
                                           r"on both sides \(training 'run1-0003' overlaps"):
        check_split(rows, train, test, protocol="WithinSession")


def test_leak_shared_trial_raises():
    trial = [f"s{k}" for k in range(6)] * 2
    rows = _rows(_table("07", ["a", "b"] * 6, trial=trial))
    with pytest.raises(LeakageError, match=r"sub-07: trial group\(s\) \['s0', 's1', 's2'\] on "
                                           r"both sides"):
        check_split(rows, np.arange(6, 12), np.array([0, 1, 2]), protocol="WithinSession")
    with pytest.raises(LeakageError, match=r"row\(s\) on both sides"):
        check_split(rows, np.arange(0, 6), np.array([5, 6]), protocol="WithinSession")


def test_leak_shared_subject_in_loso_raises():
    rng = np.random.default_rng(1)
    rows = _rows(*[_table(s, ["a", "b"] * 4, rng=rng) for s in ("01", "02", "03")])
    test = np.nonzero(rows.subject == "02")[0]
    train = np.concatenate([np.nonzero(rows.subject != "02")[0], test[:1] * 0 + test[0]])
    with pytest.raises(LeakageError, match=r"row\(s\) on both sides"):
        check_split(rows, train, test, protocol="CrossSubject")
    # a different trial of the same subject on the training side: the subject leaks
    train = np.concatenate([np.nonzero(rows.subject != "02")[0]])
    with pytest.raises(LeakageError, match=r"CrossSubject: leaking test split: subject\(s\) "
                                           r"\['sub-02'\] on both sides"):
        check_split(rows, np.append(train, test[0]), test[1:], protocol="CrossSubject")
    folds = CrossSubject().split(rows)  # the real ones pass
    assert [f.subject for f in folds] == ["01", "02", "03"]
    for f in folds:
        assert set(rows.subject[f.test]) == {f.subject}
        assert f.subject not in set(rows.subject[f.train])


def test_cross_session_and_validation_from_training_side():
    rng = np.random.default_rng(2)
    table = _table("01", ["a", "b"] * 12, session=["1"] * 12 + ["2"] * 12,
                   run=["1"] * 6 + ["2"] * 6 + ["3"] * 6 + ["4"] * 6, rng=rng)
    rows = _rows(table)
    folds = CrossSession().split(rows)
    assert [(f.session, f.test.tolist()) for f in folds] == [
        ("1", list(range(12))), ("2", list(range(12, 24)))]
    assert CrossSession().split(_rows(_table("01", ["a", "b"] * 4))) == []
    for fold in folds:
        fit, val = validation_split(rows, fold.train, fraction=0.25, seed=0)
        assert set(fit) | set(val) == set(fold.train) and not set(val) & set(fold.test)
        assert sorted(set(rows.y[val])) == ["a", "b"] and len(val) == 4
    # windows: whole blocks go to validation, and fit windows overlapping them are purged
    wrows = _rows(_windows(n_per_run=10, length=2.0, step=1.0), windowed=True)
    fold = WithinSession(n_folds=5).split(wrows)[0]
    fit, val = validation_split(wrows, fold.train, fraction=0.25, seed=0, n_blocks=5)
    check_split(wrows, fit, val, protocol="WithinSession", what="validation")
    assert len(fit) + len(val) < len(fold.train)  # neighbours of validation blocks purged


# --------------------------------------------------------------------------- metrics
def test_scores_chance_and_permutation_p_by_hand():
    y = np.array(["a", "a", "a", "b"])
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8]])
    s = fold_scores(y, proba, ["a", "b"], n_permutations=2000, rng=np.random.default_rng(0))
    assert s["accuracy"] == 0.75 and s["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert s["chance"] == 0.75 and s["chance_balanced"] == 0.5
    assert s["roc_auc"] == 1.0
    # by hand: predictions a, a, b, b; a permutation of the labels puts the one b at
    # row 0, 1, 2 or 3 with probability 1/4 each, giving accuracy 0.25, 0.25, 0.75, 0.75:
    # P(null >= 0.75) = 1/2, and the null's mean is 1/2
    assert s["p_value"] == pytest.approx(0.5, abs=0.03)
    assert s["null_mean"] == pytest.approx(0.5, abs=0.02)


def test_pooled_p_is_small_for_a_perfect_decoder_and_uniform_for_noise():
    rng = np.random.default_rng(0)
    y = np.array(["a", "b"] * 20)
    good = pooled_scores([(y[:20], np.eye(2)[(y[:20] == "b").astype(int)]),
                          (y[20:], np.eye(2)[(y[20:] == "b").astype(int)])], ["a", "b"],
                         n_permutations=500, rng=rng)
    assert good["accuracy"] == 1.0 and good["p_value"] == pytest.approx(1 / 501)
    ps = [fold_scores(y, rng.random((40, 2)), ["a", "b"], n_permutations=200, rng=rng)["p_value"]
          for _ in range(60)]
    assert 0.3 < np.mean(ps) < 0.7  # calibrated under the null


# --------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("name", ["csp_lda", "tangent_lr", "logvar_lda"])
def test_sklearn_baselines_find_a_power_difference(name):
    from brainhead.decode.baselines import make_baseline
    from brainhead.specs import fill_defaults, load_schema

    settings = fill_defaults({"decode": {}}, load_schema("study"))["decode"]
    rng = np.random.default_rng(0)
    table = _table("01", ["a", "b"] * 30, rng=rng, signal=0.7)
    X, y = table.view("epochs").X, table.view("epochs").rows["y"]
    est = make_baseline(name, settings, sfreq=50.0).fit(X[:40], y[:40])
    assert est.classes_.tolist() == ["a", "b"]
    assert (est.classes_[est.predict_proba(X[40:]).argmax(1)] == y[40:]).mean() >= 0.85
    noise = _table("01", ["a", "b"] * 30, rng=rng, signal=0.0)
    Xn = noise.view("epochs").X
    acc = (est.fit(Xn[:40], y[:40]).predict_proba(Xn[40:]).argmax(1) == (y[40:] == "b")).mean()
    assert acc < 0.85


def test_shallow_convnet_shapes_and_signature():
    import torch

    from encoders.shallow_convnet import ShallowConvNet

    for n_chans, n_times in ((4, 50), (19, 100)):
        net = ShallowConvNet(n_chans=n_chans, n_outputs=3, n_times=n_times, sfreq=50.0,
                             n_filters=5)
        assert net(torch.zeros(2, n_chans, n_times)).shape == (2, 3)
        assert isinstance(net.final_layer, torch.nn.Conv2d)
    net = ShallowConvNet(n_outputs=2, n_times=50, sfreq=50.0,
                         chs_info=[{"ch_name": f"C{k}"} for k in range(6)])
    assert net.n_chans == 6
    with pytest.raises(ValueError, match="needs n_times"):
        ShallowConvNet(n_chans=4, n_outputs=2, sfreq=50.0)


def test_shallow_convnet_learns_and_is_deterministic(tmp_path, one_torch_thread):
    from brainhead.decode.baselines import ShallowConvNetClassifier

    rng = np.random.default_rng(0)
    table = _table("01", ["a", "b"] * 40, rng=rng, signal=0.8)
    X, y = table.view("epochs").X, table.view("epochs").rows["y"]
    kw = dict(n_filters=6, max_epochs=12, patience=12, sfreq=50.0, seed=3, device="cpu",
              lr=0.01)
    probas = []
    for k in range(2):
        est = ShallowConvNetClassifier(**kw, run_dir=tmp_path / f"r{k}")
        est.fit(X[:50], y[:50], val=(X[50:60], y[50:60]))
        probas.append(est.predict_proba(X[60:]))
        assert len(list((tmp_path / f"r{k}").glob("shallow-convnet-*/done.json"))) == 1
        assert not est.fit_info_.get("reused")
    np.testing.assert_array_equal(probas[0], probas[1])
    assert (np.array(["a", "b"])[probas[0].argmax(1)] == y[60:]).mean() >= 0.75
    # the same settings and data reuse the finished run; another setting trains anew
    again = ShallowConvNetClassifier(**kw, run_dir=tmp_path / "r0")
    again.fit(X[:50], y[:50], val=(X[50:60], y[50:60]))
    assert again.fit_info_["reused"]
    np.testing.assert_array_equal(again.predict_proba(X[60:]), probas[0])
    other = ShallowConvNetClassifier(**{**kw, "n_filters": 4}, run_dir=tmp_path / "r0")
    other.fit(X[:50], y[:50], val=(X[50:60], y[50:60]))
    assert not other.fit_info_.get("reused")
    assert len(list((tmp_path / "r0").glob("shallow-convnet-*/done.json"))) == 2


# --------------------------------------------------------------------------- a decode study
def _decode_study(root: Path, decode: dict, *, extra: dict | None = None) -> Path:
    """Two subjects, each a rest file (30 s) and a task file (20 s, alpha on O1/O2)."""
    rng = np.random.default_rng(5)
    (root / "subjects").mkdir(parents=True)
    for sub in ("01", "02"):
        t = np.arange(int(30 * 100)) / 100
        rest = rng.normal(0, 5.0, (len(NAMES_10_20), len(t)))
        task = rng.normal(0, 5.0, (len(NAMES_10_20), 2000))
        for ch in ("O1", "O2"):
            task[NAMES_10_20.index(ch)] += 25 * np.sin(2 * np.pi * 10 * t[:2000])
        _edf(root / "raw" / f"sub{sub}_1.edf", NAMES_10_20, seconds=30.0, data_uv=rest,
             events=())
        _edf(root / "raw" / f"sub{sub}_2.edf", NAMES_10_20, seconds=20.0, data_uv=task,
             events=())
        (root / "subjects" / f"sub-{sub}.yaml").write_text(yaml.safe_dump({
            "subject": sub, "modality": "eeg",
            "source": {"files": [f"raw/sub{sub}_1.edf", f"raw/sub{sub}_2.edf"]}}))
    study = {"name": "restask", "seed": 1, "decode": decode,
             "preprocess": {"eeg": {"epoching": "fixed", "fixed_length": 2.0,
                                    "window": [0.0, 2.0], "baseline": None, "l_freq": 1.0,
                                    "h_freq": 40.0, "bands": {"alpha": [8, 13], "beta": [14, 30]},
                                    "run_labels": {"1": "rest", "sub01_2.edf": "task",
                                                   "2": "task"},
                                    "run_segments": {"1": [-20, None]}}},
             **(extra or {})}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return root


def test_windows_take_their_label_and_segment_from_the_run(tmp_path):
    from brainhead.preprocess import run_preprocessing

    study = load_study(_decode_study(tmp_path / "s", {"models": ["logvar_lda"]}))
    table = run_preprocessing(study, "01", tmp_path / "results")
    rows = table.view("bands").rows
    # hand-computed: the last 20 s of the 30 s rest file, then the whole 20 s task file,
    # cut into 2 s windows
    assert rows["y"].tolist() == ["rest"] * 10 + ["task"] * 10
    assert rows["group"].tolist() == ["1"] * 10 + ["2"] * 10
    np.testing.assert_allclose(rows["t_start"], list(np.arange(10, 30, 2.0)) + list(np.arange(0, 20, 2.0)))
    np.testing.assert_allclose(rows["t_stop"] - rows["t_start"], 2.0)
    epochs = table.view("epochs")  # the study decodes with a raw-signal model
    assert epochs.X.shape == (20, len(NAMES_10_20), 200)
    assert epochs.rows["stim_id"].tolist() == rows["stim_id"].tolist()


def test_decode_study_without_stimuli_validates_and_errors_name_key(tmp_path):
    root = _decode_study(tmp_path / "ok", {"models": ["logvar_lda"]})
    study = load_study(root)
    assert "stimuli" not in study.config and study.config["decode"]["label"] == "y"
    bad = _decode_study(tmp_path / "bad", {"models": ["csp_lda"], "classes": ["a", "b", "c"],
                                           "modalities": ["seeg"]},
                        extra={"train": {"families": ["voxel_xattn"]}})
    with pytest.raises(SpecError) as err:
        load_study(bad)
    text = str(err.value)
    assert "study.yaml: key 'decode.models': csp_lda decodes two classes" in text
    assert "key 'decode.modalities': ['seeg'] has no subject in this study" in text
    assert ("study.yaml: key 'stimuli': required when the study is not simulated and trains "
            "on stimulus features (train.families: voxel_xattn)") in text
    seg = yaml.safe_load((root / "study.yaml").read_text())
    seg["preprocess"]["eeg"]["run_segments"] = {"1": [5, 2]}
    seg["preprocess"]["eeg"]["epoching"] = "events"
    (root / "study.yaml").write_text(yaml.safe_dump(seg))
    with pytest.raises(SpecError) as err:
        load_study(root)
    assert "key 'preprocess.eeg.run_segments': applies to fixed-length windows" in str(err.value)
    assert "key 'preprocess.eeg.run_segments.1': [5, 2] s must start before it ends" in str(err.value)
    no_stim = yaml.safe_load((root / "study.yaml").read_text())
    del no_stim["decode"]
    (root / "study.yaml").write_text(yaml.safe_dump(no_stim))
    with pytest.raises(SpecError, match=r"key 'stimuli': required when the study is not "
                                        r"simulated \(or add a decode section"):
        load_study(root)


def test_decode_stage_on_rest_versus_task(tmp_path, one_torch_thread):
    from brainhead.decode import decode_study
    from brainhead.io import read_arrays
    from brainhead.preprocess import preprocess_subject

    decode = {"models": ["logvar_lda", "tangent_lr", "csp_lda"], "n_folds": 2,
              "n_permutations": 200, "protocols": ["WithinSession", "CrossSession",
                                                   "CrossSubject"]}
    study = load_study(_decode_study(tmp_path / "s", decode))
    results = tmp_path / "results"
    for sub in study.subjects:
        preprocess_subject(study, sub, results, results / f"sub-{sub}" / "responses.h5")
    summary = decode_study(study, results)
    scores = pd.read_csv(results / "decode" / "scores.tsv", sep="\t", dtype={"subject": str})
    assert {"accuracy", "balanced_accuracy", "roc_auc", "kappa", "chance", "p_value"} <= set(scores)
    within = scores[(scores.protocol == "WithinSession") & (scores.fold != "all")]
    assert len(within) == 2 * 2 * 3  # subjects x folds x models
    pooled = scores[(scores.protocol == "WithinSession") & (scores.fold == "all")
                    & (scores.subject != "all")]
    assert (pooled.accuracy >= 0.9).all() and (pooled.p_value < 0.01).all()
    assert (pooled.chance == 0.5).all()
    loso = scores[(scores.protocol == "CrossSubject") & (scores.subject == "all")]
    assert set(loso.model) == set(decode["models"]) and (loso.accuracy > 0.8).all()
    assert {"modality": "eeg", "protocol": "CrossSession", "model": "*",
            "reason": "one session per subject"} in summary["skipped"]
    saved = json.loads((results / "decode" / "summary.json").read_text())
    assert saved["folds"]["eeg"] == {"WithinSession": 4, "CrossSession": 0, "CrossSubject": 2}
    preds, attrs = read_arrays(results / "decode" / "predictions.h5")
    assert attrs["brainhead_step"] == "decode"
    key = "eeg/WithinSession/logvar_lda"
    assert len(preds[f"{key}/y_true"]) == 40 and preds[f"{key}/proba"].shape == (40, 2)
    # the report of a study that only decodes: no alignment summary, a decoding section
    from brainhead.report import make_report

    html = make_report(None, results / "report.html", study="restask", results_dir=results,
                       figures_dir=results / "figures").read_text()
    assert "Decoding: eeg" in html and "one session per subject" in html
    assert sorted(p.name for p in (results / "figures").glob("*.png")) == [
        "decoding_eeg_all-subjects_accuracy_bars.png"]


def test_scores_match_scikit_learn():
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        roc_auc_score,
    )

    rng = np.random.default_rng(4)
    for k in (2, 3):
        classes = np.array(["a", "b", "c"][:k])
        y = classes[rng.integers(0, k, 50)]
        proba = rng.random((50, k))
        proba[np.arange(50), np.searchsorted(classes, y)] += rng.random(50)  # some skill
        s = fold_scores(y, proba, classes, n_permutations=10)
        pred = classes[proba.argmax(1)]
        assert s["accuracy"] == pytest.approx(accuracy_score(y, pred))
        assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
        assert s["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
        if k == 2:
            assert s["roc_auc"] == pytest.approx(roc_auc_score(y == "b", proba[:, 1]))
        else:
            assert np.isnan(s["roc_auc"])


def test_epochs_band_and_window():
    rng = np.random.default_rng(0)
    rows = _rows(_table("01", ["a", "b"] * 4, n_times=50, rng=rng))  # 50 Hz, 0 to 0.98 s
    before = rows.data["01"].epochs.copy()
    rows.prepare_epochs(band=[5, 15], window=[0.2, 0.6])
    d = rows.data["01"]
    np.testing.assert_allclose(d.times, np.arange(10, 31) / 50.0)
    assert d.epochs.shape == (8, 4, 21)
    # a band-pass: less power than the broadband signal, and none at 0 Hz
    assert d.epochs.var() < 0.6 * before.var() and abs(d.epochs.mean()) < 0.05
    with pytest.raises(ValueError, match=r"study toy: sub-01 \(eeg\): key 'decode.epochs_band': "
                                         r"\[5, 30\] Hz must have 0 <= low < high < 25 Hz"):
        _rows(_table("01", ["a", "b"] * 4)).prepare_epochs(band=[5, 30])
    with pytest.raises(ValueError, match=r"key 'decode.epochs_window': \[2, 3\] s is outside"):
        _rows(_table("01", ["a", "b"] * 4)).prepare_epochs(window=[2, 3])


def test_cue_designs_make_every_row_a_trial():
    # eegmmidb-like: stim_id names the cue, so grouping by it would put a class on one side
    y = ["left", "right"] * 10
    table = _table("S001", y, trial=y, run=["4"] * 10 + ["8"] * 10)
    rows = DecodeRows.from_tables("mmi", "eeg", [table], trial_groups="auto", min_stimuli=5)
    assert rows.trial[:3].tolist() == ["left#run4-0", "right#run4-1", "left#run4-2"]
    assert len(set(rows.trial)) == 20
    folds = WithinSession(n_folds=5).split(rows)
    assert len(folds) == 5 and all(len(set(rows.y[f.train])) == 2 for f in folds)
    # the demo-like design keeps stimuli together; "stimulus" forces it
    trial = [f"s{k}" for k in range(10)] * 2
    rows = DecodeRows.from_tables("toy", "eeg", [_table("01", ["a", "b"] * 10, trial=trial)],
                                  trial_groups="auto", min_stimuli=5)
    assert sorted(set(rows.trial)) == sorted(set(trial))
    forced = DecodeRows.from_tables("mmi", "eeg", [table], trial_groups="stimulus")
    assert sorted(set(forced.trial)) == ["left", "right"]
    with pytest.raises(ValueError, match=r"study mmi: sub-S001 \(eeg\) WithinSession: fold 0 "
                                         r"tests class\(es\) \['\w+'\] that its training side "
                                         r"lacks .* decode.trial_groups: trial"):
        WithinSession(n_folds=5).split(forced)  # one group per class: a class per side


@pytest.mark.slow
def test_decode_stage_killed_then_rerun_equals_uninterrupted(tmp_path, one_torch_thread):
    """SIGKILL in the middle of the decode stage, rerun: the same scores and predictions
    as an uninterrupted run (torch runs resume from their checkpoints, the rest refits)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from brainhead.decode import decode_study
    from brainhead.io import read_arrays
    from brainhead.preprocess import preprocess_subject

    decode = {"models": ["shallow_convnet", "logvar_lda"], "n_folds": 2, "n_permutations": 50,
              "protocols": ["WithinSession", "CrossSubject"],
              "shallow_convnet": {"n_filters": 4, "max_epochs": 30, "patience": 30}}
    root = _decode_study(tmp_path / "s", decode)
    study = load_study(root)
    results = tmp_path / "results"
    for sub in study.subjects:
        preprocess_subject(study, sub, results, results / f"sub-{sub}" / "responses.h5")
    killed = tmp_path / "killed"
    code = ("import sys, torch; torch.set_num_threads(1)\n"
            "from brainhead.specs import load_study\n"
            "from brainhead.decode import decode_study\n"
            "decode_study(load_study(sys.argv[1]), sys.argv[2], sys.argv[3])\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BRAINHEAD_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), str(results), str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill once one run has finished and the next one has a checkpoint
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (list(killed.glob("runs/**/done.json"))
                    and len(list(killed.glob("runs/**/last.ckpt"))) >= 2):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the decode stage ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "scores.tsv").exists()  # nothing half-written is left as a result
    decode_study(study, results, killed)
    decode_study(study, results, tmp_path / "straight")
    cols = ["protocol", "subject", "fold", "model", "accuracy", "roc_auc", "p_value"]
    a = pd.read_csv(killed / "scores.tsv", sep="\t", dtype=str)[cols]
    b = pd.read_csv(tmp_path / "straight" / "scores.tsv", sep="\t", dtype=str)[cols]
    pd.testing.assert_frame_equal(a, b)
    pa, _ = read_arrays(killed / "predictions.h5")
    pb, _ = read_arrays(tmp_path / "straight" / "predictions.h5")
    for key in pb:
        np.testing.assert_array_equal(pa[key], pb[key])


def test_stage_errors_name_the_study_file(tmp_path):
    from brainhead.decode import decode_study
    from brainhead.preprocess import preprocess_subject

    study = load_study(_decode_study(tmp_path / "s", {"models": ["logvar_lda"],
                                                      "classes": ["rest", "sleep"]}))
    results = tmp_path / "results"
    preprocess_subject(study, "01", results, results / "sub-01" / "responses.h5")
    preprocess_subject(study, "02", results, results / "sub-02" / "responses.h5")
    with pytest.raises(ValueError, match=r"s/study\.yaml: study restask: sub-01 \(eeg\): key "
                                         r"'decode\.classes': fewer than two classes"):
        decode_study(study, results)
    assert not (results / "decode" / "scores.tsv").exists()
