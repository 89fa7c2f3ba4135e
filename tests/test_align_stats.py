"""The batched permutation and bootstrap nulls of alignment against per-draw loops.

Every null of :mod:`brainhead.align.scores` and :mod:`brainhead.align.timeseries` is
computed for all draws of a fold at once; here each one is recomputed the plain way
(one permuted or resampled copy of the data per draw, z-scored again) on small data,
with the same draws, and the results must agree to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import squareform
from scipy.stats import rankdata

from brainhead.align import stats, timeseries
from brainhead.align.cka import linear_cka, linear_cka_gram
from brainhead.align.ridge import pearson_r
from brainhead.align.rsa import compute_rdm
from brainhead.align.scores import (
    LayerFit,
    _crossnobis_rdms,
    _region_masks,
    _RegionMeans,
    aggregate_fold_pvalues,
    average_repeats,
    fit_layer,
    score_responses,
)
from brainhead.align.stats import (
    PairPermutations,
    counts_from_indices,
    permuted_column_dots,
)
from brainhead.splits import leakage_free_groups, outer_folds


def _zscore(a):
    a = a - a.mean(0)
    norm = np.sqrt((a**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, a / norm, np.nan)


# --------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("n, n_perm, max_elements", [
    (6, 40, 2**19),    # fewer rows than permutations: pair products and a sparse product
    (30, 10, 2**19),   # more rows than permutations: gathered rows
    (6, 40, 50),       # tiny blocks: many column blocks
    (30, 10, 50),
])
def test_permuted_column_dots_matches_a_loop(n, n_perm, max_elements):
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(n, 70)), rng.normal(size=(n, 70))
    perms = np.stack([rng.permutation(n) for _ in range(n_perm)])
    out = np.full((n_perm, 70), np.nan)
    for cols, block in permuted_column_dots(A, B, perms, max_elements=max_elements):
        assert block.shape == (n_perm, cols.stop - cols.start)
        assert block.size <= max(max_elements, n_perm)  # memory is bounded by the block
        out[:, cols] = block
    expected = np.stack([np.einsum("ij,ij->j", A, B[p]) for p in perms])
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_permuted_column_dots_of_normalised_columns_is_the_permuted_r():
    rng = np.random.default_rng(1)
    pred, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5))
    perms = np.stack([rng.permutation(12) for _ in range(30)])
    (_, dots), = permuted_column_dots(_zscore(pred), _zscore(y), perms)
    expected = np.stack([pearson_r(pred, y[p]) for p in perms])
    np.testing.assert_allclose(dots, expected, atol=1e-12)


def test_permuted_column_dots_without_permutations():
    blocks = list(permuted_column_dots(np.ones((4, 3)), np.ones((4, 3)), np.empty((0, 4))))
    assert sum(b.shape[1] for _, b in blocks) == 3 and all(b.shape[0] == 0 for _, b in blocks)


def test_counts_from_indices_match_bincount():
    rng = np.random.default_rng(2)
    index = rng.integers(0, 9, size=(25, 9))
    counts = counts_from_indices(index, 9)
    np.testing.assert_array_equal(counts, [np.bincount(i, minlength=9) for i in index])
    assert counts_from_indices(np.empty((0, 9), dtype=int), 9).shape == (0, 9)


def test_weighted_r_of_counts_is_the_r_of_the_resampled_rows():
    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(15, 4)), rng.normal(size=(15, 4))
    index = rng.integers(0, 15, size=(50, 15))
    got = stats.weighted_r(counts_from_indices(index, 15), A - A.mean(0), B - B.mean(0))
    expected = np.stack([pearson_r(A[i], B[i]) for i in index])
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("cache_bytes, max_elements", [
    (2**25, 2**19),  # indices kept as intp
    (6000, 2**19),   # kept as int32 (33 x 36 of them: 4,752 bytes, 9,504 as intp)
    (0, 2**19),      # formed at each call
    (0, 100),
])
def test_pair_permutations_match_a_loop(cache_bytes, max_elements):
    rng = np.random.default_rng(4)
    n = 9
    squares = [squareform(rng.normal(size=n * (n - 1) // 2)), rng.normal(size=(n, n))]
    weights = [rng.normal(size=(n * (n - 1) // 2, 2)), rng.normal(size=(n * (n - 1) // 2, 1))]
    perms = np.stack([rng.permutation(n) for _ in range(33)])
    got = PairPermutations(perms, max_elements=max_elements,
                           cache_bytes=cache_bytes).sums(squares, weights)
    iu = np.triu_indices(n, 1)
    for S, W, g in zip(squares, weights, got):
        expected = np.stack([S[np.ix_(p, p)][iu] @ W for p in perms])
        np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-12)


def test_region_means_leave_out_nan_targets():
    masks = _region_masks(np.array(["a", "a", "b", "", "b"]))
    x = np.array([[1.0, np.nan, 2.0, 3.0, np.nan], [np.nan, np.nan, 1.0, 0.0, 5.0]])
    means = _RegionMeans(masks).means(x)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.stack([np.nanmean(x[:, cols], axis=1) for cols in masks.values()], 1)
    np.testing.assert_allclose(means, expected)
    assert np.isnan(means[1, 1])  # region a has no finite target in the second draw


def test_linear_cka_gram_matches_linear_cka():
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(20, 7)), rng.normal(size=(20, 30))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    for debiased in (False, True):
        assert linear_cka_gram(Xc @ Xc.T, Yc @ Yc.T, debiased) == pytest.approx(
            linear_cka(X, Y, debiased, method="feature"), abs=1e-12)
    with pytest.raises(ValueError, match="square Gram matrices"):
        linear_cka_gram(np.eye(3), np.eye(4))


# --------------------------------------------------------------------------- a subject
N_STIM, N_TARGETS, DIM, N_LAYERS, N_DRAWS = 40, 10, 6, 2, 60
PARAMS = {"alphas_log10": [-1, 4, 6], "n_inner_splits": 3, "n_permutations": N_DRAWS,
          "n_bootstraps": N_DRAWS, "ci": 0.9, "min_ceiling": 0.3}


def _subject(seed=0):
    """40 stimuli shown twice in different runs; regions A and B read trained layer 1."""
    rng = np.random.default_rng(seed)
    trained = rng.normal(size=(N_LAYERS, N_STIM, DIM))
    features = {"trained": trained, "random": rng.normal(size=(N_LAYERS, N_STIM, DIM))}
    regions = np.array(["A"] * 4 + ["B"] * 4 + [""] * 2)
    signal = trained[1] @ rng.normal(size=(DIM, N_TARGETS)) * (regions != "")
    order = np.concatenate([rng.permutation(N_STIM), rng.permutation(N_STIM)])
    Y = signal[order] + rng.normal(size=(2 * N_STIM, N_TARGETS))
    stim = np.array([f"s{i:02d}" for i in range(N_STIM)])
    group = np.repeat(np.arange(4), N_STIM // 2)
    return Y, stim[order], group, regions, features, {s: i for i, s in enumerate(stim)}


def _loop_reference(Y, stim_id, group, regions, features, rows_map, seed):
    """The nulls of score_responses computed one draw at a time, from the same draws."""
    masks = _region_masks(regions)
    crossnobis, cn_order = _crossnobis_rdms(Y, stim_id, masks)
    Y, stims, grp, _ = average_repeats(Y, stim_id, group)
    groups = leakage_free_groups(stims, grp)
    folds = outer_folds(groups)
    cn_rows = np.array([list(stims).index(s) for s in cn_order])
    rng = np.random.default_rng(seed)
    perms = [[rng.permutation(len(test)) for _, test in folds] for _ in range(N_DRAWS)]
    boots = [[rng.integers(0, len(test), len(test)) for _, test in folds]
             for _ in range(N_DRAWS)]
    stim_perms = [rng.permutation(len(stims)) for _ in range(N_DRAWS)]
    iu = np.triu_indices(len(stims), 1)

    def rsa_p(brain, layer_rdm):
        b, v = _zscore(rankdata(brain)[:, None])[:, 0], rankdata(layer_rdm)
        obs = b @ _zscore(v[:, None])[:, 0]
        square = squareform(v)
        null = np.array([b @ _zscore(square[np.ix_(p, p)][iu][:, None])[:, 0]
                         for p in stim_perms])
        return (1 + np.sum(null >= obs)) / (1 + N_DRAWS)

    out = {}
    alphas = np.logspace(-1, 4, 6)
    for control, F in features.items():
        for layer in range(N_LAYERS):
            X = F[layer][[rows_map[s] for s in stims]].astype(np.float64)
            # score_responses fits ridge in float32 and computes everything else in float64
            fit = fit_layer(X.astype(np.float32), Y, folds, groups, alphas, 3, "loo")
            pred = fit.pred.astype(np.float64)
            exceed = np.zeros(fit.r_folds.shape)
            region_exceed = {key: np.zeros(len(folds)) for key in masks}
            for draw in perms:
                for f, ((_, test), idx) in enumerate(zip(folds, draw)):
                    null = np.einsum("ij,ij->j", _zscore(pred[test]),
                                     _zscore(Y[test])[idx])
                    exceed[f] += null >= fit.r_folds[f]
                    for key, cols in masks.items():
                        region_exceed[key][f] += (np.nanmean(null[cols])
                                                  >= np.nanmean(fit.r_folds[f, cols]))
            boot = np.stack([np.mean([pearson_r(pred[test][i], Y[test][i])
                                      for (_, test), i in zip(folds, draw)], axis=0)
                             for draw in boots])
            K = X - X.mean(0)
            K = K @ K.T
            for key, cols in masks.items():
                lo, hi = np.quantile(np.nanmean(boot[:, cols], axis=1), [0.05, 0.95])
                row = {"p_target": aggregate_fold_pvalues((1 + exceed) / (1 + N_DRAWS)),
                       "p": float(aggregate_fold_pvalues((1 + region_exceed[key])
                                                         / (1 + N_DRAWS))),
                       "ci": (lo, hi)}
                if cols.sum() >= 2:
                    row["rsa_p"] = rsa_p(compute_rdm(Y[:, cols]), compute_rdm(X))
                    row["cn_p"] = rsa_p(crossnobis[key], compute_rdm(X[cn_rows]))
                L = Y[:, cols] - Y[:, cols].mean(0)
                L = L @ L.T
                norm = np.sqrt((K * K).sum() * (L * L).sum())
                null = np.array([(K[np.ix_(p, p)] * L).sum() / norm for p in stim_perms])
                row["cka_p"] = (1 + np.sum(null >= linear_cka(Y[:, cols], X))) / (1 + N_DRAWS)
                out[(control, layer, key)] = row
    return out


def test_score_responses_matches_per_draw_loops():
    """Same seed, same draws: every p-value and interval equals the per-draw loop's."""
    data = _subject()
    rows, _, per_target = score_responses(*data, PARAMS, seed=11)
    reference = _loop_reference(*data, seed=11)
    found = {(r["control"], r["layer"], r["region"], r["metric"]): r for r in rows}
    for (control, layer, key), ref in reference.items():
        r = found[(control, layer, key, "r")]
        assert r["p"] == pytest.approx(ref["p"], abs=1e-12)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(ref["ci"], abs=1e-12)
        np.testing.assert_allclose(per_target[f"p_{control}"][layer], ref["p_target"],
                                   rtol=1e-6)
        if "rsa_p" in ref:
            assert found[(control, layer, key, "rsa")]["p"] == pytest.approx(ref["rsa_p"])
            assert found[(control, layer, key, "rsa_crossnobis")]["p"] == pytest.approx(
                ref["cn_p"])
        assert found[(control, layer, key, "cka")]["p"] == pytest.approx(ref["cka_p"])
    # the planted layer is found and its nulls are far below it (not a vacuous match)
    assert found[("trained", 1, "A", "r")]["p"] < 0.05
    assert found[("trained", 1, "A", "cka")]["p"] < 0.05


def test_score_responses_without_resamples():
    """No permutation and no bootstrap: scores without p-values or intervals, no error."""
    params = {**PARAMS, "n_permutations": 0, "n_bootstraps": 0}
    rows, best, per_target = score_responses(*_subject(), params, seed=0)
    r = [row for row in rows if row["metric"] == "r"]
    assert all(np.isfinite(row["score"]) and np.isnan(row["ci_low"]) for row in r)
    assert all(row["p"] == 1.0 for row in r)  # (1 + 0) / (1 + 0): no evidence
    assert all(np.isnan(row["p"]) for row in rows if row["metric"] in ("rsa", "cka"))
    assert np.all(per_target["p_trained"] == 1.0)
    assert len(best) == 3


# --------------------------------------------------------------------------- time series
def test_timeseries_layer_statistics_match_per_draw_loops(monkeypatch):
    """Circular shifts per run and block-bootstrap counts against shifted and repeated
    copies of the data, with blocks small enough to split the targets."""
    monkeypatch.setattr(timeseries, "NULL_BLOCK_ELEMENTS", 64)
    rng = np.random.default_rng(6)
    n, t, n_draws = 90, 7, 25
    Y = rng.normal(size=(n, t))
    pred = (0.5 * Y + rng.normal(size=(n, t))).astype(np.float32)
    folds = [(np.arange(30, 90), np.arange(30)), (np.arange(30), np.arange(30, 90))]
    r_folds = np.stack([pearson_r(pred[test].astype(np.float64), Y[test])
                        for _, test in folds])
    fit = LayerFit(pred, r_folds, r_folds)
    regions = np.array(["a", "a", "b", "b", "b", "", "a"])
    masks = _region_masks(regions)
    draws = [timeseries._FoldDraws.draw(rng, timeseries.run_segments(
        np.repeat(np.arange(len(test) // 15), 15), len(test)), Y[test], n_draws, n_draws,
        min_shift=3, block=4) for _, test in folds]
    p, region_p, region_boot = timeseries._layer_statistics(fit, folds, draws,
                                                            _RegionMeans(masks))

    p_folds, region_p_folds, boot = [], {key: [] for key in masks}, 0.0
    for f, ((_, test), d) in enumerate(zip(folds, draws)):
        yt, pt = Y[test], pred[test].astype(np.float64)
        null = []
        for k in range(n_draws):
            shifted = yt.copy()
            for seg, shift in zip(d.segments, d.shifts):
                shifted[seg] = np.roll(yt[seg], -shift[k], axis=0)
            null.append(pearson_r(pt, shifted))
        null = np.stack(null)
        p_folds.append((1 + np.sum(null >= r_folds[f], axis=0)) / (1 + n_draws))
        for key, cols in masks.items():
            region_p_folds[key].append(
                (1 + np.sum(null[:, cols].mean(1) >= r_folds[f, cols].mean()))
                / (1 + n_draws))
        rows = [np.repeat(np.arange(len(test)), w.astype(int)) for w in d.weights]
        boot = boot + np.stack([pearson_r(pt[i], yt[i]) for i in rows]) / len(folds)
    np.testing.assert_allclose(p, aggregate_fold_pvalues(np.stack(p_folds)))
    for i, key in enumerate(masks):
        assert region_p[i] == pytest.approx(float(aggregate_fold_pvalues(
            np.array(region_p_folds[key]))))
        np.testing.assert_allclose(region_boot[:, i], boot[:, masks[key]].mean(1),
                                   atol=1e-12)



@pytest.mark.parametrize("cache_bytes, dtype", [(2**25, np.intp), (6000, np.int32)])
def test_pair_permutations_keep_c_ordered_indices(cache_bytes, dtype):
    # np.take reads Fortran-ordered or non-intp indices through a converted copy, which
    # made the RSA/CKA nulls of the demo's EEG jobs about five times slower
    rng = np.random.default_rng(5)
    pairs = PairPermutations(np.stack([rng.permutation(9) for _ in range(33)]),
                             cache_bytes=cache_bytes)
    assert pairs._cache is not None
    for _, idx in pairs._cache:
        assert idx.dtype == dtype and idx.flags.c_contiguous
    for _, idx in pairs._index_blocks():
        assert idx.dtype == np.intp and idx.flags.c_contiguous


def test_public_names_of_stats_exist_and_are_documented():
    assert len(set(stats.__all__)) == len(stats.__all__)
    for name in stats.__all__:
        obj = getattr(stats, name)
        if callable(obj) and not isinstance(obj, type):  # functions: numpydoc sections
            doc = obj.__doc__ or ""
            assert "Parameters\n" in doc and ("Returns\n" in doc or "Yields\n" in doc), name
    assert {"weighted_r", "counts_from_indices", "permuted_column_dots",
            "PairPermutations", "NULL_BLOCK_ELEMENTS"} <= set(stats.__all__)
