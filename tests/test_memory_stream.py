"""The memory RNN as a decoder of neural streams (train family ``memory_rnn``).

- the planted memory of the simulator: trial ``j`` carries ``decay**m`` of stimulus
  ``j - m`` for ``m <= depth``;
- trials as sequences: binning of a ``timeseries`` view after each onset; the
  ``stimulus`` view in recording order where a subject has no time series;
- folds leave out whole runs and test each stimulus once, never a training label;
- on small simulated data, the recovered memory depth is the planted one (2), and 0
  without planted memory: lags beyond it sit inside the circular-shift null.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_planted_memory_weights_and_values():
    from brainhead.simulate.memory import memory_weights, planted_memory

    resp = np.arange(12.0).reshape(4, 3)
    order = np.array([2, 0, 3, 1])
    out = planted_memory(resp, order, {"depth": 2, "decay": 0.5})
    want = np.stack([resp[2], resp[0] + 0.5 * resp[2], resp[3] + 0.5 * resp[0] + 0.25 * resp[2],
                     resp[1] + 0.5 * resp[3] + 0.25 * resp[0]])
    assert np.allclose(out, want)
    assert np.array_equal(planted_memory(resp, order, None), resp[order])
    assert np.array_equal(planted_memory(resp, order, {"depth": 0}), resp[order])
    assert np.allclose(memory_weights(3, 0.5), [1, 0.5, 0.25, 0.125])
    with pytest.raises(ValueError, match="decay must be in"):
        memory_weights(2, 0.0)
    with pytest.raises(ValueError, match="depth must be >= 0"):
        memory_weights(-1, 0.5)


def _table(with_timeseries: bool):
    from brainhead.io.table import ResponseTable, Targets, View

    sf = 10.0
    time = np.arange(0, 8, 1 / sf)
    X = np.zeros((2 * len(time), 2), np.float32)
    X[:, 0] = np.tile(time, 2)          # channel 0: time within the run
    X[len(time):, 1] = 1.0              # channel 1: run 2
    views = {"stimulus": View(X=np.array([[1, 0], [2, 0], [3, 0]], np.float32),
                              rows={"stim_id": np.array(["b", "a", "c"]),
                                    "group": np.array(["1", "1", "2"]),
                                    "t_start": np.array([3.0, 1.0, 0.5])})}
    if with_timeseries:
        views["timeseries"] = View(
            X=X, rows={"time": np.tile(time, 2), "group": np.repeat(["1", "2"], len(time))},
            events={"onset": np.array([4.0, 1.0, 2.0, 7.5]), "stim_id": np.array(["b", "a", "c", "d"]),
                    "group": np.array(["1", "1", "2", "2"])})
    targets = Targets(name=["x", "y"], kind=["electrode"] * 2, coords=np.full((2, 3), np.nan),
                      region=["", ""])
    return ResponseTable("01", "seeg", targets, views).validate()


def test_trial_sequences_from_timeseries_and_stimulus_views():
    from brainhead.train.memory import TrialSequences

    seq = TrialSequences.from_table(_table(True), window_s=(0.0, 1.0), bin_s=0.5)
    assert seq.source == "timeseries"
    # d (onset 7.5 s) has no full window in its 8 s run; a before b in run 1 (onsets)
    assert seq.stim_id.tolist() == ["a", "b", "c"] and seq.run.tolist() == ["1", "1", "2"]
    assert seq.X.shape == (3, 2, 2)
    # bin means of the time channel: onset + [0, 0.5) and [0.5, 1.0) at 10 Hz
    assert np.allclose(seq.X[:, :, 0], [[1.2, 1.7], [4.2, 4.7], [2.2, 2.7]], atol=1e-5)
    assert np.allclose(seq.X[:, :, 1], [[0, 0], [0, 0], [1, 1]])
    assert seq.lag_stimuli(2).tolist() == [["a", ""], ["b", "a"], ["c", ""]]

    seq = TrialSequences.from_table(_table(False))
    assert seq.source == "stimulus" and seq.X.shape == (3, 1, 2)
    assert seq.stim_id.tolist() == ["a", "b", "c"]  # by t_start within each run
    with pytest.raises(ValueError, match="must be increasing"):
        TrialSequences.from_table(_table(True), window_s=(1.0, 0.0))


def test_folds_leave_out_runs_and_test_each_stimulus_once():
    from brainhead.train.memory import memory_folds

    # runs sharing every stimulus (the demo's repeats)
    runs = np.repeat(["1", "2", "3"], 30)
    stims = np.concatenate([np.random.default_rng(k).permutation(30) for k in range(3)]).astype(str)
    folds = memory_folds(runs, stims, seed=0)
    assert [r for r, _ in folds] == ["1", "2", "3"]
    tested = [s for _, ss in folds for s in ss]
    assert sorted(tested) == sorted(set(stims.tolist()))  # each stimulus tested once
    assert all(len(ss) == 10 for _, ss in folds)
    # runs with their own stimuli: leave-one-run-out, every stimulus of the test run
    own = np.array([f"{r}-{i}" for r, i in zip(runs, range(90))])
    for r, ss in memory_folds(runs, own, seed=0):
        assert ss == set(own[runs == r].tolist())
    with pytest.raises(ValueError, match="at least 2"):
        memory_folds(np.array(["1", "1"]), np.array(["a", "b"]), seed=0)


def simulated(depth: int, seed: int = 0, n_stim: int = 60, n_runs: int = 3, noise: float = 0.5):
    """One subject's trials with a planted memory of ``depth`` stimuli (decay 0.7)."""
    from brainhead.simulate.memory import planted_memory
    from brainhead.train.memory import TrialSequences

    rng = np.random.default_rng(seed)
    F = rng.standard_normal((n_stim, 4)).astype(np.float32)
    resp = F @ rng.standard_normal((4, 12))
    X, stim, run = [], [], []
    for r in range(n_runs):
        order = rng.permutation(n_stim)
        trials = planted_memory(resp, order, {"depth": depth, "decay": 0.7})
        X.append(trials[:, None, :] + noise * rng.standard_normal((n_stim, 2, 12)))
        stim += [f"s{i:03d}" for i in order]
        run += [str(r)] * n_stim
    ids = np.array([f"s{i:03d}" for i in range(n_stim)])
    return TrialSequences("01", "eeg", np.concatenate(X), stim, run, "test"), F, ids


SETTINGS = {"n_lags": 4, "n_units": 16, "epochs_per_stage": 4, "n_permutations": 200}


def _cfg():
    from brainhead.train.trainer import TrainConfig

    return TrainConfig(device="cpu", seed=0, progress=False, lr=1e-2)


def test_planted_depth_is_recovered(tmp_path):
    import torch

    from brainhead.train.memory import decode_subject

    seq, F, ids = simulated(depth=2)
    res = decode_subject(seq, F, ids, tmp_path, SETTINGS, _cfg())
    assert res["depth"] == {"single": 2, "multi": 2}, res["curve"]
    for row in res["curve"]:
        assert row["n_trials"] >= 55  # each stimulus tested once, at every lag it has
        assert row["null_low"] < row["null_mean"] < row["null_high"]
        if row["lag"] <= 2:
            assert row["r"] > row["null_high"] and row["p"] < 0.01
    assert len({u["tau"] for u in res["units"]}) > 1 and min(u["tau"] for u in res["units"]) >= 1
    # the folds are whole runs: 3 folds x 2 curricula, one run each (4 stages of 4 epochs)
    assert len(res["runs"]) == 3 * 2 and len(list(tmp_path.rglob("done.json"))) == 6
    assert all(r["epochs"] == 16 for r in res["runs"])
    # rerun: every stage reused, the same curve
    again = decode_subject(seq, F, ids, tmp_path, SETTINGS, _cfg())
    assert all(r["reused"] for r in again["runs"]) and again["curve"] == res["curve"]
    assert torch.get_num_threads() == 1


def test_no_planted_memory_gives_depth_zero(tmp_path):
    from brainhead.train.memory import decode_subject

    seq, F, ids = simulated(depth=0, seed=1)
    res = decode_subject(seq, F, ids, tmp_path, {**SETTINGS, "curricula": ["multi"]}, _cfg())
    assert res["depth"] == {"multi": 0}, res["curve"]


def test_family_job_writes_its_outputs_and_report_section(tmp_path):
    """``train_memory_decoder`` from files (an EEG-like table: stimulus view only) writes
    the job's outputs, and the report section draws them."""
    import pandas as pd

    from brainhead.io.store import write_arrays, write_responses
    from brainhead.io.table import ResponseTable, Targets, View
    from brainhead.report.memory import memory_section
    from brainhead.train.jobs import OUTPUTS
    from brainhead.train.memory import FAMILY, train_memory_decoder

    seq, F, ids = simulated(depth=1, seed=2)
    n = len(seq.stim_id)
    X = seq.X[:, 0]
    table = ResponseTable("e01", "eeg", Targets(
        name=[f"c{i}" for i in range(X.shape[1])], kind=["channel"] * X.shape[1],
        coords=np.full((X.shape[1], 3), np.nan), region=[""] * X.shape[1]),
        {"stimulus": View(X=X, rows={"stim_id": seq.stim_id, "group": seq.run,
                                     "t_start": np.tile(np.arange(n // 3) * 2.0, 3)})})
    responses = write_responses(tmp_path / "responses.h5", table.validate(), {})
    layers = np.stack([np.random.default_rng(0).standard_normal(F.shape), F, F])
    features = tmp_path / "minilm.h5"
    write_arrays(features, {"trained": layers, "random": layers, "stim_id": ids}, {})
    out = tmp_path / "models" / FAMILY / "eeg"
    params = {"max_epochs": 5, "device": "cpu", "lr": 1e-2,
              FAMILY: {**SETTINGS, "n_lags": 3, "n_components": None}}
    summary = train_memory_decoder([responses], features, out, params, seed=0, model="minilm")
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(OUTPUTS[FAMILY])
    depth = pd.read_csv(out / "depth.tsv", sep="\t", dtype={"subject": str})
    assert set(depth["view"]) == {"stimulus"} and depth["depth"].tolist() == [1, 1]
    assert summary["depth"][0]["subject"] == "e01" and len(summary["runs"]) == 3 * 2

    class Builder:
        def __init__(self):
            self.added = []

        def html(self, title, html, **kw):
            self.added.append(("html", title, html))

        def figure(self, fig, name, title, caption, **kw):
            self.added.append(("figure", title, name))

    from brainhead.report.sections import ReportContext

    ctx = ReportContext("t", "", pd.DataFrame(), pd.DataFrame(), {"memory": {"depth": 1}},
                        model_dirs=[out])
    builder = Builder()
    memory_section(builder, ctx)
    kinds = [a[0] for a in builder.added]
    assert kinds == ["html", "figure"]
    assert "Planted memory of the simulation: 1 stimuli back" in builder.added[0][2]
    assert "<td>e01</td><td>stimulus</td>" in builder.added[0][2]


def test_decoder_run_resumes_to_the_same_predictions(tmp_path, monkeypatch):
    """A curriculum run that dies mid-way (after its epoch-4 checkpoint) resumes from
    ``last.ckpt`` and ends with the predictions of an uninterrupted run, those of the
    stages before the crash included (they live in a checkpointed buffer)."""
    import torch

    from brainhead.train import memory

    seq, F, ids = simulated(depth=1, seed=3, n_runs=2)
    settings = {**SETTINGS, "n_lags": 3, "epochs_per_stage": 3}

    def first_fold(out, module_cls=None):
        if module_cls is not None:
            monkeypatch.setattr(memory, "StreamMemoryModule", module_cls)
        exp = memory.MemoryDecoder(seq, F, ids, out, settings, _cfg())
        fit, val, _ = exp.masks(0)
        rows = np.flatnonzero(seq.run == exp.folds[0][0])
        X = torch.from_numpy(seq.X)
        return exp.curriculum("single", 0, X, fit, val, rows), exp.runs[-1]

    reference, info = first_fold(tmp_path / "ref")
    assert info["epochs"] == 9 and np.isfinite(reference).all()

    class Crash(memory.StreamMemoryModule):
        def on_train_epoch_start(self):
            if self.current_epoch == 5:
                raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        first_fold(tmp_path / "cut", Crash)
    monkeypatch.undo()
    resumed, info = first_fold(tmp_path / "cut")
    assert info["resumed"] is True and info["epochs"] == 9
    assert np.array_equal(resumed, reference)


def test_condition_targets_from_the_stimulus_view():
    from brainhead.train.memory import condition_targets

    table = _table(True)
    with pytest.raises(ValueError, match="no condition labels"):
        condition_targets(table)
    table.views["stimulus"].rows["y"] = np.array(["x", "y", "x"])
    Y, ids = condition_targets(table)
    assert ids.tolist() == ["a", "b", "c"]  # stimuli b, a, c with conditions x, y, x
    assert Y.shape == (3, 2) and np.allclose(Y.mean(0), 0) and np.allclose(Y.std(0), 1)
    assert np.allclose(Y[:, 0], -Y[:, 1]) and Y[0, 1] > 0 and Y[1, 0] > 0
    table.views["stimulus"].rows["y"] = np.array(["x", "x", "x"])
    with pytest.raises(ValueError, match="at least 2 conditions"):
        condition_targets(table)
