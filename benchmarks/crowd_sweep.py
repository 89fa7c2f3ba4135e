"""Joint against per-subject training of the voxel encoder, over simulated designs.

The demo's crowd comparison (``crowd.tsv`` of ``models/voxel_xattn/fmri``) is one
design: 3 fMRI subjects, a 16-dimensional shared subspace per region, one noise level,
one seed. This repeats the same comparison
(:meth:`brainhead.train.voxel.VoxelEncoderExperiment.crowd`: outer fold 0, every
subject its own seeded fraction of the training stimuli, the study's default encoder
settings) on responses simulated directly at the stimulus level. No BOLD time courses and
no preprocessing are involved, so one design takes 5-15 s of CPU. The sweep covers:

- the shared rank of every region's read-outs (``--ranks``; 0: no sharing);
- the number of subjects (``--subjects``);
- the noise added to the unit-variance responses (``--noise``);
- the seed, which draws the subspaces, the read-outs, the noise and the stimulus
  subsets (``--seeds``);
- the encoder's width (``--d-model``, default 32 as in the demo): the per-target
  read-outs are ridge regressions on that many dimensions, so only a width below the
  stimuli a subject keeps leaves a pooled estimate of the shared directions something to
  improve on.

The responses are :func:`brainhead.simulate.planted_responses` of the given features
(regions posterior, middle and anterior at layers 2, 4 and 6, as in the demo), with
900, 700, 500, 800, 600 and 750 targets for the first six subjects. Per design and
fraction it prints the mean per-subject held-out r of the joint model and of the
per-subject models, their difference (the lead), and how many subjects the joint model
helps::

    OMP_NUM_THREADS=1 python benchmarks/crowd_sweep.py results/demo/features/minilm.h5
    OMP_NUM_THREADS=1 python benchmarks/crowd_sweep.py FEATURES --ranks 0,4,16 \\
        --subjects 3,6 --seeds 42,1,7 --fractions 1.0,0.25
    OMP_NUM_THREADS=1 python benchmarks/crowd_sweep.py FEATURES --ranks 4,0 --d-model 16

With ``--ideal`` it also prints what pooling could give an estimator that is told each
region's planted layer and the shared rank (:func:`ideal_r`): reduced-rank ridge
with the subspace estimated from the subject's own ridge coefficients (``own``) or from
every subject's (``pooled``), each target then read out by ridge on that subspace, on the
same stimuli as the encoder's runs. It bounds the crowd effect that a design holds,
whatever the encoder.

It prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLANTED = {"posterior": 2, "middle": 4, "anterior": 6}
N_TARGETS = (900, 700, 500, 800, 600, 750)


def simulate(features: np.ndarray, stim_ids: np.ndarray, *, rank: int, n_subjects: int,
             noise: float, seed: int) -> dict:
    """``n_subjects`` subjects' stimulus-level responses (SubjectResponses by name)."""
    from brainhead.simulate import planted_responses, shared_bases
    from brainhead.splits import stimulus_folds
    from brainhead.train.data import SubjectResponses

    if n_subjects > len(N_TARGETS):
        raise ValueError(f"at most {len(N_TARGETS)} subjects, got {n_subjects}")
    bases = shared_bases(features, PLANTED, rank, seed) if rank else None
    folds = stimulus_folds(stim_ids, np.arange(len(stim_ids)) % 5)
    subjects = {}
    for k in range(n_subjects):
        rng = np.random.default_rng([seed, k])
        n = N_TARGETS[k]
        regions = np.array(list(PLANTED))[np.arange(n) * len(PLANTED) // n]
        Y = planted_responses(features, regions, PLANTED, rng, shared_bases=bases)
        Y = Y + noise * rng.standard_normal(Y.shape)
        name = f"f{k + 1:02d}"
        subjects[name] = SubjectResponses(
            name, "fmri", Y.astype(np.float32), stim_ids,
            np.array([f"t{i}" for i in range(n)]), regions, folds)
    return subjects


def ideal_r(exp, features: np.ndarray, frac: float, rank: int) -> tuple[float, float]:
    """Mean held-out r of reduced-rank ridge with own and with pooled subspaces.

    For each region at its planted layer, every subject's ridge coefficients
    (:class:`brainhead.align.ridge.GroupRidgeCV`, leave-one-out penalties) on its own
    ``frac`` of outer fold 0's training stimuli give the subspace: the top ``rank``
    eigenvectors of ``C C^T`` (own) or of the sum over subjects of ``C C^T / tr(C C^T)``
    (pooled); each target is then a ridge regression on the features projected onto it,
    scored on fold 0's test stimuli.
    """
    from brainhead.align.ridge import GroupRidgeCV, pearson_r
    from brainhead.simulate.signals import zscore

    _, test = exp.split(0)
    subsets = exp.crowd_subsets(frac)  # the stimuli of the encoder's crowd runs
    rows = {x: i for i, x in enumerate(exp.feature_ids)}
    r = {"own": [], "pooled": []}
    for region, layer in PLANTED.items():
        Z = zscore(features[layer].astype(np.float64))
        fits = {}
        for s, sub in exp.subjects.items():
            cols = sub.region == region
            x = Z[[rows[st] for st in subsets[s]]]
            y = exp.truth(s, subsets[s])[:, cols]
            coef = GroupRidgeCV(cv="loo", standardize=False, device="cpu").fit(x, y).coef_
            fits[s] = (cols, x, y, np.asarray(coef, dtype=np.float64))
        gram = sum(c @ c.T / np.trace(c @ c.T) for *_, c in fits.values())
        pooled = np.linalg.eigh(gram)[1][:, -rank:]
        for s, (cols, x, y, coef) in fits.items():
            x_test = Z[[rows[st] for st in test[s]]]
            y_test = exp.truth(s, test[s])[:, cols]
            for kind, basis in (("own", np.linalg.eigh(coef @ coef.T)[1][:, -rank:]),
                                ("pooled", pooled)):
                model = GroupRidgeCV(cv="loo", standardize=False, device="cpu")
                pred = model.fit(x @ basis, y).predict(x_test @ basis)
                r[kind].append(pearson_r(np.asarray(pred, dtype=np.float64),
                                         y_test.astype(np.float64)))
    return tuple(float(np.nanmean(np.concatenate(r[k]))) for k in ("own", "pooled"))


def compare(features: dict, stim_ids: np.ndarray, fractions: list[float], *, rank: int,
            n_subjects: int, noise: float, seed: int, out_dir: Path, d_model: int = 32,
            ideal: bool = False) -> list[dict]:
    """One design: per fraction, the joint and per-subject held-out r of every subject
    (and, with ``ideal`` and a shared rank, :func:`ideal_r`)."""
    from brainhead.train.trainer import TrainConfig
    from brainhead.train.voxel import VoxelEncoderExperiment

    subjects = simulate(features["trained"], stim_ids, rank=rank, n_subjects=n_subjects,
                        noise=noise, seed=seed)
    cfg = TrainConfig.from_params({"patience": 5, "progress": False}, seed)
    exp = VoxelEncoderExperiment(subjects, features, stim_ids, out_dir,
                                 {"crowd_fractions": fractions, "d_model": d_model}, cfg)
    # the rows of the job's crowd.tsv; region "all": a subject's mean r over its targets
    by = {(r["fraction"], r["method"], r["subject"]): r["r"] for r in exp.crowd()
          if r["region"] == "all"}
    rows = []
    for frac in fractions:
        joint = np.array([by[frac, "joint", s] for s in subjects])
        alone = np.array([by[frac, "per_subject", s] for s in subjects])
        rows.append({"d_model": d_model, "rank": rank, "subjects": n_subjects,
                     "noise": noise, "seed": seed, "fraction": frac, "joint": joint.mean(),
                     "per_subject": alone.mean(),
                     "lead": (joint - alone).mean(), "helped": int((joint > alone).sum())})
        if ideal and rank:
            rows[-1]["ideal_own"], rows[-1]["ideal_pooled"] = ideal_r(
                exp, features["trained"], frac, rank)
    return rows


def _numbers(text: str, kind):
    return [kind(v) for v in text.split(",") if v]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("features", help="features/<model>.h5 of a finished run (the "
                                         "demo's: results/demo/features/minilm.h5)")
    parser.add_argument("--ranks", default="16,8,4")
    parser.add_argument("--subjects", default="3")
    parser.add_argument("--noise", default="1.5")
    parser.add_argument("--seeds", default="42,1,7")
    parser.add_argument("--fractions", default="0.25")
    parser.add_argument("--d-model", default="32", help="encoder widths (comma-separated)")
    parser.add_argument("--ideal", action="store_true",
                        help="also the reduced-rank ridge bound (own and pooled subspace)")
    args = parser.parse_args(argv)
    os.environ.setdefault("BRAINHEAD_NO_PROGRESS", "1")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    import torch

    from brainhead.features import read_features

    torch.set_num_threads(1)
    features, stim_ids, _ = read_features(args.features)
    fractions = _numbers(args.fractions, float)
    print(f"{len(stim_ids)} stimuli, {features['trained'].shape[0]} layers; regions "
          f"{PLANTED}; torch threads 1, load average {os.getloadavg()[0]:.1f}")
    print(f"{'d':>3} {'rank':>4} {'subj':>4} {'noise':>5} {'seed':>4} {'frac':>5} "
          f"{'joint':>6} {'alone':>6} {'lead':>7} {'helped':>6} {'s':>4}"
          + ("  ideal own / pooled" if args.ideal else ""))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="brainhead-crowd-") as tmp:
        designs = itertools.product(_numbers(args.d_model, int), _numbers(args.ranks, int),
                                    _numbers(args.subjects, int), _numbers(args.noise, float),
                                    _numbers(args.seeds, int))
        for i, (d_model, rank, n, noise, seed) in enumerate(designs):
            t0 = time.perf_counter()
            rows = compare(features, stim_ids, fractions, rank=rank, n_subjects=n,
                           noise=noise, seed=seed, out_dir=Path(tmp) / str(i),
                           d_model=d_model, ideal=args.ideal)
            for r in rows:
                print(f"{r['d_model']:>3} {r['rank']:>4} {r['subjects']:>4} "
                      f"{r['noise']:>5.2f} {r['seed']:>4} {r['fraction']:>5.2f} "
                      f"{r['joint']:>6.3f} {r['per_subject']:>6.3f} {r['lead']:>+7.3f} "
                      f"{r['helped']:>3}/{r['subjects']:<2} "
                      f"{time.perf_counter() - t0:>4.0f}"
                      + (f"  {r['ideal_own']:.3f} / {r['ideal_pooled']:.3f}"
                         if "ideal_own" in r else ""), flush=True)
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
