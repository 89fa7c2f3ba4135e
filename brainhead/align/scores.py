"""Layer-by-layer alignment of a subject with a model and its random control.

For every layer of the trained model and of the same architecture with random weights,
:func:`score_subject` computes

- ``r``: held-out Pearson r of a ridge encoding model (alpha per target chosen by grouped
  cross-validation inside the training folds; outer folds never split a run that shares a
  stimulus with another run, nor the repeats of a stimulus), with a bootstrap confidence
  interval over stimuli and a permutation p-value (test responses shuffled across the
  stimuli of each fold, which breaks the stimulus-response pairing and nothing else);
- ``r_ceiled``: ``r`` divided by the noise ceiling when stimuli repeat (split-half,
  Spearman-Brown corrected, or NSD's ncsnr: ``align.ceiling``);
- ``rsa``: Spearman correlation of the brain and layer RDMs (``align.rsa_distance``:
  correlation or Euclidean distance of the repeat-averaged responses);
- ``rsa_crossnobis``: the same with the brain RDM from cross-validated Mahalanobis
  distances across presentations (shrinkage noise covariance), when every stimulus was
  presented at least twice;
- ``cka`` and ``cka_debiased``: linear CKA of responses and layer features;
- ``r_diff``: trained minus random ``r`` at the same layer, with a paired bootstrap CI
  and p-value (the same resampled stimuli for both).

It also picks the best layer per region on the training folds only (leave-one-stimulus-out
or inner-CV scores of each training set, see :func:`fit_layer`),
reports the held-out score of that choice, and the intermediate-layer advantage (best
layer's relative depth and its gap to the last layer, with a bootstrap CI).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._logging import ProgressBar, logger
from ..io.readers import RecordingError
from ..io.store import atomic_path, provenance, read_responses, write_arrays
from ..splits import leakage_free_groups, outer_folds
from .ridge import GroupRidgeCV, pearson_r, solve_ridge_cv_closed_form
from .stats import (
    NULL_BLOCK_ELEMENTS,
    PairPermutations,
    counts_from_indices,
    permuted_column_dots,
    weighted_r,
)

SUMMARY_COLUMNS = ["subject", "modality", "view", "region", "model", "control", "layer",
                   "metric", "score", "n_targets", "ci_low", "ci_high", "p", "q", "n_clipped"]

BEST_COLUMNS = ["subject", "modality", "view", "region", "model", "best_layer",
                "layers_per_fold", "score", "random_score", "n_layers", "relative_depth",
                "last_layer_score", "gap_to_last", "gap_ci_low", "gap_ci_high"]

METRICS = ("r", "r_ceiled", "rsa", "rsa_crossnobis", "cka", "cka_debiased", "r_diff")
#: Noise-ceiling estimators of ``align.ceiling`` ("auto": split_half where repeats allow).
CEILINGS = ("split_half", "ncsnr")
#: Stimuli shown at least twice that each ceiling needs (see ``align/ceilings.py``).
CEILING_MIN_REPEATED = {"split_half": 3, "ncsnr": 2}
#: Training-only scores that can choose the best layer (see :func:`fit_layer`).
LAYER_SELECTIONS = ("loo", "inner_cv")


def encoding_scores(features: np.ndarray, Y: np.ndarray, groups: np.ndarray,
                    alphas: np.ndarray, n_inner_splits: int) -> np.ndarray:
    """Held-out Pearson r per target, averaged over outer folds.

    Parameters
    ----------
    features : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_targets)
    groups : ndarray, shape (n_samples,)
        Outer and inner folds never split a group.

    Returns
    -------
    r : ndarray, shape (n_targets,)
    """
    fit = fit_layer(features, Y, outer_folds(groups), groups, alphas, n_inner_splits)
    return np.nanmean(fit.r_folds, axis=0)


@dataclass
class LayerFit:
    """Cross-validated encoding of one layer.

    Attributes
    ----------
    pred : ndarray, shape (n_samples, n_targets)
        Held-out predictions (each row predicted by the model of its outer fold).
    r_folds : ndarray, shape (n_folds, n_targets)
        Held-out Pearson r per outer fold.
    inner : ndarray, shape (n_folds, n_targets)
        Score used to choose the best layer, from the training data of each fold only:
        the leave-one-stimulus-out R^2 of the best alpha (``selection="loo"``) or the
        grouped inner-CV R^2 of the chosen alpha (``selection="inner_cv"``).
    """

    pred: np.ndarray
    r_folds: np.ndarray
    inner: np.ndarray


def fit_layer(features: np.ndarray, Y, folds, groups: np.ndarray,
              alphas: np.ndarray, n_inner_splits: int, selection: str = "loo",
              on_fold: Callable[[int], None] | None = None) -> LayerFit:
    """Fit :class:`GroupRidgeCV` in each outer fold and keep predictions and scores.

    Alphas are always chosen by grouped cross-validation inside the training folds.
    ``selection`` sets the training-only score kept for choosing the best layer:
    ``"loo"`` is the exact leave-one-out R^2 of the training rows (one row per
    stimulus, so no stimulus is on both sides), which trains on all but one stimulus
    instead of a fraction of them and picks planted layers more often
    (``benchmarks/planted_layer.py``); ``"inner_cv"`` reuses the grouped inner folds.

    ``Y`` is one array (n_samples, n_targets), or a list with one such array per fold
    (responses that differ by fold, e.g. residuals of a baseline model fitted on each
    fold's training rows). ``on_fold(k)``, when given, is called after outer fold ``k``
    (a progress bar's callback).
    """
    if selection not in LAYER_SELECTIONS:
        raise ValueError(f"selection must be one of {LAYER_SELECTIONS}, got {selection!r}")
    Ys = list(Y) if isinstance(Y, (list, tuple)) else [Y] * len(folds)
    if len(Ys) != len(folds):
        raise ValueError(f"Y has {len(Ys)} arrays for {len(folds)} folds")
    pred = np.zeros(Ys[0].shape, dtype=np.float32)
    r_folds, inner = [], []
    for k, ((train, test), Yf) in enumerate(zip(folds, Ys)):
        model = GroupRidgeCV(alphas=alphas, n_splits=n_inner_splits)
        model.fit(features[train], Yf[train], groups=groups[train])
        p = model.predict(features[test])
        pred[test] = p
        # scored in the responses' own precision, whatever the fit's dtype
        r_folds.append(pearson_r(p.astype(Yf.dtype, copy=False), Yf[test]))
        if selection == "loo":
            # the closed-form leave-one-out errors that GroupRidgeCV(cv="loo") computes,
            # without its refit: only the scores are kept
            Xtr = np.asarray(features[train])
            sse, sst = solve_ridge_cv_closed_form(Xtr, Yf[train].astype(Xtr.dtype, copy=False),
                                                  alphas, method="loo")
            with np.errstate(divide="ignore", invalid="ignore"):
                inner.append(np.max(1.0 - sse / np.maximum(sst, np.finfo(float).tiny), axis=0))
        else:
            inner.append(np.max(model.cv_scores_, axis=0))
        if on_fold is not None:
            on_fold(k)
    return LayerFit(pred, np.stack(r_folds), np.stack(inner))


def _zscore_cols(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    norm = np.sqrt((a**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, a / norm, np.nan)


def aggregate_fold_pvalues(p_folds: np.ndarray) -> np.ndarray:
    """Combine per-fold p-values into one that stays valid under dependence between folds.

    Each outer fold's permutation p-value is exact (its predictions come from a model
    that never saw its test responses), but folds share training data, so their scores
    are dependent and a null that permutes folds independently would be too narrow.
    Twice the ``ceil(n_folds / 2)``-th smallest p-value, capped at 1, is valid under any
    dependence (the quantile aggregation of Meinshausen, Meier and Buehlmann 2009 with
    gamma 1/2: at least half of the folds must reach ``p / 2``).

    Parameters
    ----------
    p_folds : ndarray, shape (n_folds, ...)

    Returns
    -------
    p : ndarray, shape (...)
    """
    with np.errstate(invalid="ignore"):
        med = np.quantile(p_folds, 0.5, axis=0, method="lower")
    return np.minimum(1.0, 2.0 * med)


def _region_masks(regions: np.ndarray) -> dict[str, np.ndarray]:
    regions = np.asarray(regions).astype(str)
    masks = {"all": np.ones(len(regions), bool)}
    for name in sorted(set(regions.tolist()) - {""}):
        masks[name] = regions == name
    return masks


class _RegionMeans:
    """Means over each region's targets of many draws at once (NaN targets left out).

    ``masks`` is turned into a (n_targets, n_regions) membership matrix, so that the
    region means of a block of draws, shape (n_draws, n_targets), are two matrix
    products; :meth:`sums` also works on a block of columns, for nulls computed
    column block by column block.
    """

    def __init__(self, masks: dict[str, np.ndarray]):
        self.keys = list(masks)
        self.matrix = np.stack([np.asarray(masks[k], dtype=np.float64) for k in self.keys],
                               axis=1)

    def sums(self, x: np.ndarray, cols: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Sum and count of the finite values of ``x`` (n_draws, block) per region."""
        finite = np.isfinite(x)
        member = self.matrix[cols]
        return np.where(finite, x, 0.0) @ member, finite @ member

    @staticmethod
    def ratio(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)

    def means(self, x: np.ndarray) -> np.ndarray:
        """Region means of ``x`` (n_draws, n_targets) -> (n_draws, n_regions)."""
        return self.ratio(*self.sums(x))


def _fold_null_counts(blocks, r_obs: np.ndarray, regions: _RegionMeans, n_perm: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How often one fold's null reaches its observed r, per target and per region.

    Parameters
    ----------
    blocks : iterable of (slice, ndarray (n_perm, block))
        The fold's null r, column block by column block (e.g.
        :func:`~.stats.permuted_column_dots`).
    r_obs : ndarray, shape (n_targets,)
        The fold's held-out r.
    regions : _RegionMeans
        A region's null is the mean of its targets' null r in each draw.
    n_perm : int

    Returns
    -------
    exceed, valid : ndarray, shape (n_targets,)
        Draws at or above ``r_obs``, and finite draws, of every target.
    region_exceed : ndarray, shape (n_regions,)
        Draws whose region mean is at or above the observed region mean.
    """
    exceed = np.zeros(len(r_obs))
    valid = np.zeros(len(r_obs))
    sums = np.zeros((n_perm, len(regions.keys)))
    counts = np.zeros((n_perm, len(regions.keys)))
    for cols, null in blocks:
        with np.errstate(invalid="ignore"):
            exceed[cols] = np.sum(null >= r_obs[cols], axis=0)
        valid[cols] = np.sum(np.isfinite(null), axis=0)
        s, c = regions.sums(null, cols)
        sums += s
        counts += c
    observed = regions.means(r_obs[None])[0]
    with np.errstate(invalid="ignore"):
        region_exceed = np.sum(regions.ratio(sums, counts) >= observed, axis=0)
    return exceed, valid, region_exceed


def _fold_pvalues(r_folds: np.ndarray, exceed: np.ndarray, valid: np.ndarray,
                 region_exceed: np.ndarray, n_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-fold permutation p-values, aggregated over folds.

    Parameters
    ----------
    r_folds, exceed, valid : ndarray, shape (n_folds, n_targets)
    region_exceed : ndarray, shape (n_folds, n_regions)
        From :func:`_fold_null_counts`, one row per fold.

    Returns
    -------
    p : ndarray, shape (n_targets,)
    region_p : ndarray, shape (n_regions,)
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        p_folds = np.where(np.isfinite(r_folds), (1 + exceed) / (1 + valid), np.nan)
    return (aggregate_fold_pvalues(p_folds),
            aggregate_fold_pvalues((1 + region_exceed) / (1 + n_perm)))


def _boot_region_r(folds_data, regions: _RegionMeans) -> np.ndarray:
    """Region means of the fold-averaged Pearson r of every bootstrap draw.

    Parameters
    ----------
    folds_data : list of (A, B, W)
        Per outer fold: predictions and responses of the test rows, both centred,
        shape (n_test, n_targets), and the bootstrap counts of the test rows, shape
        (n_boot, n_test) (the same draws for every fold's row of the result).
    regions : _RegionMeans

    Returns
    -------
    boot : ndarray, shape (n_boot, n_regions)
        For each draw: each target's r on the resampled rows of every fold (weighted
        moments, :func:`~.stats.weighted_r`), averaged over folds (NaN if one fold's is),
        then over the region's finite targets. Draws are processed in blocks of
        :data:`~.stats.NULL_BLOCK_ELEMENTS` entries.
    """
    n_boot = folds_data[0][2].shape[0]
    n_targets = folds_data[0][0].shape[1]
    out = np.empty((n_boot, len(regions.keys)))
    step = max(1, NULL_BLOCK_ELEMENTS // max(n_targets, 1))
    for start in range(0, n_boot, step):
        draws = slice(start, min(start + step, n_boot))
        total = 0.0
        for A, B, W in folds_data:
            total = total + weighted_r(W[draws], A, B)
        out[draws] = regions.means(total / len(folds_data))
    return out


@dataclass
class _StimulusDraws:
    """The resamples of one subject's stimuli, shared by every layer and control.

    Drawn from one generator in a fixed order (every permutation of every fold's test
    rows, then every bootstrap draw of them, then every permutation of all stimuli), so
    a seed always gives the same resamples.

    Attributes
    ----------
    perms : list of ndarray of int, each shape (n_perm, n_test)
        Permutations of each outer fold's test rows (local indices).
    boots : list of ndarray, each shape (n_boot, n_test)
        Bootstrap counts of each fold's test rows (:func:`~.stats.counts_from_indices`).
    stim_perms : PairPermutations
        Permutations of all stimuli (RSA and CKA nulls), shape (n_perm, n_stim).
    zy : list of ndarray, each shape (n_test, n_targets)
        Column-normalised test responses of each fold.
    yc : list of ndarray, each shape (n_test, n_targets)
        Centred test responses of each fold.
    """

    perms: list[np.ndarray]
    boots: list[np.ndarray]
    stim_perms: PairPermutations
    zy: list[np.ndarray]
    yc: list[np.ndarray]

    @classmethod
    def draw(cls, rng: np.random.Generator, folds, Y: np.ndarray, n_perm: int, n_boot: int
             ) -> _StimulusDraws:
        sizes = [len(test) for _, test in folds]
        perms = [np.empty((n_perm, m), dtype=np.intp) for m in sizes]
        for k in range(n_perm):
            for f, m in enumerate(sizes):
                perms[f][k] = rng.permutation(m)
        index = [np.empty((n_boot, m), dtype=np.intp) for m in sizes]
        for k in range(n_boot):
            for f, m in enumerate(sizes):
                index[f][k] = rng.integers(0, m, m)
        n_stim = len(Y)
        stim_perms = np.empty((n_perm, n_stim), dtype=np.intp)
        for k in range(n_perm):
            stim_perms[k] = rng.permutation(n_stim)
        return cls(perms, [counts_from_indices(i, m) for i, m in zip(index, sizes)],
                   PairPermutations(stim_perms), [_zscore_cols(Y[test]) for _, test in folds],
                   [Y[test] - Y[test].mean(0) for _, test in folds])


def _encoding_statistics(fit: LayerFit, folds, draws: _StimulusDraws, regions: _RegionMeans
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permutation p-values and bootstrap draws of one layer's held-out r.

    Test responses are permuted across the stimuli of each fold (exact within the
    fold), p-values are aggregated over folds (:func:`aggregate_fold_pvalues`); the
    bootstrap resamples the test stimuli of every fold. All draws of a fold at once.

    Returns
    -------
    p : ndarray, shape (n_targets,)
    region_p : ndarray, shape (n_regions,)
    region_boot : ndarray, shape (n_boot, n_regions)
    """
    n_perm = draws.perms[0].shape[0]
    counts = []
    boot_data = []
    for f, (_, test) in enumerate(folds):
        pred = fit.pred[test].astype(np.float64)
        blocks = permuted_column_dots(_zscore_cols(pred), draws.zy[f], draws.perms[f])
        counts.append(_fold_null_counts(blocks, fit.r_folds[f], regions, n_perm))
        boot_data.append((pred - pred.mean(0), draws.yc[f], draws.boots[f]))
    exceed, valid, region_exceed = (np.stack(c) for c in zip(*counts))
    p, region_p = _fold_pvalues(fit.r_folds, exceed, valid, region_exceed, n_perm)
    return p, region_p, _boot_region_r(boot_data, regions)


def _rank_condensed(rdm: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(rdm)


def _zscored_ranks(rdm: np.ndarray) -> np.ndarray:
    """Ranks of a condensed RDM, centred and scaled to unit norm (Spearman as a dot)."""
    return _zscore_cols(_rank_condensed(rdm)[:, None])[:, 0]


def _centred_gram(X: np.ndarray) -> np.ndarray:
    Xc = X - X.mean(0)
    return Xc @ Xc.T


class _ModelFreeScores:
    """RSA and CKA of every region against one layer, with stimulus-permutation nulls.

    The brain side (ranked RDMs, centred Gram matrices) is computed once per subject;
    for each layer, the null of every region and metric comes from one batched gather
    of the layer's permuted RDMs and Gram matrix (:class:`~.stats.PairPermutations`).

    - ``rsa``: Spearman correlation of the brain and layer RDMs, that is the dot product
      of their z-scored ranks; null: the layer's stimuli permuted (a permutation of the
      stimuli permutes the pairs, so the z-scored ranks are only re-indexed).
    - ``rsa_crossnobis``: the same with the crossnobis brain RDM (stimuli in its order).
    - ``cka``: biased linear CKA, ``<K, L> / (||K|| ||L||)`` with centred Gram matrices
      ``K`` (layer) and ``L`` (region); null: the rows and columns of ``K`` permuted.
    - ``cka_debiased``: debiased linear CKA, no p-value.
    """

    def __init__(self, Y: np.ndarray, masks: dict[str, np.ndarray], crossnobis: dict,
                 cn_rows: np.ndarray, distance: str):
        from .rsa import compute_rdm

        self.masks, self.cn_rows, self.distance = masks, cn_rows, distance
        n = len(Y)
        self.rsa_keys = [key for key, cols in masks.items() if cols.sum() >= 2]
        self.cn_keys = list(crossnobis)
        self.brain = self._stack([_zscored_ranks(compute_rdm(Y[:, masks[k]], metric=distance))
                                  for k in self.rsa_keys], n)
        self.brain_cn = self._stack([_zscored_ranks(crossnobis[k]) for k in self.cn_keys], n)
        iu = np.triu_indices(n, 1)
        self.grams, pairs, diag = [], [], []
        for cols in masks.values():
            L = _centred_gram(Y[:, cols])
            norm = np.sqrt((L * L).sum())
            self.grams.append(L)
            pairs.append(2.0 * L[iu] / norm)  # both triangles of <K, L>
            diag.append(np.diagonal(L) / norm)
        self.gram_pairs, self.gram_diag = np.stack(pairs, 1), np.stack(diag, 1)

    @staticmethod
    def _stack(columns: list[np.ndarray], n: int) -> np.ndarray:
        return np.stack(columns, 1) if columns else np.empty((n * (n - 1) // 2, 0))

    def layer(self, X: np.ndarray, stim_perms: PairPermutations
              ) -> dict[str, list[tuple[str, float, float]]]:
        """Scores of one layer's features ``X`` (n_stim, dim) in every region.

        Returns
        -------
        scores : dict of str to list of (metric, score, p)
            Per region, in the order ``rsa`` (regions of >= 2 targets),
            ``rsa_crossnobis`` (when crossnobis RDMs exist), ``cka``, ``cka_debiased``.
        """
        from scipy.spatial.distance import squareform

        from .cka import linear_cka_gram
        from .rsa import compute_rdm

        zl = _zscored_ranks(compute_rdm(X, metric=self.distance))
        squares, weights = [squareform(zl, checks=False)], [self.brain]
        if self.cn_keys:  # the layer RDM in the crossnobis RDMs' stimulus order
            zl_cn = _zscored_ranks(compute_rdm(X[self.cn_rows], metric=self.distance))
            squares.append(squareform(zl_cn, checks=False))
            weights.append(self.brain_cn)
        K = _centred_gram(X)
        norm_k = np.sqrt((K * K).sum())
        squares.append(K)
        weights.append(self.gram_pairs / norm_k)
        nulls = stim_perms.sums(squares, weights)
        cka_null = nulls[-1] + np.diagonal(K)[stim_perms.perms] @ (self.gram_diag / norm_k)
        rsa = dict(zip(self.rsa_keys, zip(zl @ self.brain, nulls[0].T)))
        cn = dict(zip(self.cn_keys, zip(zl_cn @ self.brain_cn, nulls[1].T))
                  if self.cn_keys else {})
        out = {}
        for i, (key, cols) in enumerate(self.masks.items()):
            scores = []
            for metric, table in (("rsa", rsa), ("rsa_crossnobis", cn)):
                if key in table:
                    obs, null = table[key]
                    scores.append((metric, float(obs), _pvalue(float(obs), null)))
            cka = linear_cka_gram(K, self.grams[i])
            scores.append(("cka", cka, _pvalue(cka, cka_null[:, i])))
            scores.append(("cka_debiased", linear_cka_gram(K, self.grams[i], debiased=True),
                           np.nan))
            out[key] = scores
        return out


def _pvalue(observed: float, null: np.ndarray) -> float:
    """One-sided permutation p-value with the +1 correction (NaN when undefined)."""
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or null.size == 0:
        return np.nan
    return float((1 + np.sum(null >= observed)) / (1 + null.size))


def _ci(boot: np.ndarray, level: float) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return np.nan, np.nan
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def average_repeats(Y: np.ndarray, stim_id: np.ndarray, group: np.ndarray):
    """Average the repeats of each stimulus.

    Returns
    -------
    Y_avg : ndarray, shape (n_unique, n_targets)
    stim_ids : ndarray of str, shape (n_unique,)
        In order of first appearance.
    group : ndarray of str, shape (n_unique,)
        The group (run) of each stimulus' first presentation.
    n_repeats : ndarray of int, shape (n_unique,)
    """
    stim_id = np.asarray(stim_id).astype(str)
    uniq, first, inverse, counts = np.unique(stim_id, return_index=True, return_inverse=True,
                                             return_counts=True)
    order = np.argsort(first)
    sums = np.zeros((len(uniq), Y.shape[1]))
    np.add.at(sums, inverse, Y)
    Y_avg = (sums / counts[:, None])[order]
    return Y_avg, uniq[order], np.asarray(group).astype(str)[first[order]], counts[order]


class RegionCurves:
    """Layer curves of every (control, region), filled layer by layer while scoring.

    Attributes (dict of (control, region) to ndarray)
    ------------------------------------------------
    score : shape (n_layers,)
        Held-out r averaged over folds and the region's targets.
    boot : shape (n_layers, n_boot)
        The same for every bootstrap draw (shared by all layers and controls).
    held : shape (n_layers, n_folds)
        Held-out r of each outer fold.
    inner : shape (n_layers, n_folds)
        Training-only score of each outer fold, which chooses the best layer.
    """

    def __init__(self, masks: dict[str, np.ndarray], n_layers: int, n_boot: int,
                 n_folds: int):
        self.masks = masks
        self._shape = (n_layers, n_boot, n_folds)
        self.score, self.boot, self.held, self.inner = {}, {}, {}, {}

    def record(self, control: str, layer: int, fit: LayerFit, region_boot: np.ndarray,
               level: float) -> dict[str, tuple[float, tuple[float, float]]]:
        """Store one layer of one control; return each region's score and interval.

        ``region_boot`` has shape (n_boot, n_regions), regions in the order of ``masks``:
        the region's mean r in every bootstrap draw (:func:`_boot_region_r`).
        """
        n_layers, n_boot, n_folds = self._shape
        r = np.nanmean(fit.r_folds, axis=0)
        out = {}
        for i, (key, cols) in enumerate(self.masks.items()):
            if (control, key) not in self.score:
                self.score[(control, key)] = np.empty(n_layers)
                self.boot[(control, key)] = np.empty((n_layers, n_boot))
                self.held[(control, key)] = np.empty((n_layers, n_folds))
                self.inner[(control, key)] = np.empty((n_layers, n_folds))
            self.score[(control, key)][layer] = float(np.nanmean(r[cols]))
            self.boot[(control, key)][layer] = region_boot[:, i]
            self.held[(control, key)][layer] = np.nanmean(fit.r_folds[:, cols], axis=1)
            self.inner[(control, key)][layer] = np.nanmean(fit.inner[:, cols], axis=1)
            out[key] = (self.score[(control, key)][layer],
                        _ci(self.boot[(control, key)][layer], level))
        return out

    def paired_rows(self, level: float) -> list[dict]:
        """``r_diff`` rows when both controls were scored (:func:`paired_difference_rows`)."""
        if not all(("trained", key) in self.score and ("random", key) in self.score
                   for key in self.masks):
            return []
        return paired_difference_rows(self.score, self.boot, self.masks, level)

    def best_rows(self, level: float) -> list[dict]:
        """One best-layer row per region of the trained model (:func:`_best_layer_row`)."""
        return [_best_layer_row(key, self.inner, self.held, self.boot, level)
                for key in self.masks if ("trained", key) in self.score]


def noise_ceiling(Y: np.ndarray, stim_id: np.ndarray, kind: str = "split_half", *,
                  seed=0) -> np.ndarray:
    """Ceiling on the Pearson r of each target with its repeat-averaged response.

    Parameters
    ----------
    Y : ndarray, shape (n_samples, n_targets)
        Single trials, repeats of a stimulus on separate rows.
    stim_id : ndarray, shape (n_samples,)
    kind : {"split_half", "ncsnr"}
        ``"split_half"``: split-half reliability of random halves of the repeats,
        Spearman-Brown corrected (:func:`~brainhead.align.split_half_ceiling`).
        ``"ncsnr"``: the Natural Scenes Dataset's noise-ceiling SNR from the
        within-stimulus variance, turned into the reliability of the average of each
        stimulus' own number of repeats (:func:`~brainhead.align.ncsnr_ceiling`).
    seed : int
        Seeds the random halves.

    Returns
    -------
    ceiling : ndarray, shape (n_targets,)
        ``sqrt`` of the reliability; all NaN when no stimulus repeats.
    """
    from .ceilings import ncsnr, ncsnr_ceiling, r_ceiling, split_half_ceiling

    if kind not in CEILINGS + ("auto",):
        raise ValueError(f"ceiling must be one of {CEILINGS + ('auto',)}, got {kind!r}")
    stim_id = np.asarray(stim_id).astype(str)
    counts = np.unique(stim_id, return_counts=True)[1]
    if counts.max(initial=0) < 2:
        return np.full(Y.shape[1], np.nan)
    if kind == "auto":
        if (counts >= 2).sum() < CEILING_MIN_REPEATED["split_half"]:
            return np.full(Y.shape[1], np.nan)
        kind = "split_half"
    if kind == "ncsnr":
        return r_ceiling(ncsnr_ceiling(ncsnr(Y, stim_id), counts))
    return r_ceiling(split_half_ceiling(Y, stim_id, seed=seed))


def _crossnobis_rdms(Y, stim_id, masks):
    """Crossnobis RDM per region when every stimulus was presented twice or more.

    The noise partitions of the cross-validation are the presentations: the first
    presentation of every stimulus, the second, and so on (their noise is independent
    when repeats are in different runs, as in the simulator and in NSD).

    Returns
    -------
    rdms : dict of str to ndarray
        Condensed RDMs of the regions with >= 2 targets; empty when a stimulus was
        presented only once.
    stimuli : ndarray of str
        Their stimulus order (sorted ids).
    """
    from .rsa import crossnobis_rdm

    stim_id = np.asarray(stim_id).astype(str)
    codes, counts = np.unique(stim_id, return_inverse=True, return_counts=True)[1:]
    if counts.size == 0 or counts.min() < 2:
        return {}, np.array([], dtype=str)
    # occurrence index of every row: 0 for a stimulus' first presentation, 1 for its second
    order = np.argsort(codes, kind="stable")
    occurrence = np.empty(len(stim_id), dtype=int)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    occurrence[order] = np.arange(len(stim_id)) - np.repeat(starts, counts)
    rdms, stimuli = {}, np.array([], dtype=str)
    for key, cols in masks.items():
        if cols.sum() >= 2:
            rdms[key], stimuli = crossnobis_rdm(Y[:, cols], stim_id, occurrence,
                                                noise_cov="shrinkage", return_stimuli=True)
    return rdms, np.asarray(stimuli).astype(str)


def score_responses(Y, stim_id, group, regions, features: dict[str, np.ndarray],
                    feature_rows: dict[str, int], params: dict, *, seed: int = 0,
                    label: str = "") -> tuple[list[dict], list[dict], dict[str, np.ndarray]]:
    """All alignment metrics of one subject's responses against layer features.

    Parameters
    ----------
    Y : ndarray, shape (n_samples, n_targets)
        One row per trial (repeats of a stimulus allowed).
    stim_id, group : ndarray, shape (n_samples,)
        Stimulus of each row and its recording group (run/session).
    regions : ndarray of str, shape (n_targets,)
    features : dict of str to ndarray, shape (n_layers, n_stimuli, dim)
        ``trained`` and ``random`` features of every stimulus.
    feature_rows : dict of str to int
        Row of each stimulus id in the feature arrays.
    params : dict
        The study's ``align`` section (alphas_log10, n_inner_splits, n_permutations,
        n_bootstraps, ci, min_ceiling; optional layer_selection, ceiling and
        rsa_distance).
    seed : int
        Seeds the permutations and bootstraps (shared by every layer and control, so
        trained and random are compared on the same draws).

    Returns
    -------
    rows : list of dict
        Summary rows (:data:`SUMMARY_COLUMNS` except subject/modality/view/model).
    best : list of dict
        Best-layer rows (:data:`BEST_COLUMNS` except subject/modality/view/model).
    per_target : dict of str to ndarray
        ``r_<control>`` (n_layers, n_targets), ``p_<control>`` and ``q_<control>``
        (permutation p and BH q per target), ``ceiling`` (n_targets, NaN without
        repeats).
    """
    from .stats import fdr_bh

    Y = np.asarray(Y, dtype=np.float64)
    stim_id = np.asarray(stim_id).astype(str)
    n_perm, n_boot = int(params["n_permutations"]), int(params["n_bootstraps"])
    level = float(params["ci"])
    lo, hi, n = params["alphas_log10"]
    alphas = np.logspace(lo, hi, int(n))

    distance = params.get("rsa_distance", "correlation")
    masks = _region_masks(regions)

    # Noise ceiling and crossnobis RDMs from the single trials, then one row per stimulus.
    ceiling = noise_ceiling(Y, stim_id, params.get("ceiling", "auto"), seed=seed)
    crossnobis, cn_order = _crossnobis_rdms(Y, stim_id, masks)
    Y, stims, group, _ = average_repeats(Y, stim_id, group)
    groups = leakage_free_groups(stims, group)
    folds = outer_folds(groups)
    rowmap = {s: i for i, s in enumerate(stims)}
    cn_rows = np.array([rowmap[s] for s in cn_order], dtype=int)

    rng = np.random.default_rng(seed)
    draws = _StimulusDraws.draw(rng, folds, Y, n_perm, n_boot)
    region_means = _RegionMeans(masks)
    model_free = _ModelFreeScores(Y, masks, crossnobis, cn_rows, distance)

    rows: list[dict] = []
    per_target: dict[str, np.ndarray] = {"ceiling": ceiling.astype(np.float32)}
    n_layers = next(iter(features.values())).shape[0]
    curves = RegionCurves(masks, n_layers, n_boot, len(folds))
    for control, F in features.items():
        rows_idx = np.array([feature_rows[s] for s in stims])
        r_all = np.empty((n_layers, Y.shape[1]))
        p_all = np.empty((n_layers, Y.shape[1]))
        # one step per ridge fold of each layer, and one for the layer's resampling
        with ProgressBar(f"{label} {control}", total=n_layers * (len(folds) + 1)) as bar:
            for layer in range(n_layers):
                def fold_done(k, layer=layer):
                    bar.advance(what=f"layer {layer}: ridge fold {k + 1}/{len(folds)}")
                # Ridge runs in float32 (half the memory traffic of float64: the stimulus
                # view's align job is about 1.3x faster, held-out r moves by < 1e-5 on the
                # demo, benchmarks/align_stats.py); scores, RSA and CKA stay in float64.
                X32 = np.ascontiguousarray(F[layer][rows_idx], dtype=np.float32)
                X = X32.astype(np.float64)
                fit = fit_layer(X32, Y, folds, groups, alphas, params["n_inner_splits"],
                                params.get("layer_selection", "loo"), on_fold=fold_done)
                r = np.nanmean(fit.r_folds, axis=0)
                r_all[layer] = r
                p_all[layer], region_p, region_boot = _encoding_statistics(fit, folds, draws,
                                                                           region_means)
                free = model_free.layer(X, draws.stim_perms)
                bar.advance(what=f"layer {layer}: {n_perm} permutations, {n_boot} bootstraps, "
                                 "RSA and CKA nulls")
                region_r = curves.record(control, layer, fit, region_boot, level)
                rows += _layer_rows(control, layer, masks, region_r, region_p, r, ceiling,
                                    free, params["min_ceiling"])
        per_target[f"r_{control}"] = r_all.astype(np.float32)
        per_target[f"p_{control}"] = p_all.astype(np.float32)
        per_target[f"q_{control}"] = np.stack([fdr_bh(p) for p in p_all]).astype(np.float32)

    rows += curves.paired_rows(level)
    add_qvalues(rows)
    return rows, curves.best_rows(level), per_target


def _layer_rows(control: str, layer: int, masks: dict[str, np.ndarray], region_r: dict,
                region_p: np.ndarray, r: np.ndarray, ceiling: np.ndarray, free: dict,
                min_ceiling: float) -> list[dict]:
    """Score rows of one layer: r with its interval and p, r_ceiled, RSA and CKA."""
    from .ceilings import normalise_by_ceiling

    rows = []
    for i, (key, cols) in enumerate(masks.items()):
        score, ci = region_r[key]
        base = {"region": key, "control": control, "layer": layer,
                "n_targets": int(cols.sum()), "n_clipped": 0}
        rows.append({**base, "metric": "r", "score": score, "ci_low": ci[0],
                     "ci_high": ci[1], "p": float(region_p[i])})
        if np.isfinite(ceiling[cols]).any():
            normed, reliable, n_clipped = normalise_by_ceiling(r[cols], ceiling[cols],
                                                               min_ceiling=min_ceiling)
            rows.append({**base, "metric": "r_ceiled",
                         "score": float(np.nanmean(normed)) if reliable.any() else np.nan,
                         "n_targets": int(reliable.sum()), "n_clipped": int(n_clipped),
                         "ci_low": np.nan, "ci_high": np.nan, "p": np.nan})
        for metric, value, p in free[key]:
            rows.append({**base, "metric": metric, "score": value, "ci_low": np.nan,
                         "ci_high": np.nan, "p": p})
    return rows


def paired_difference_rows(region_curves: dict, region_boot: dict,
                           masks: dict[str, np.ndarray], level: float) -> list[dict]:
    """``r_diff`` rows: trained minus random r per region and layer, paired bootstrap.

    Both controls were resampled with the same bootstrap draws, so the difference of
    their bootstrap scores is the bootstrap of the difference. The p-value is two-sided:
    twice the smaller tail of the differences at or beyond 0, with the +1 correction.

    Parameters
    ----------
    region_curves, region_boot : dict of (control, region) to ndarray
        Region score per layer, shape (n_layers,), and its bootstrap draws, shape
        (n_layers, n_boot).
    masks : dict of str to ndarray of bool
        Targets of each region.
    level : float
        Confidence level of the interval.
    """
    rows = []
    for key, cols in masks.items():
        diff = region_curves[("trained", key)] - region_curves[("random", key)]
        boot = region_boot[("trained", key)] - region_boot[("random", key)]
        for layer in range(len(diff)):
            b = boot[layer][np.isfinite(boot[layer])]
            p = (float((1 + 2 * min(np.sum(b <= 0), np.sum(b >= 0))) / (1 + b.size))
                 if b.size else np.nan)
            lo, hi = _ci(boot[layer], level)
            rows.append({"region": key, "control": "trained-random", "layer": layer,
                         "metric": "r_diff", "score": float(diff[layer]),
                         "n_targets": int(cols.sum()), "n_clipped": 0, "ci_low": lo,
                         "ci_high": hi, "p": min(p, 1.0)})
    return rows


def add_qvalues(rows: list[dict]) -> None:
    """Set ``q``: Benjamini-Hochberg across every p-value of one subject's rows."""
    from .stats import fdr_bh

    qvals = fdr_bh(np.array([row["p"] for row in rows], dtype=float))
    for row, q in zip(rows, qvals):
        row["q"] = float(q)


def _best_layer_row(key, region_inner, region_folds, region_boot, level) -> dict:
    """Best layer chosen per fold on training-only scores, and the intermediate-layer gap."""
    inner = region_inner[("trained", key)]  # (layer, fold)
    held = region_folds[("trained", key)]
    n_layers = inner.shape[0]
    filled = np.where(np.isfinite(inner), inner, -np.inf)
    chosen = np.argmax(filled, axis=0)  # per fold, from training data only
    folds = np.arange(inner.shape[1])
    score = float(np.nanmean(held[chosen, folds]))
    random_held = region_folds.get(("random", key))
    random_score = (float(np.nanmean(random_held[chosen, folds]))
                    if random_held is not None else np.nan)
    # The layer reported as best: highest training-only score averaged over the outer folds'
    # training sets (no held-out prediction enters the choice).
    best_layer = int(np.argmax(np.nanmean(filled, axis=1)))
    curve = np.nanmean(held, axis=1)
    # The gap of the train-chosen layer over the last one, resampling stimuli (the layer
    # is not re-chosen per resample, so the interval can cover 0).
    boot = region_boot[("trained", key)]  # (layer, n_boot)
    lo, hi = _ci(boot[best_layer] - boot[-1], level)
    return {"region": key, "best_layer": best_layer,
            "layers_per_fold": " ".join(str(int(c)) for c in chosen), "score": score,
            "random_score": random_score, "n_layers": n_layers,
            "relative_depth": best_layer / max(n_layers - 1, 1),
            "last_layer_score": float(curve[-1]),
            "gap_to_last": float(curve[best_layer] - curve[-1]),
            "gap_ci_low": lo, "gap_ci_high": hi}


def view_for(align_params: dict, modality: str) -> str:
    """The response view that ``align.view`` asks to score for a modality.

    ``align.view`` is one view name for every modality, or a mapping modality -> view
    where a modality left out scores its ``stimulus`` view.
    """
    view = align_params.get("view", "stimulus")
    if isinstance(view, dict):
        return view.get(modality, "stimulus")
    return view


def check_design(stim_id, align_params: dict, where: str, *, ceiling: bool = True) -> None:
    """Refuse a design that alignment cannot score, before anything is computed.

    Parameters
    ----------
    stim_id : array-like of str
        The stimulus of every row (or event) the subject's view holds.
    align_params : dict
        The study's ``align`` section: ``min_stimuli`` (no check when absent) and
        ``ceiling`` (split_half or ncsnr ask for a ceiling, so for repeats).
    where : str
        ``sub-<id>: <file>``, the start of the message.
    ceiling : bool
        Whether this view scores a noise ceiling (the stimulus view does).

    Raises
    ------
    RecordingError
        ``degenerate design``, naming the key to change.
    """
    stims, counts = np.unique(np.asarray(stim_id).astype(str), return_counts=True)
    minimum = int(align_params.get("min_stimuli", 0))
    if len(stims) < minimum:
        raise RecordingError(
            f"{where}: key 'align.min_stimuli': degenerate design: {len(stims)} distinct "
            f"stimuli ({', '.join(stims[:5])}), fewer than align.min_stimuli = {minimum}; "
            "layers cannot be aligned on so few stimuli (a few conditions decode labels)")
    kind = align_params.get("ceiling", "auto")
    needed = CEILING_MIN_REPEATED.get(kind, 0)
    if ceiling and (counts >= 2).sum() < needed:
        raise RecordingError(
            f"{where}: key 'align.ceiling': degenerate design: a {kind} noise ceiling is "
            f"asked for, which needs at least {needed} stimuli shown twice or more; "
            f"{int((counts >= 2).sum())} of {len(stims)} are; set align.ceiling: auto")


def check_layers_differ(per_target: dict[str, np.ndarray], where: str) -> None:
    """Refuse scores that are the same at every layer of the model and of its control.

    Such scores (a design of two stimuli gives r = 0.464 everywhere, say) cannot name a
    best layer or a trained-minus-random gap.
    """
    r = np.stack([per_target[k] for k in ("r_trained", "r_random") if k in per_target])
    r = r.reshape(-1, r.shape[-1])
    finite = np.isfinite(r).all(axis=0)
    if len(r) < 2 or not finite.any():
        return
    r = r[:, finite]
    if np.all(r.max(axis=0) - r.min(axis=0) <= 1e-6 * max(1.0, float(np.abs(r).max()))):
        raise RecordingError(
            f"{where}: key 'align.min_stimuli': degenerate design: every layer of the "
            f"trained model and of its random control scores the same (mean r = "
            f"{float(r.mean()):.3f}); the stimuli cannot tell layers apart, so there is no "
            "best layer to report; nothing was written")


def view_targets(view, table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A row view as (n_rows, n_targets), with each target's name and region.

    The ``bands`` view holds one value per channel and band (rows x channels x bands):
    each channel-band pair is a target, named ``<channel>:<band>`` and in its channel's
    region, so that alignment scores every band of every channel (the report draws one
    map per band). Other row views are returned as they are.
    """
    names = np.asarray(table.targets.name).astype(str)
    regions = np.asarray(table.targets.region).astype(str)
    if view.X.ndim == 2:
        return view.X, names, regions
    if view.X.ndim != 3 or "band" not in view.labels:
        raise RecordingError(f"sub-{table.subject}: a view of shape {view.X.shape} has no "
                             "targets to score (expected rows x targets, or rows x "
                             "channels x bands with band labels)")
    bands = np.asarray(view.labels["band"]).astype(str)
    n_rows, n_chan, n_bands = view.X.shape
    X = view.X.reshape(n_rows, n_chan * n_bands)  # channel-major: ch0 bands, ch1 bands...
    flat_names = np.array([f"{c}:{b}" for c in names for b in bands])
    return X, flat_names, np.repeat(regions, n_bands)


def score_subject(responses_path, features_path, model: str, align_params: dict, *,
                  seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Score every layer of a model and of its random control against one subject.

    Returns
    -------
    summary : DataFrame
        Columns :data:`SUMMARY_COLUMNS`; one row per region (plus ``all``), control,
        layer and metric.
    best : DataFrame
        Columns :data:`BEST_COLUMNS`; one row per region.
    per_target : dict of str to ndarray
        See :func:`score_responses`.
    """
    from ..features import read_features

    table = read_responses(responses_path)
    view_name = view_for(align_params, table.modality)
    view = table.view(view_name)
    feats, feat_ids, _ = read_features(features_path)
    index = {s: i for i, s in enumerate(feat_ids)}
    stims = view.events["stim_id"] if view_name == "timeseries" else view.rows["stim_id"]
    missing = sorted(set(np.asarray(stims).astype(str)) - set(index))
    if missing:
        raise RecordingError(
            f"sub-{table.subject}: {len(missing)} stimuli of {Path(responses_path).name} are "
            f"not in the stimuli table of {Path(features_path).name} (e.g. {missing[:3]})"
        )
    where = f"sub-{table.subject}: {Path(responses_path).name}"
    check_design(stims, align_params, where, ceiling=view_name != "timeseries")
    subject_seed = [seed, zlib.crc32(table.subject.encode())]
    subject_seed = np.random.SeedSequence(subject_seed).generate_state(1)[0]
    label = f"sub-{table.subject}"
    if view_name == "timeseries":
        from .timeseries import score_timeseries

        rows, best, per_target = score_timeseries(
            view, table.targets.region, feats, index, align_params, table.modality,
            seed=subject_seed, label=label)
    else:
        X, _, regions = view_targets(view, table)
        rows, best, per_target = score_responses(
            X, view.rows["stim_id"], view.rows["group"], regions, feats,
            index, align_params, seed=subject_seed, label=label)
    check_layers_differ(per_target, where)
    ident = {"subject": table.subject, "modality": table.modality, "view": view_name,
             "model": model}
    summary = pd.DataFrame([{**ident, **row} for row in rows], columns=SUMMARY_COLUMNS)
    best = pd.DataFrame([{**ident, **row} for row in best], columns=BEST_COLUMNS)
    logger.info("sub-%s: scored %d layers x %d controls", table.subject,
                per_target["r_trained"].shape[0], len(feats))
    return summary, best, per_target


def align_subject(responses_path, features_path, model: str, align_params: dict,
                  out_h5, out_tsv, out_best=None, *, seed: int = 0) -> pd.DataFrame:
    """Score one subject and write per-target scores (HDF5) and summary rows (TSV).

    ``out_best`` (optional) receives the best-layer rows (:data:`BEST_COLUMNS`).
    """
    summary, best, per_target = score_subject(responses_path, features_path, model,
                                              align_params, seed=seed)
    table = read_responses(responses_path)
    view_name = view_for(align_params, table.modality)
    if view_name == "timeseries":
        names, regions = table.targets.name, table.targets.region
    else:
        _, names, regions = view_targets(table.view(view_name), table)
    attrs = provenance("align", {"model": model, "seed": seed, **align_params})
    attrs["view"] = view_name
    write_arrays(out_h5, {**per_target, "target_name": names, "target_region": regions},
                 attrs)
    with atomic_path(out_tsv) as tmp:
        summary.to_csv(tmp, sep="\t", index=False)
    if out_best is not None:
        with atomic_path(out_best) as tmp:
            best.to_csv(tmp, sep="\t", index=False)
    return summary


def collect_summary(tsv_paths, out_path, columns=None) -> pd.DataFrame:
    """Concatenate per-subject tables (summary or best layers) into one TSV."""
    columns = SUMMARY_COLUMNS if columns is None else columns
    frames = [pd.read_csv(p, sep="\t", dtype={"subject": str}) for p in tsv_paths]
    summary = pd.concat(frames, ignore_index=True)[columns]
    with atomic_path(out_path) as tmp:
        summary.to_csv(tmp, sep="\t", index=False)
    return summary


def collect_alignment(summary_paths, best_paths, out_summary, out_best
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``align/summary.tsv`` and ``align/best_layers.tsv`` from per-subject tables."""
    return (collect_summary(summary_paths, out_summary),
            collect_summary(best_paths, out_best, BEST_COLUMNS))
