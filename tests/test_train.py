"""Training machinery and the voxel encoder: shapes, sampling, splits, transfer, specs.

Resume after SIGKILL, determinism and weights-only loading are in test_train_resume.py;
the encoder's results on the demo data are asserted in test_workflow.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from brainhead.simulate.signals import planted_responses, shared_bases
from brainhead.splits import (
    LeakageError,
    check_disjoint,
    joint_folds,
    leakage_free_groups,
    outer_folds,
    stimulus_folds,
    validation_split,
)
from brainhead.train.data import EncodingData, StimulusBatches, SubjectResponses, loader
from brainhead.train.trainer import TrainConfig, _quiet_lightning
from brainhead.train.voxel import VoxelEncoderExperiment, ridge_init_projection
from encoders.voxel_xattn import VoxelCrossAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- the model
def test_encoder_shapes_with_different_target_counts():
    torch.manual_seed(0)
    net = VoxelCrossAttention({"a": 7, "b": 13}, [16] * 4, d_model=8, n_heads=2)
    x = torch.randn(5, 4, 16)
    assert net(x, "a").shape == (5, 7)
    assert net(x, "b").shape == (5, 13)
    pred, attn = net(x, "b", torch.tensor([0, 3, 12]), return_attention=True)
    assert pred.shape == (5, 3) and attn.shape == (5, 3, 4)
    torch.testing.assert_close(attn.sum(-1), torch.ones(5, 3))
    # with layer keys the attention is one distribution per target, the same for every stimulus
    torch.testing.assert_close(attn[0], attn[4])
    # a subset of targets predicts exactly what the full call predicts for them
    net.eval()
    full = net(x, "b")
    torch.testing.assert_close(net(x, "b", torch.tensor([2, 5])), full[:, [2, 5]])
    with pytest.raises(KeyError, match="unknown subject"):
        net(x, "c")
    with pytest.raises(ValueError, match="features must be"):
        net(torch.randn(5, 3, 16), "a")


def test_encoder_token_keys_and_unequal_layer_widths():
    torch.manual_seed(0)
    net = VoxelCrossAttention({"a": 6}, [8, 12, 10], d_model=8, n_heads=2, keys="token",
                              shared_projection=False)
    feats = [torch.randn(4, d) for d in (8, 12, 10)]
    pred, attn = net(feats, "a", return_attention=True)
    assert pred.shape == (4, 6) and attn.shape == (4, 6, 3)
    with pytest.raises(ValueError, match="shared projection needs layers of one width"):
        VoxelCrossAttention({"a": 6}, [8, 12], d_model=8, n_heads=2, shared_projection=True)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        VoxelCrossAttention({"a": 6}, [8], d_model=9, n_heads=2)


def test_add_subject_and_freeze_shared_leave_others_alone():
    torch.manual_seed(0)
    net = VoxelCrossAttention({"a": 5}, [8] * 3, d_model=8, n_heads=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.add_subject("new", 9)
    net.freeze_shared(["new"])
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"queries.new", "readout_w.new", "readout_b.new"}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = net(torch.randn(6, 3, 8), "new").pow(2).mean() + net(
            torch.randn(6, 3, 8), "new").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = net.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert after["readout_b.new"].shape == (9, 1)
    assert not torch.equal(after["readout_b.new"], torch.zeros(9, 1))
    with pytest.raises(ValueError, match="already has targets"):
        net.add_subject("a", 3)


# --------------------------------------------------------------------------- batches
def test_target_sampling_plan():
    stimuli = {"a": [f"s{i}" for i in range(10)], "b": [f"s{i}" for i in range(5, 12)]}
    n_targets = {"a": 50, "b": 8}
    plan = StimulusBatches(stimuli, n_targets, batch_size=4, n_sampled_targets=20, seed=3)
    plan.set_epoch(0)
    first = list(plan)
    plan.set_epoch(0)
    assert list(plan) == first  # a function of (seed, epoch): identical after a resume
    plan.set_epoch(1)
    assert list(plan) != first
    seen = {"a": [], "b": []}
    for subject, stims, targets in first:
        assert set(stims) <= set(stimuli[subject]) and len(stims) <= 4
        if subject == "a":
            assert len(targets) == 20 == len(set(targets))
            assert all(0 <= t < 50 for t in targets)
        else:
            assert targets is None  # fewer targets than the sample size: all of them
        seen[subject] += list(stims)
    for subject in stimuli:  # every stimulus once per epoch
        assert sorted(seen[subject]) == sorted(stimuli[subject])
    # data-parallel shards partition the plan
    shards = [list(StimulusBatches(stimuli, n_targets, 4, 20, seed=3, rank=r, world_size=2))
              for r in range(2)]
    assert sorted(map(repr, shards[0] + shards[1])) == sorted(map(repr, first))


def test_validation_plan_visits_every_pair_once():
    stimuli = {"a": [f"s{i}" for i in range(7)]}
    plan = StimulusBatches(stimuli, {"a": 23}, batch_size=3, n_sampled_targets=10,
                           shuffle=False)
    pairs = [(s, t) for _, stims, targets in plan for s in stims for t in targets]
    assert len(pairs) == len(set(pairs)) == 7 * 23


def _subject(name, Y, stim_ids, regions, groups):
    return SubjectResponses(name, "fmri", Y.astype(np.float32), np.asarray(stim_ids),
                            np.array([f"t{i}" for i in range(Y.shape[1])]), np.asarray(regions),
                            stimulus_folds(stim_ids, groups))


def test_encoding_data_scales_on_training_stimuli_only():
    rng = np.random.default_rng(0)
    ids = np.array([f"s{i}" for i in range(30)])
    feats = rng.standard_normal((3, 30, 6))
    sub = _subject("a", rng.standard_normal((30, 4)), ids, ["r"] * 4, np.arange(30) % 3)
    train = {"a": list(ids[:20])}
    a = EncodingData(feats, ids, {"a": sub}, train)
    changed = feats.copy()
    changed[:, 20:] += 100.0  # test stimuli only
    sub2 = _subject("a", sub.Y.copy(), ids, ["r"] * 4, np.arange(30) % 3)
    sub2.Y[20:] -= 50.0
    b = EncodingData(changed, ids, {"a": sub2}, train)
    torch.testing.assert_close(a.features[:20], b.features[:20])
    torch.testing.assert_close(a.Y["a"][:20], b.Y["a"][:20])


def test_batches_gathered_on_another_device_are_the_same_batches():
    # On one GPU the training batches are gathered from a copy of the data there
    # (EncodingData.on). The "meta" device stands in for the GPU: its tensors have
    # shapes and dtypes but no values, so this checks where a batch is made; the
    # values are checked against the host's batches from the same plan on the CPU.
    rng = np.random.default_rng(1)
    ids = np.array([f"s{i}" for i in range(40)])
    subjects = {n: _subject(n, rng.standard_normal((40, t)), ids, ["r"] * t, np.arange(40) % 4)
                for n, t in (("a", 9), ("b", 13))}
    data = EncodingData(rng.standard_normal((3, 40, 6)), ids, subjects,
                        {n: list(ids[:30]) for n in subjects})
    features, Y = data.on("cpu")   # where the data is: the tensors themselves, no copy
    assert features is data.features and Y is data.Y
    assert data.nbytes == 40 * 3 * 6 * 4 + 40 * (9 + 13) * 4
    meta = data.on("meta")
    assert data.on("meta") is meta                      # copied once, then kept
    assert meta[0].device.type == "meta" and meta[1]["b"].shape == (40, 13)
    assert data.features.device.type == "cpu"           # the host tensors stay
    stimuli = {n: list(ids[:30]) for n in subjects}
    for sampled in (4, None):
        kw = {"batch_size": 7, "n_sampled_targets": sampled, "shuffle": True, "seed": 3}
        host = list(loader(data, stimuli, **kw))
        here = list(loader(data, stimuli, device="cpu", **kw))
        away = list(loader(data, stimuli, device="meta", **kw))
        assert len(host) == len(here) == len(away) > 0
        for h, c, m in zip(host, here, away):
            assert h["subject"] == c["subject"] == m["subject"]
            assert h["stimuli"] == c["stimuli"] == m["stimuli"]
            for key in ("features", "y", "targets"):
                if h[key] is None:
                    assert c[key] is None and m[key] is None
                    continue
                torch.testing.assert_close(c[key], h[key], rtol=0, atol=0)
                assert m[key].device.type == "meta" and m[key].shape == h[key].shape
                assert m[key].dtype == h[key].dtype
            # the host's batch is the planned cells of the host's tensors
            rows = data.response_rows(h["subject"], h["stimuli"])
            cols = slice(None) if h["targets"] is None else h["targets"].numpy()
            np.testing.assert_array_equal(
                h["y"].numpy(), data.Y[h["subject"]].numpy()[rows][:, cols])


def _planted_subspace_data(n_stimuli=80, dim=20, rank=3, n_layers=3, layer=1, seed=0,
                           stimuli=None):
    """Two subjects whose targets read out one rank-``rank`` subspace of ``layer``."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"s{i:03d}" for i in range(n_stimuli)])
    feats = rng.standard_normal((n_layers, n_stimuli, dim))
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0]
    subjects = {}
    for name, n_t in (("a", 30), ("b", 40)):
        Y = feats[layer] @ basis @ rng.standard_normal((rank, n_t))
        Y += 0.3 * Y.std() * rng.standard_normal(Y.shape)
        subjects[name] = _subject(name, Y, ids, ["r"] * n_t, np.arange(n_stimuli) % 5)
    stimuli = stimuli or {s: list(ids[:60]) for s in subjects}
    data = EncodingData(feats, ids, subjects, stimuli)
    return data, basis, stimuli


@pytest.mark.parametrize("shared", [True, False])
def test_ridge_init_projection_finds_the_read_out_subspace(shared):
    data, basis, stimuli = _planted_subspace_data()
    torch.manual_seed(0)
    net = VoxelCrossAttention({"a": 30, "b": 40}, data.layer_dims, d_model=4,
                              shared_projection=shared)
    norms = torch.stack([p.weight.norm(dim=1).mean() for p in net.proj])
    spectra = ridge_init_projection(net, data, stimuli)
    assert spectra.shape == (1 if shared else 3, 20)
    assert (np.diff(spectra, axis=1) <= 1e-9).all()          # largest first
    # the planted layer's projection spans the read-out subspace: the cosines of the
    # principal angles between its top-3 rows and the basis are all near 1
    proj = net.proj[0 if shared else 1].weight.detach().double().numpy()
    rows = np.linalg.qr(proj[:3].T)[0]
    cosines = np.linalg.svd(rows.T @ basis, compute_uv=False)
    assert cosines.min() > 0.95, cosines
    # the rows keep PyTorch's initial scale, and biases start at zero
    for p, norm in zip(net.proj, norms):
        torch.testing.assert_close(p.weight.norm(dim=1), norm.expand(4))
        assert not p.bias.any()


def test_ridge_init_projection_reads_only_the_given_stimuli():
    data, _, stimuli = _planted_subspace_data()
    nets = []
    for change in (False, True):
        if change:  # responses to stimuli outside the fitting set do not matter
            for s in data.Y:
                data.Y[s][60:] = torch.randn_like(data.Y[s][60:]) * 100
        torch.manual_seed(0)
        net = VoxelCrossAttention({"a": 30, "b": 40}, data.layer_dims, d_model=4)
        ridge_init_projection(net, data, stimuli)
        nets.append(net.proj[0].weight.detach().clone())
    torch.testing.assert_close(nets[0], nets[1])
    # a subject with fewer than 3 fitting stimuli is left out rather than failing
    torch.manual_seed(0)
    net = VoxelCrossAttention({"a": 30, "b": 40}, data.layer_dims, d_model=4)
    ridge_init_projection(net, data, {"a": stimuli["a"], "b": stimuli["b"][:2]})
    assert torch.isfinite(net.proj[0].weight).all()


# --------------------------------------------------------------------------- splits
def test_stimulus_folds_are_the_align_folds():
    """The encoder tests each stimulus in the fold where ridge tests it."""
    from brainhead.align.scores import average_repeats

    rng = np.random.default_rng(1)
    stims = np.array([f"s{i:02d}" for i in range(40)])
    trial_stim = np.concatenate([rng.permutation(stims), rng.permutation(stims)])
    trial_group = np.repeat(["r1", "r2", "r3", "r4"], 20)
    folds = stimulus_folds(trial_stim, trial_group)
    _, uniq, group, _ = average_repeats(np.zeros((80, 1)), trial_stim, trial_group)
    groups = leakage_free_groups(uniq, group)
    for k, (train, test) in enumerate(outer_folds(groups)):
        assert {folds[s] for s in uniq[test]} == {k}
        assert not set(uniq[train]) & set(uniq[test])


def test_joint_folds_keep_each_stimulus_on_one_side_for_every_subject():
    ids = [f"s{i:02d}" for i in range(30)]
    same = {"a": stimulus_folds(ids, np.arange(30) % 10), "b": stimulus_folds(ids, np.arange(30) % 10)}
    folds, unmatched = joint_folds(same)
    assert unmatched == [] and folds == same["a"]
    # subjects whose own splits disagree get one study-level split
    other = {"a": stimulus_folds(ids, np.arange(30) % 10),
             "b": stimulus_folds(ids[::-1], np.arange(30) // 10)}
    folds, unmatched = joint_folds(other, seed=4)
    assert unmatched  # their own ridge folds differ from the shared one
    assert set(folds) == set(ids) and len(set(folds.values())) == 5
    for k in range(5):
        test = {s for s, f in folds.items() if f == k}
        train = set(ids) - test
        check_disjoint(train, test)


def test_check_disjoint_and_validation_split():
    with pytest.raises(LeakageError, match="1 stimulus"):
        check_disjoint(["a", "b"], ["b", "c"], where="sub-01 fold 2")
    train = [f"s{i}" for i in range(40)]
    fit, val = validation_split(train, 0.25, seed=1)
    assert len(val) == 10 and not set(fit) & set(val) and set(fit) | set(val) == set(train)
    assert validation_split(train[::-1], 0.25, seed=1) == (fit, val)
    assert validation_split(train, 0.25, seed=2)[1] != val


def test_experiment_split_raises_on_a_leaking_assignment(tmp_path):
    exp = _experiment(tmp_path, n_stimuli=30, n_targets=(6, 8))
    exp.folds = dict(exp.folds)
    train, test = exp.split(0)
    assert not set(train["00"]) & set(test["00"])
    # a corrupted split that puts a stimulus on both sides for different subjects
    from brainhead.train.data import check_split

    with pytest.raises(LeakageError):
        check_split({"00": train["00"]}, {"01": train["00"][:1]}, where="test")


# --------------------------------------------------------------------------- experiment
def _experiment(tmp_path, *, n_stimuli=60, n_targets=(20, 30, 25), rank=4, noise=0.5, seed=0,
                params=None, epochs=12, dim=12):
    rng = np.random.default_rng(seed)
    n_layers = 4
    base = rng.standard_normal((n_stimuli, dim))
    feats = np.stack([base + 0.5 * rng.standard_normal((n_stimuli, dim))
                      for _ in range(n_layers)])
    ids = np.array([f"s{i:03d}" for i in range(n_stimuli)])
    planted = {"p": 1, "a": 3}
    bases = shared_bases(feats, planted, rank, seed) if rank else None
    subjects = {}
    for k, nt in enumerate(n_targets):
        regions = np.array(["p", "a"])[np.arange(nt) * 2 // nt]
        sub_rng = np.random.default_rng([seed, k])
        Y = planted_responses(feats, regions, planted, sub_rng, shared_bases=bases)
        Y = Y + noise * sub_rng.standard_normal(Y.shape)
        subjects[f"0{k}"] = _subject(f"0{k}", Y, ids, regions, np.arange(n_stimuli) % 5)
    cfg = TrainConfig(max_epochs=epochs, patience=4, batch_size=16, progress=False, seed=seed)
    p = {"d_model": 8, "n_sampled_targets": 16, "transfer_fractions": [0.25, 1.0],
         "crowd_fractions": [1.0, 0.25], **(params or {})}
    rand = np.random.default_rng(99).standard_normal(feats.shape)
    return VoxelEncoderExperiment(subjects, {"trained": feats, "random": rand}, ids,
                                  tmp_path / "out", p, cfg)


def test_batches_are_gathered_on_the_gpu_only_when_training_on_one_that_has_room(
        tmp_path, monkeypatch):
    exp = _experiment(tmp_path, epochs=1)
    data = EncodingData(exp.features["trained"], exp.feature_ids, exp.subjects,
                        {s: list(exp.feature_ids[:40]) for s in exp.subjects})
    assert exp._batch_device(data) is None                  # the CPU: on the host
    free = {"bytes": 10 * data.nbytes}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free["bytes"], 2**40))
    exp.device = "cuda"
    assert exp._batch_device(data) == "cuda"
    free["bytes"] = 2 * data.nbytes - 1                     # more than half of what is free
    assert exp._batch_device(data) is None
    free["bytes"] = 10 * data.nbytes
    one_gpu = exp.cfg
    for key, value in (("devices", 2), ("num_nodes", 2)):   # each DDP process: the host
        exp.cfg = dataclasses.replace(one_gpu, **{key: value})
        assert not exp.cfg.single_process
        assert exp._batch_device(data) is None


def test_transfer_trains_only_the_new_subject(tmp_path):
    exp = _experiment(tmp_path)
    rows = exp.transfer()
    assert exp.checks["frozen_max_change"] == 0.0
    methods = {(r["fraction"], r["method"]) for r in rows}
    assert methods == {(0.25, "transfer"), (0.25, "alone"), (1.0, "transfer"), (1.0, "alone")}
    assert {r["subject"] for r in rows} == {exp.transfer_subject}
    runs = {r["run"] for r in exp.runs}
    assert "transfer/base" in runs and "transfer/0.25/transfer" in runs


def test_cross_validation_scores_every_stimulus_once(tmp_path):
    exp = _experiment(tmp_path, n_targets=(10, 14))
    cv = exp.cross_validate()
    assert set(cv) == {"trained", "random"}
    for control, per in cv.items():
        for s, res in per.items():
            sub = exp.subjects[s]
            assert res["pred"].shape == sub.Y.shape and np.isfinite(res["pred"]).all()
            assert res["r"].shape == (sub.n_targets,)
            assert len(res["r_folds"]) == exp.n_folds
            np.testing.assert_allclose(res["attn"].sum(1), 1.0, rtol=1e-5)
    trained = np.mean([per["r"].mean() for per in cv["trained"].values()])
    random = np.mean([per["r"].mean() for per in cv["random"].values()])
    assert trained > 0.3 and trained > random + 0.2, (trained, random)


def test_crowd_runs_joint_and_per_subject_models(tmp_path):
    """The crowd comparison trains one joint model and one model per subject per fraction,
    and reuses cross-validation's fold-0 model at fraction 1 (same definition)."""
    exp = _experiment(tmp_path, n_targets=(10, 12))
    exp.cross_validate()
    n_before = len(exp.runs)
    rows = exp.crowd()
    runs = exp.runs[n_before:]
    assert {r["run"] for r in runs} == {"crowd/1.0/joint", "crowd/0.25/joint",
                                        "crowd/1.0/single-00", "crowd/1.0/single-01",
                                        "crowd/0.25/single-00", "crowd/0.25/single-01"}
    reused = {r["run"]: r.get("reused", False) for r in runs}
    assert reused["crowd/1.0/joint"] and not reused["crowd/0.25/joint"]
    n_stim = {(r["subject"], r["fraction"]) for r in rows}
    assert n_stim == {(s, f) for s in ("00", "01") for f in (1.0, 0.25)}


# --------------------------------------------------------------------------- specs
@pytest.mark.parametrize("train, message", [
    ({"famillies": ["voxel_xattn"]}, "unknown key 'train.famillies'"),
    ({"max_epochs": "ten"}, "key 'train.max_epochs'"),
    ({"families": ["voxel_attn"]}, "key 'train.families.0'"),
    ({"voxel_xattn": {"d_model": 10, "n_heads": 3}}, "key 'train.voxel_xattn.n_heads'"),
    ({"model": "gpt"}, "key 'train.model'"),
    ({"voxel_xattn": {"init": "zeros"}}, "key 'train.voxel_xattn.init'"),
    ({"adapters": {"reset_init": "zeros"}}, "key 'train.adapters.reset_init'"),
    ({"adapters": {"reset_lr": 0}}, "key 'train.adapters.reset_lr'"),
])
def test_train_section_errors_name_file_and_key(tmp_path, train, message):
    import shutil

    import yaml

    from brainhead.specs import SpecError, load_study

    from conftest import DEMO

    study = tmp_path / "demo"
    shutil.copytree(DEMO, study)
    cfg = yaml.safe_load((study / "study.yaml").read_text())
    cfg["train"] = train
    (study / "study.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SpecError) as err:
        load_study(study)
    text = str(err.value)
    assert message in text and "study.yaml" in text, text


def test_subject_train_keys(tmp_path):
    import shutil

    from brainhead.specs import SpecError, load_study

    from conftest import DEMO

    study = tmp_path / "demo"
    shutil.copytree(DEMO, study)
    for sub in ("f01", "f02"):
        path = study / "subjects" / f"sub-{sub}.yaml"
        path.write_text(path.read_text() + "train:\n  transfer_holdout: true\n")
    with pytest.raises(SpecError, match="sub-f02.yaml: subject 'f02': key 'train.transfer_holdout'"):
        load_study(study)
    path = study / "subjects" / "sub-f02.yaml"
    path.write_text(path.read_text().replace("transfer_holdout: true", "include: maybe"))
    with pytest.raises(SpecError, match="key 'train.include'"):
        load_study(study)


# --------------------------------------------------------------------------- ridge read-outs
def test_ridge_readouts_choose_the_penalty_of_the_smallest_leave_one_out_error():
    """Against a plain loop: refit without each stimulus in turn, for every penalty."""
    from brainhead.train.readout import ridge_readouts

    rng = np.random.default_rng(3)
    n, d, T = 15, 4, 3
    Z = rng.standard_normal((T, n, d))
    Y = np.einsum("tnd,td->tn", Z, rng.standard_normal((T, d))) + rng.standard_normal((T, n))
    alphas = [0.1, 3.0, 100.0]

    def fit(z, y, a):
        zm, ym = z.mean(0), y.mean()
        w = np.linalg.solve((z - zm).T @ (z - zm) + a * np.eye(d), (z - zm).T @ (y - ym))
        return w, ym - zm @ w

    W, b, chosen = ridge_readouts(torch.from_numpy(Z), torch.from_numpy(Y), alphas)
    for t in range(T):
        loo = []
        for a in alphas:
            err = 0.0
            for i in range(n):
                keep = np.arange(n) != i
                w, c = fit(Z[t, keep], Y[t, keep], a)
                err += (Y[t, i] - Z[t, i] @ w - c) ** 2
            loo.append(err)
        best = alphas[int(np.argmin(loo))]
        assert chosen[t].item() == best
        w, c = fit(Z[t], Y[t], best)
        np.testing.assert_allclose(W[t].numpy(), w, rtol=1e-8, atol=1e-10)
        assert b[t].item() == pytest.approx(c, rel=1e-8, abs=1e-10)
    with pytest.raises(ValueError, match="positive"):
        ridge_readouts(torch.from_numpy(Z), torch.from_numpy(Y), [0.0])


@pytest.mark.parametrize("keys", ["layer", "token"])
def test_attended_vectors_times_readouts_are_the_predictions(keys):
    torch.manual_seed(0)
    net = VoxelCrossAttention({"a": 9}, [6, 6, 6], d_model=8, n_heads=2, keys=keys).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
        x = torch.randn(5, 3, 6)
        t = torch.tensor([0, 4, 8])
        z = net.attended(x, "a", t)
        assert z.shape == (5, 3, 8)
        expected = (z * net.readout_w["a"][t]).sum(-1) + net.readout_b["a"][t, 0]
        torch.testing.assert_close(net(x, "a", t), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keys", ["layer", "token"])
def test_layer_terms_sum_to_the_predictions(keys):
    torch.manual_seed(1)
    net = VoxelCrossAttention({"a": 7}, [6, 6, 6, 6], d_model=8, n_heads=2, keys=keys).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
        x = torch.randn(5, 4, 6)
        t = torch.tensor([1, 2, 6])
        terms = net.layer_terms(x, "a", t)
        assert terms.shape == (5, 3, 4)
        torch.testing.assert_close(net(x, "a", t), terms.sum(-1) + net.readout_b["a"][t, 0],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net.layer_terms(x, "a")[:, t], terms)


def test_layer_shares_of_the_prediction_variance():
    from brainhead.train.voxel import variance_shares

    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 2))
    # target 0: layer 1 alone drives it; target 1: layers 0 and 2 equally, layer 1 adds a
    # constant (no variance, no share)
    terms = np.zeros((40, 2, 3))
    terms[:, 0, 1] = base[:, 0]
    terms[:, 1, 0] = terms[:, 1, 2] = base[:, 1]
    terms[:, 1, 1] = 5.0
    shares = variance_shares(terms)
    np.testing.assert_allclose(shares, [[0, 1, 0], [0.5, 0, 0.5]], atol=1e-12)
    np.testing.assert_allclose(variance_shares(np.ones((4, 1, 2))), [[np.nan, np.nan]])


def test_refit_readouts_changes_only_that_subjects_readouts():
    from brainhead.train.readout import refit_readouts

    torch.manual_seed(1)
    net = VoxelCrossAttention({"a": 7, "b": 5}, [6, 6], d_model=4, dropout=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(20, 2, 6)
    with torch.no_grad():
        z = net.attended(x, "a")
        true_w = torch.randn(7, 4)
        y = (z * true_w).sum(-1) + 0.5          # an exact linear read-out
    alpha = refit_readouts(net, x, y, "a", alphas=[1e-6, 1e4])
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"readout_w.a", "readout_b.a"}
    assert (alpha == 1e-6).all()
    torch.testing.assert_close(after["readout_w.a"], true_w, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(after["readout_b.a"], torch.full((7, 1), 0.5), rtol=1e-3,
                               atol=1e-3)
    with pytest.raises(ValueError, match="responses must be"):
        refit_readouts(net, x, y[:, :3], "a")


def test_dense_and_sparse_per_target_updates_train_the_same_model():
    """When every step covers all targets, fused dense Adam follows the lazy sparse Adam.

    The two place Adam's eps differently in the bias correction, which moves weights
    whose gradients are near eps (some attention queries here) by up to ~1e-3 after a
    few steps of lr 3e-2; a wrong learning rate, a weight decay or a missed parameter
    group would differ by about one step (1e-2) at once.
    """
    import copy

    from brainhead.train.modules import EncoderModule, encoding_loss

    torch.manual_seed(0)
    base = VoxelCrossAttention({"a": 6, "b": 4}, [5, 5], d_model=4, dropout=0.0)
    with torch.no_grad():
        for p in base.parameters():
            p.normal_(0.0, 0.5)
    x, ys = torch.randn(8, 2, 5), {"a": torch.randn(8, 6), "b": torch.randn(8, 4)}
    nets = {}
    for sparse in (True, False):
        net = copy.deepcopy(base)
        module = EncoderModule(net, lr=1e-2, subject_lr_scale=3.0, sparse_targets=sparse)
        optimizers = module.configure_optimizers()
        assert type(optimizers[-1]).__name__ == ("SparseAdam" if sparse else "Adam")
        for step in range(6):
            subject = "ab"[step % 2]
            targets = torch.arange(net.n_targets(subject))
            for opt in optimizers:
                opt.zero_grad()
            encoding_loss(net(x, subject, targets), ys[subject]).backward()
            for opt in optimizers:
                opt.step()
        nets[sparse] = net
    for name, value in nets[True].state_dict().items():
        torch.testing.assert_close(nets[False].state_dict()[name], value, rtol=0,
                                   atol=2e-3, msg=name)
    assert not torch.equal(nets[True].readout_w["a"], base.readout_w["a"])


@pytest.mark.parametrize("single_process", [True, False])
def test_srun_hint_is_silenced_only_for_single_process_jobs(single_process):
    # Lightning hints at `srun` wherever SLURM's tools are installed; a one-device job
    # is one process whatever placed it, while several GPUs or nodes need the hint.
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _quiet_lightning(single_process=single_process)
        warnings.warn("The `srun` command is available on your system but is not used.",
                      UserWarning, stacklevel=1)
    assert len(caught) == (0 if single_process else 1)
