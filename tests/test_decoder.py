"""Subject adapters + shared decoder (encoders/adapters.py), its training module and the
decoding experiment (brainhead.train.adapters): the model, the loss, retrieval and its
null, the controls, reset-tuning, the joint/per-subject comparison, determinism, and a
resume after SIGKILL (the kill test's training process runs this file as a script:
``python tests/test_decoder.py ROOT``, see :func:`train_in`).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _child import child_process

from brainhead.train.modules import DecoderModule, info_nce
from encoders.adapters import AdapterDecoder, SubjectAdapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_subjects_with_different_target_counts_share_one_decoder():
    torch.manual_seed(0)
    net = AdapterDecoder({"a": 7, "b": 12}, d_out=5, d_shared=8, depth=2)
    assert net(torch.randn(3, 7), "a").shape == (3, 5)
    assert net(torch.randn(4, 12), "b").shape == (4, 5)
    assert net.embed(torch.randn(4, 12), "b").shape == (4, 8)
    with pytest.raises(ValueError, match=r"\(B, 7\)"):
        net(torch.randn(3, 12), "a")
    with pytest.raises(KeyError, match="unknown subject"):
        net(torch.randn(3, 7), "c")
    pooled = AdapterDecoder({"a": 7, "b": 120}, d_out=5, d_shared=8, pool=4, adapter="mlp")
    # with pooling the adapters have the same size whatever the number of targets
    sizes = {s: sum(p.numel() for p in pooled.subject_parameters(s)) for s in "ab"}
    assert sizes["a"] == sizes["b"]
    assert pooled(torch.randn(2, 120), "b").shape == (2, 5)


def test_adaptive_max_pooling_over_ordered_targets():
    adapter = SubjectAdapter(6, 3, pool=3)
    with torch.no_grad():
        adapter.map.weight.copy_(torch.eye(3))
        adapter.map.bias.zero_()
    y = torch.tensor([[1.0, 5.0, 2.0, 8.0, 3.0, 0.0]])
    # pools of neighbouring targets: max(1, 5), max(2, 8), max(3, 0)
    torch.testing.assert_close(adapter(y), torch.tensor([[5.0, 8.0, 3.0]]))
    with pytest.raises(ValueError, match="pool"):
        SubjectAdapter(6, 3, pool=0)


def test_linear_adapter_set_in_closed_form():
    adapter = SubjectAdapter(6, 2, pool=3, dropout=0.5)
    y = torch.tensor([[1.0, 5.0, 2.0, 8.0, 3.0, 0.0]])
    # what the map reads: the pooled responses, without dropout
    torch.testing.assert_close(adapter.map_inputs(y), torch.tensor([[5.0, 8.0, 3.0]]))
    adapter.set_linear(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]),
                       torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(adapter.eval()(y), torch.tensor([[5.5, 5.0]]))
    with pytest.raises(ValueError, match=r"expected weight \(2, 3\)"):
        adapter.set_linear(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="only a linear adapter"):
        SubjectAdapter(6, 2, kind="mlp").set_linear(torch.zeros(2, 6), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        adapter.map_inputs(torch.zeros(1, 5))


def test_info_nce_against_a_hand_computed_case():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    # cosines: row 0 of pred vs targets (0.6, 0.0); row 1 vs targets (0.8, 1.0)
    tau = 0.5
    logits = np.array([[0.6, 0.0], [0.8, 1.0]]) / tau

    def ce(rows, labels):
        return np.mean([math.log(np.exp(r).sum()) - r[k] for r, k in zip(rows, labels)])

    expected = 0.5 * (ce(logits, [0, 1]) + ce(logits.T, [0, 1]))
    assert info_nce(pred, target, tau).item() == pytest.approx(expected, rel=1e-6)
    # the loss is lower when every row's partner is its most similar row
    good = info_nce(target, target, tau)
    assert good < info_nce(target.flip(0), target, tau)


def _decoding_data(n_stimuli=80, n_targets=(20, 30), dim=6, noise=0.3, seed=0):
    """Features (n, L=2, dim) and responses that are noisy linear maps of layer 1."""
    from brainhead.train.data import EncodingData, SubjectResponses

    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n_stimuli, 2, dim)).astype(np.float32)
    ids = np.array([f"s{i:03d}" for i in range(n_stimuli)])
    subjects = {}
    for k, nt in enumerate(n_targets):
        Y = feats[:, 1] @ rng.standard_normal((dim, nt)) + noise * rng.standard_normal(
            (n_stimuli, nt))
        subjects[f"0{k}"] = SubjectResponses(
            subject=f"0{k}", modality="fmri", Y=Y.astype(np.float32), stim_id=ids,
            target_name=np.array([f"t{i}" for i in range(nt)]),
            region=np.array(["r"] * nt), folds={s: i % 5 for i, s in enumerate(ids)})
    train = ids[: int(0.75 * n_stimuli)].tolist()
    test = ids[int(0.75 * n_stimuli):].tolist()
    data = EncodingData(np.moveaxis(feats, 1, 0), ids, subjects,
                        {s: train for s in subjects})
    return data, subjects, train, test


def _fit(module, data, stimuli, tmp_path, epochs=15):
    from brainhead.train.data import loader
    from brainhead.train.trainer import TrainConfig, fit_run

    cfg = TrainConfig(max_epochs=epochs, patience=epochs, batch_size=16, progress=False,
                      min_steps_per_epoch=4)
    fit = {s: v[:-8] for s, v in stimuli.items()}
    val = {s: v[-8:] for s, v in stimuli.items()}
    train_loader = loader(data, fit, batch_size=16, n_sampled_targets=None, shuffle=True,
                          seed=1, min_batches=cfg.min_steps_per_epoch * len(fit))
    val_loader = loader(data, val, batch_size=16, n_sampled_targets=None, shuffle=False,
                        seed=0)
    return fit_run(module, train_loader, val_loader, tmp_path, cfg)


def test_decoder_retrieves_held_out_stimuli_above_chance(tmp_path):
    data, subjects, train, test = _decoding_data()
    torch.manual_seed(0)
    net = AdapterDecoder({s: sub.n_targets for s, sub in subjects.items()}, d_out=6,
                         d_shared=16, depth=1, dropout=0.0)
    module = DecoderModule(net, layers=[1], lr=1e-2, contrastive_weight=0.5)
    info = _fit(module, data, {s: train for s in subjects}, tmp_path / "run")
    assert info["epochs"] >= 1
    net.eval()
    with torch.no_grad():
        target = data.features[torch.from_numpy(data.feature_rows("00", test)), 1]
        for s in subjects:
            y = data.Y[s][torch.from_numpy(data.response_rows(s, test))]
            pred = torch.nn.functional.normalize(module(y, s)[:, 0], dim=1)
            sims = pred @ torch.nn.functional.normalize(target, dim=1).T
            top1 = (sims.argmax(1) == torch.arange(len(test))).float().mean().item()
            # 20 candidates: chance is 0.05
            assert top1 > 0.3, (s, top1)


def test_reset_tuning_trains_only_the_new_adapter(tmp_path):
    data, _, train, _ = _decoding_data(n_targets=(20, 30, 25))
    torch.manual_seed(0)
    net = AdapterDecoder({"00": 20, "01": 30}, d_out=6, d_shared=16, depth=1)
    base = DecoderModule(net, layers=[1], lr=1e-2)
    _fit(base, data, {"00": train, "01": train}, tmp_path / "base", epochs=3)
    before = copy.deepcopy(net.state_dict())
    temperature = base.log_temperature.detach().clone()
    net.add_subject("02", 25)
    tuned = DecoderModule(net, layers=[1], lr=1e-2, trainable=["02"])
    tuned.log_temperature.data.copy_(temperature)
    fresh = copy.deepcopy(net.adapters["02"].state_dict())
    _fit(tuned, data, {"02": train[:30]}, tmp_path / "tune", epochs=3)
    after = net.state_dict()
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert any(not torch.equal(net.adapters["02"].state_dict()[k], v) for k, v in fresh.items())
    assert torch.equal(tuned.log_temperature.detach(), temperature)


# --------------------------------------------------------------------------- experiment
def test_retrieval_ranks_and_permutation_null_by_hand():
    from brainhead.train.adapters import _cosine, _null_topk, retrieval_hits

    true = np.eye(3)
    pred = np.array([[1.0, 0.1, 0.0], [0.9, 0.2, 0.0], [0.0, 0.0, 1.0]])
    # row 0 finds its own stimulus first; row 1 is closer to stimulus 0 than to its own
    np.testing.assert_array_equal(retrieval_hits(pred, true), [0, 1, 0])
    sims = _cosine(pred, true)
    perms = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    # top-1 hits of each relabelling: identity 2; swap 0/1: row 1 -> stimulus 0 hits, 3
    # in all with row 2; swap 0/2: only row 1 (rank of stimulus 1 is 1) misses: 0 hits
    np.testing.assert_array_equal(_null_topk(sims, perms, (1,))[:, 0], [2, 2, 0])


def _decoder_experiment(tmp_path, *, n_stimuli=80, n_targets=(24, 30, 20), seed=0,
                        params=None, **train):
    from brainhead.simulate.signals import planted_responses, shared_bases
    from brainhead.train.adapters import DecoderExperiment
    from brainhead.train.data import SubjectResponses
    from brainhead.train.trainer import TrainConfig

    rng = np.random.default_rng(seed)
    dim, n_layers = 8, 3
    base = rng.standard_normal((n_stimuli, dim))
    feats = np.stack([base + 0.7 * rng.standard_normal((n_stimuli, dim))
                      for _ in range(n_layers)])
    ids = np.array([f"s{i:03d}" for i in range(n_stimuli)])
    planted = {"r": 2}
    bases = shared_bases(feats, planted, 6, seed)
    subjects = {}
    for k, nt in enumerate(n_targets):
        sub_rng = np.random.default_rng([seed, k])
        regions = np.array(["r"] * nt)
        Y = planted_responses(feats, regions, planted, sub_rng, shared_bases=bases)
        Y = Y + 0.5 * sub_rng.standard_normal(Y.shape)
        subjects[f"0{k}"] = SubjectResponses(
            subject=f"0{k}", modality="fmri", Y=Y.astype(np.float32), stim_id=ids,
            target_name=np.array([f"t{i}" for i in range(nt)]), region=regions,
            folds={s: i % 4 for i, s in enumerate(ids)})
    cfg = TrainConfig(**{"max_epochs": 15, "patience": 4, "batch_size": 16, "progress": False,
                         "seed": seed, "lr": 3e-3, "min_steps_per_epoch": 6, **train})
    p = {"d_shared": 32, "depth": 1, "n_permutations": 200, "adapt_fractions": [0.25, 1.0],
         **(params or {})}
    rand = np.random.default_rng(99).standard_normal(feats.shape)
    return DecoderExperiment(subjects, {"trained": feats.astype(np.float32),
                                        "random": rand.astype(np.float32)}, ids,
                             tmp_path / "out", p, cfg)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """One tiny decoder experiment: its retrieval rows, arrays and reset-tuning rows."""
    exp = _decoder_experiment(tmp_path_factory.mktemp("decoder"))
    rows, arrays = exp.cross_validate()
    return exp, pd.DataFrame(rows), arrays, pd.DataFrame(exp.adaptation())


def test_decoder_experiment_retrieval_controls_and_reset_tuning(decoded):
    from scipy.stats import binom

    exp, table, arrays, adapt = decoded
    assert set(table["control"]) == {"trained", "random", "shuffled"}
    assert len(table) == 3 * 3 * 3  # controls x subjects x layers
    assert (table["n_stimuli"] == 80).all()  # every stimulus decoded once, on its fold
    assert table["chance_top1"].round(6).eq(1 / 20).all()
    planted = table[(table["control"] == "trained") & (table["layer"] == 2)]
    assert (planted["top1"] > 3 * planted["chance_top1"]).all(), planted
    assert (planted["p_top1"] < 0.05).all(), planted
    # stimulus labels permuted in training: retrieval at chance, within the 99.9%
    # binomial interval of 80 draws at p = 1/20
    shuffled = table[table["control"] == "shuffled"]
    lo, hi = binom.interval(0.999, 80, 1 / 20)
    assert shuffled["top1"].mul(80).between(lo, hi).all(), shuffled
    assert arrays["sub-00/decoded_trained"].shape == (80, 3, 8)

    assert exp.checks["frozen_max_change"] == 0.0
    assert set(adapt["method"]) == {"reset_tuning", "scratch"}
    assert set(adapt["fraction"]) == {0.25, 1.0}
    assert (adapt["subject"] == exp.transfer_subject).all()
    # a quarter of the new subject's training stimuli (15): its adapter fitted in closed
    # form into the frozen shared space decodes better than a decoder of its own
    quarter = adapt[adapt["fraction"] == 0.25].groupby("method")["top1"].mean()
    assert quarter["reset_tuning"] > quarter["scratch"], quarter
    runs = {r["run"]: r for r in exp.runs}
    assert "adapt/0.25/reset_tuning" in runs and exp.checks["reset_alpha"] > 0


def test_reset_tuning_on_another_fold_and_subject(tmp_path):
    """What benchmarks/reset_tuning.py repeats: another outer fold, another new subject,
    scored among that fold's held-out stimuli, its runs named apart from fold 0's."""
    exp = _decoder_experiment(tmp_path, n_stimuli=48, max_epochs=2, min_steps_per_epoch=2,
                              params={"adapt_fractions": [0.5]})
    rows = pd.DataFrame(exp.adaptation(fold=1, subject="00"))
    assert set(rows["subject"]) == {"00"} and len(rows) == 2 * 3  # methods x layers
    assert (rows["n_candidates"] == len(exp.split(1)[1]["00"])).all()
    assert {r["run"] for r in exp.runs} == {"adapt-fold1-00/base",
                                            "adapt-fold1-00/0.5/reset_tuning",
                                            "adapt-fold1-00/0.5/scratch"}
    with pytest.raises(KeyError, match="unknown subject 'zz'"):
        exp.adaptation(subject="zz")


def test_reset_tuning_adapter_is_the_ridge_fit_onto_training_targets(tmp_path):
    """The closed-form adapter: ridge of the shared-space targets on the new subject's
    responses, where the targets are read from the base's training data alone."""
    from sklearn.linear_model import Ridge

    from brainhead.train.data import EncodingData

    exp = _decoder_experiment(tmp_path, n_stimuli=48, max_epochs=2, min_steps_per_epoch=2)
    train, test = exp.split(0)
    base_train = {s: train[s] for s in ("00", "01")}
    fit, val = exp.fit_val(base_train, "base")
    base, _ = exp.run("base", "trained", fit, val)
    base = base.net.cpu()
    feature_stimuli = sorted({x for v in base_train.values() for x in v})
    stimuli = train["02"][:12]
    target = exp.shared_targets(base, feature_stimuli, stimuli)
    assert target.shape == (12, base.d_shared)
    # responses of the base's subjects to held-out stimuli play no part in the targets;
    # their responses to training stimuli do
    held = exp.subjects["00"]
    rows = np.isin(held.stim_id, test["00"])
    saved = held.Y.copy()
    try:
        held.Y[rows] = 100.0
        np.testing.assert_array_equal(exp.shared_targets(base, feature_stimuli, stimuli),
                                      target)
        held.Y[~rows] += 1.0
        assert not np.allclose(exp.shared_targets(base, feature_stimuli, stimuli), target)
    finally:
        held.Y[:] = saved
    with pytest.raises(ValueError, match="feature_stimuli"):
        exp.shared_targets(base, None, stimuli)

    net = copy.deepcopy(base)
    net.add_subject("02", exp.subjects["02"].n_targets)
    data = EncodingData(exp.features["trained"], exp.feature_ids, {"02": exp.subjects["02"]},
                        {"02": train["02"]}, feature_stimuli=feature_stimuli)
    alpha = exp.fit_new_adapter(net, base, data, "02", stimuli, feature_stimuli)
    y = data.Y["02"][torch.from_numpy(data.response_rows("02", stimuli))]
    ref = Ridge(alpha=alpha).fit(y.double().numpy(), target)
    with torch.no_grad():
        out = net.eval().embed(y, "02").double().numpy()
    np.testing.assert_allclose(out, ref.predict(y.double().numpy()), rtol=1e-4, atol=1e-4)
    # everything but the new adapter is the base's
    for k, v in base.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_decoder_section_of_the_report(decoded, tmp_path):
    import json

    import mne

    from brainhead.report.decoders import adapters_section, decoder_rows
    from brainhead.report.figures import FigureWriter
    from brainhead.report.sections import ReportBuilder, ReportContext

    exp, table, _, adapt = decoded
    folder = tmp_path / "models" / "adapters" / "fmri"
    folder.mkdir(parents=True)
    table.to_csv(folder / "retrieval.tsv", sep="\t", index=False)
    adapt.to_csv(folder / "adaptation.tsv", sep="\t", index=False)
    (folder / "summary.json").write_text(json.dumps({
        "modality": "fmri", "model": "toy", "subjects": list(exp.subjects), "n_folds": 4,
        "runs": exp.runs, "seconds": 1.0, "transfer_subject": exp.transfer_subject,
        "settings": {"adapters": exp.params}}))
    rows = decoder_rows(pd.read_csv(folder / "retrieval.tsv", sep="\t", dtype={"subject": str}))
    assert [r["subject"] for r in rows] == sorted(exp.subjects)
    assert all(r["top1"] >= r["random"] or r["layer"] != 2 for r in rows)
    report = mne.Report(title="t")
    writer = FigureWriter(tmp_path / "figures")
    builder = ReportBuilder(report, writer)
    ctx = ReportContext(study="t", description="", summary=pd.DataFrame(),
                        best=pd.DataFrame(), truth=None, model_dirs=[folder])
    adapters_section(builder, ctx)
    assert [f["title"] for f in builder.added] == ["fmri: decoding layer curve",
                                                   "fmri: reset-tuning"]
    assert all(f["png"].stat().st_size > 0 for f in builder.added)
    writer.commit()
    names = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert "adapters_fmri_all-subjects_all-targets_top1_layer-curve.png" in names, names


def test_encoding_beside_decoding_figure_wraps_many_subjects():
    """Seven subjects, five per row: two blocks of an encoding row above a decoding row,
    each subject's panels in the same column of its block."""
    from brainhead.report.decoders import encoding_decoding_figure
    from brainhead.report.figures import pyplot

    subjects = [f"{i:02d}" for i in range(7)]
    retrieval = pd.DataFrame([{"subject": s, "control": c, "layer": k, "chance_top1": 0.1,
                               "top1": 0.1 * i + k / 100} for i, s in enumerate(subjects)
                              for c in ("trained", "random") for k in range(3)])
    encoding = pd.DataFrame([{"subject": s, "region": "r", "control": c, "layer": k,
                              "score": 0.01 * i} for i, s in enumerate(subjects)
                             for c in ("trained", "random") for k in range(3)])
    fig = encoding_decoding_figure(encoding, retrieval, max_columns=5)
    axes = np.array(fig.axes).reshape(4, 5)
    assert [ax.get_visible() for ax in axes[2]] == [True] * 2 + [False] * 3
    for i, s in enumerate(subjects):
        block, col = divmod(i, 5)
        top, bottom = axes[2 * block, col], axes[2 * block + 1, col]
        assert top.get_title() == f"sub-{s}"
        trained = next(line for line in bottom.lines if line.get_label() == "trained")
        np.testing.assert_allclose(trained.get_ydata(), 0.1 * i + np.arange(3) / 100)
        assert {line.get_ydata()[0] for line in top.lines} == {0.01 * i}
    pyplot().close(fig)


# --------------------------------------------------------------------------- determinism, resume
HOLD = "hold.json"
PAUSE_EPOCH = 2
#: a fold-0 run of a small study, long enough to be killed in the middle
SMALL = {"n_stimuli": 48, "max_epochs": 5, "patience": 100, "min_steps_per_epoch": 3}


def decode_fold0(exp):
    """``exp.run`` on outer fold 0: (run info, decoded test features of every subject)."""
    train, test = exp.split(0)
    fit, val = exp.fit_val(train, "cv0")
    module, data = exp.run("fold0", "trained", fit, val)
    return exp.runs[-1], {s: exp.decode(module, data, s, test[s]) for s in exp.subjects}


def train_in(root: Path) -> dict:
    """Train the decoder on fold 0 under ``root`` and save what the tests compare.

    Writes ``root/decoded_<subject>.npy``, ``root/info.json`` and appends each epoch
    that starts to ``root/epochs.txt``; with ``root/hold.json`` (test hook) training
    waits, to be killed, at the start of epoch :data:`PAUSE_EPOCH`.
    """
    from brainhead.train import adapters

    hold = (root / HOLD).is_file()

    class Recording(adapters.DecoderModule):
        def on_train_epoch_start(self):
            with open(root / "epochs.txt", "a") as fid:
                fid.write(f"{self.current_epoch}\n")
            if hold and self.current_epoch == PAUSE_EPOCH:
                (root / "paused").write_text(str(self.current_epoch))
                time.sleep(3000)

    original, threads = adapters.DecoderModule, torch.get_num_threads()
    adapters.DecoderModule = Recording
    torch.set_num_threads(1)
    try:
        exp = _decoder_experiment(root, **SMALL)
        info, decoded = decode_fold0(exp)
    finally:
        adapters.DecoderModule = original
        torch.set_num_threads(threads)
    for s, pred in decoded.items():
        np.save(root / f"decoded_{s}.npy", pred)
    (root / "info.json").write_text(json.dumps(info))
    return info


@pytest.fixture(scope="module", autouse=True)
def held_child(tmp_path_factory):
    """A training process started with the module (torch and Lightning load while the
    other tests run); it waits, to be killed, at the start of epoch PAUSE_EPOCH."""
    root = tmp_path_factory.mktemp("killed")
    (root / HOLD).write_text("{}")
    with child_process(__file__, root) as proc:
        yield root, proc


def _outputs(root: Path, run: dict):
    metrics = (root / "out" / run["dir"] / "metrics.csv").read_text()
    return metrics, {p.stem: np.load(p) for p in sorted(root.glob("decoded_*.npy"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    info = train_in(root)
    assert info["epochs"] == SMALL["max_epochs"] and not info["resumed"]
    return root, info


def test_same_seed_same_decoder_retrieval_and_crowd(uninterrupted, tmp_path):
    root, info = uninterrupted
    again = tmp_path / "again"
    again.mkdir()
    info2 = train_in(again)
    metrics, decoded = _outputs(again, info2)
    ref_metrics, ref_decoded = _outputs(root, info)
    assert metrics == ref_metrics
    assert decoded.keys() == ref_decoded.keys() and len(decoded) == 3
    for s in decoded:
        assert np.array_equal(decoded[s], ref_decoded[s]), s
    # another seed trains another decoder
    other = _decoder_experiment(tmp_path / "seed1", seed=1, **SMALL)
    _, decoded_other = decode_fold0(other)
    assert not np.array_equal(decoded_other["00"], decoded["decoded_00"])

    # the joint/per-subject comparison: its table, and the same table again
    crowd = [pd.DataFrame(_decoder_experiment(tmp_path / f"crowd{i}", max_epochs=2,
                                              n_stimuli=48,
                                              params={"crowd_fractions": [0.5]}).crowd())
             for i in range(2)]
    pd.testing.assert_frame_equal(crowd[0], crowd[1])
    table = crowd[0]
    assert set(table["method"]) == {"joint", "per_subject"}
    assert set(table["subject"]) == {"00", "01", "02"}
    assert len(table) == 3 * 2 * 3  # subjects x methods x layers
    assert (table["n_candidates"] == 12).all()  # fold 0's held-out stimuli
    # each subject its own half of its 36 training stimuli
    assert (table["n_stimuli"] == 18).all()


# The kill test comes last: its training process starts with the module and waits.
def test_sigkill_then_resume_equals_uninterrupted(held_child, uninterrupted, caplog):
    import logging

    from test_train_resume import _kill, _wait_for

    from brainhead.train.checkpoints import load_checkpoint

    root, proc = held_child
    ref_root, ref_info = uninterrupted
    _wait_for(root / "paused", proc)
    _kill(proc)
    assert not (root / "info.json").exists()
    last = next((root / "out" / "runs").glob("*/checkpoints/last.ckpt"))
    assert load_checkpoint(last)["epoch"] == PAUSE_EPOCH - 1
    (root / HOLD).unlink()
    with caplog.at_level(logging.INFO, logger="brainhead"):
        info = train_in(root)  # the same work again, here in the test process
    assert info["resumed"] is True and "resuming from" in caplog.text
    epochs = [int(x) for x in (root / "epochs.txt").read_text().split()]
    assert epochs == [*range(PAUSE_EPOCH + 1), *range(PAUSE_EPOCH, SMALL["max_epochs"])]
    metrics, decoded = _outputs(root, info)
    ref_metrics, ref_decoded = _outputs(ref_root, ref_info)
    assert metrics == ref_metrics
    for s in ref_decoded:
        assert np.array_equal(decoded[s], ref_decoded[s]), s


if __name__ == "__main__":
    from brainhead._logging import setup_logging

    setup_logging()
    train_in(Path(sys.argv[1]))
