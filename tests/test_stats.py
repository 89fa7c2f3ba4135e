"""Permutations, p-values, FDR, bootstrap CIs, paired tests and layer statistics."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
from scipy import stats

from brainhead.align.stats import (
    best_layer_on_train,
    bootstrap_ci,
    bootstrap_r_ci,
    fdr_bh,
    intermediate_layer_advantage,
    paired_test,
    permutation_pvalues,
    permutation_test,
    permute_indices,
)


def _corr_with(x):
    xc = (x - x.mean()) / np.linalg.norm(x - x.mean())

    def score(Y):
        Yc = Y - Y.mean(0)
        return xc @ Yc / np.linalg.norm(Yc, axis=0)

    return score


# ---------------------------------------------------------------- permutations
def _runs():
    # three runs of unequal length, interleaved in the row order
    return np.array([0, 0, 1, 1, 1, 2, 0, 0, 1, 2, 2, 0, 1, 1, 0, 2, 2, 2, 0, 1])


@pytest.mark.parametrize("scheme", ["stimulus", "block", "circular"])
def test_permutations_stay_within_runs(scheme):
    runs = _runs()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        idx = permute_indices(len(runs), scheme, groups=runs, block_size=2, rng=rng)
        assert np.array_equal(np.sort(idx), np.arange(len(runs)))  # a permutation
        assert np.array_equal(runs[idx], runs)  # every value stays in its run
        seen.add(tuple(idx))
    assert len(seen) > 5  # random, not a fixed reordering


def test_circular_is_a_rotation_of_each_run():
    runs = _runs()
    rng = np.random.default_rng(1)
    for _ in range(20):
        idx = permute_indices(len(runs), "circular", groups=runs, rng=rng)
        for g in np.unique(runs):
            rows = np.flatnonzero(runs == g)
            shifts = [s for s in range(1, len(rows)) if np.array_equal(idx[rows],
                                                                       np.roll(rows, s))]
            assert len(shifts) == 1  # a non-zero circular shift


def test_block_keeps_blocks_contiguous():
    runs = np.repeat([0, 1], [10, 7])
    rng = np.random.default_rng(2)
    for _ in range(20):
        idx = permute_indices(len(runs), "block", groups=runs, block_size=3, rng=rng)
        for g in (0, 1):
            rows = np.flatnonzero(runs == g)
            expected = {tuple(b) for b in np.split(rows, np.arange(3, len(rows), 3))}
            seq, got, i = idx[rows], set(), 0
            while i < len(seq):  # blocks appear whole and in their original order inside
                size = len(next(b for b in expected if b[0] == seq[i]))
                got.add(tuple(seq[i:i + size]))
                i += size
            assert got == expected


def test_permute_indices_errors():
    with pytest.raises(ValueError, match="needs block_size"):
        permute_indices(10, "block")
    with pytest.raises(ValueError, match="scheme must be one of"):
        permute_indices(10, "random")
    with pytest.raises(ValueError, match="groups must have shape"):
        permute_indices(10, groups=np.zeros(9))
    with pytest.raises(ValueError, match="too short for circular"):
        permute_indices(3, "circular", min_shift=2)


def test_permutation_pvalues_by_hand():
    null = np.array([0.1, 0.2, 0.3, 0.4, np.nan])[:, None]
    assert permutation_pvalues([0.25], null)[0] == pytest.approx(3 / 5)
    assert permutation_pvalues([0.5], null)[0] == pytest.approx(1 / 5)
    assert permutation_pvalues([0.5], null, "less")[0] == pytest.approx(1.0)
    assert permutation_pvalues([0.5], null, "two-sided")[0] == pytest.approx(2 / 5)
    assert permutation_pvalues([0.25], null, "two-sided")[0] == 1.0
    assert np.isnan(permutation_pvalues([np.nan], null)[0])
    with pytest.raises(ValueError, match="null must be"):
        permutation_pvalues([0.1, 0.2], null)


@pytest.mark.parametrize("scheme", ["stimulus", "circular"])
def test_pvalues_uniform_under_the_null(scheme):
    rng = np.random.default_rng(3)
    n = 30
    pvals = []
    for _ in range(200):
        x, y = rng.standard_normal(n), rng.standard_normal((n, 1))
        res = permutation_test(_corr_with(x), y, n_permutations=99, scheme=scheme,
                               seed=rng, alternative="two-sided")
        pvals.append(res.pvalues[0])
    pvals = np.array(pvals)
    assert stats.kstest(pvals, "uniform").pvalue > 0.01
    n_sig = int(np.sum(pvals <= 0.05))  # P(p <= 0.05) is exactly 0.05 with 99 permutations
    assert stats.binomtest(n_sig, 200, 0.05).pvalue > 0.01


def test_permutation_test_detects_a_strong_effect():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(40)
    Y = np.column_stack([x + 0.3 * rng.standard_normal(40), rng.standard_normal(40)])
    res = permutation_test(_corr_with(x), Y, n_permutations=199, seed=0)
    assert res.null.shape == (199, 2) and res.observed.shape == (2,)
    assert res.pvalues[0] == pytest.approx(1 / 200)
    assert res.pvalues[1] > 0.01
    np.testing.assert_allclose(res.observed, [np.corrcoef(x, Y[:, j])[0, 1] for j in (0, 1)])
    # the same seed reproduces the null
    again = permutation_test(_corr_with(x), Y, n_permutations=199, seed=0)
    np.testing.assert_array_equal(again.null, res.null)


# ------------------------------------------------------------------------- FDR
def test_fdr_matches_scipy_and_is_monotone():
    rng = np.random.default_rng(5)
    p = np.concatenate([rng.uniform(0, 0.01, 20), rng.uniform(0, 1, 180)])
    q = fdr_bh(p)
    np.testing.assert_allclose(q, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    order = np.argsort(p)
    assert np.all(np.diff(q[order]) >= 0)
    assert np.all(q >= p) and np.all(q <= 1)


def test_fdr_is_nan_aware_and_keeps_shape():
    rng = np.random.default_rng(6)
    p = rng.uniform(0, 0.2, (4, 5))
    p[1, 2] = p[3, 0] = np.nan
    q = fdr_bh(p)
    assert q.shape == (4, 5)
    assert np.isnan(q[1, 2]) and np.isnan(q[3, 0])
    ok = ~np.isnan(p)
    np.testing.assert_allclose(q[ok], stats.false_discovery_control(p[ok]), rtol=1e-12)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fdr_bh([0.5, 1.5])


# ------------------------------------------------------------------- bootstrap
def test_bootstrap_r_matches_explicit_resampling():
    rng = np.random.default_rng(7)
    A = rng.standard_normal((25, 3))
    B = A + rng.standard_normal((25, 3))
    res = bootstrap_r_ci(A, B, n_boot=50, seed=11, per_target=True)
    np.testing.assert_allclose(res["r"], [np.corrcoef(A[:, j], B[:, j])[0, 1]
                                          for j in range(3)])
    assert res["estimate"] == pytest.approx(res["r"].mean())
    assert res["low"] < res["estimate"] < res["high"]
    assert np.all(res["r_low"] < res["r"]) and np.all(res["r"] < res["r_high"])
    # every bootstrap value is the mean r of some resample of the rows: check the range
    assert res["distribution"].shape == (50,)
    assert np.all(np.abs(res["distribution"]) <= 1)


def test_bootstrap_r_ci_coverage():
    rng = np.random.default_rng(8)
    n, noise_sd = 60, np.array([0.5, 1.0, 1.5])
    true = np.mean(1 / np.sqrt(1 + noise_sd**2))  # population r of signal vs signal+noise
    covered = 0
    n_exp = 200
    for i in range(n_exp):
        S = rng.standard_normal((n, 3))
        res = bootstrap_r_ci(S + noise_sd * rng.standard_normal((n, 3)), S, n_boot=300,
                             seed=i)
        covered += res["low"] <= true <= res["high"]
    assert 0.88 <= covered / n_exp <= 0.99


def test_bootstrap_ci_coverage_and_columns():
    rng = np.random.default_rng(9)
    covered = sum(
        (r := bootstrap_ci(rng.normal(1.0, 2.0, 40), n_boot=300, seed=i))["low"] <= 1.0
        <= r["high"] for i in range(200))
    assert 0.88 <= covered / 200 <= 0.99
    res = bootstrap_ci(rng.standard_normal((30, 4)), n_boot=100, stat="median")
    assert res["low"].shape == (4,) and res["distribution"].shape == (100, 4)
    assert np.all(res["low"] <= res["estimate"]) and np.all(res["estimate"] <= res["high"])
    with pytest.raises(ValueError, match="stat must be one of"):
        bootstrap_ci(np.ones(5), stat="mode")
    with pytest.raises(ValueError, match=r"ci must be in \(0, 1\)"):
        bootstrap_ci(np.ones(5), ci=95)


# ------------------------------------------------------------------ paired test
@pytest.mark.parametrize("method", ["wilcoxon", "signflip"])
def test_paired_test_detects_planted_difference_not_null(method):
    rng = np.random.default_rng(10)
    b = rng.standard_normal(40)
    res = paired_test(b + 0.6 + 0.5 * rng.standard_normal(40), b, method=method,
                      n_permutations=2000)
    assert res.statistic > 0 and res.pvalue < 0.001
    n_sig = sum(paired_test(rng.standard_normal(30), rng.standard_normal(30), method,
                            n_permutations=200, seed=i).pvalue <= 0.05 for i in range(100))
    assert stats.binomtest(n_sig, 100, 0.05, alternative="greater").pvalue > 0.01


def test_signflip_matches_exact_enumeration():
    rng = np.random.default_rng(11)
    d = rng.standard_normal(8) + 0.5
    signs = np.array(list(product([-1, 1], repeat=8)))
    null = signs @ d / 8
    exact = np.mean(null >= d.mean())
    res = paired_test(d, np.zeros(8), "signflip", n_permutations=20000, seed=0,
                      alternative="greater")
    assert res.statistic == pytest.approx(d.mean())
    assert res.pvalue == pytest.approx(exact, abs=0.01)
    assert paired_test(d, np.zeros(8), "wilcoxon").pvalue == pytest.approx(
        stats.wilcoxon(d).pvalue)


def test_paired_test_per_layer_and_nan():
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    a[:, 2] += 2.0
    a[0, 1] = np.nan
    res = paired_test(a, b)
    assert res.pvalue.shape == (4,) and np.argmin(res.pvalue) == 2
    assert res.pvalue[1] == pytest.approx(stats.wilcoxon(a[1:, 1], b[1:, 1]).pvalue)
    with pytest.raises(ValueError, match="same shape"):
        paired_test(a, b[:, :3])


# ---------------------------------------------------------------- layer choice
def test_best_layer_is_chosen_on_train_scores_only():
    train = np.array([[0.1, 0.5, 0.2, 0.3],
                      [0.2, 0.1, 0.6, 0.3],
                      [0.4, 0.5, 0.1, 0.2]])
    test = np.array([[0.1, 0.2, 0.3, 0.9],  # on test, layer 3 would look best
                     [0.0, 0.1, 0.2, 0.8],
                     [0.3, 0.1, 0.2, 0.7]])
    res = best_layer_on_train(train, test)
    np.testing.assert_array_equal(res["layer"], [1, 2, 1])
    np.testing.assert_allclose(res["score"], [0.2, 0.2, 0.1])
    assert res["mean"] == pytest.approx(0.5 / 3)
    assert res["mean"] < test.max(1).mean()  # choosing on test would inflate the score
    # changing test scores of layers not chosen changes nothing
    other = test.copy()
    other[[0, 1, 2], [3, 3, 3]] = 100
    assert best_layer_on_train(train, other)["mean"] == pytest.approx(res["mean"])


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_best_layer_with_targets():
    rng = np.random.default_rng(13)
    train = rng.standard_normal((5, 6, 3))
    train[1, 4, :] = np.nan  # NaN layers are never chosen
    test = rng.standard_normal((5, 6, 3))
    res = best_layer_on_train(train, test)
    assert res["layer"].shape == (5, 3) and res["mean"].shape == (3,)
    np.testing.assert_array_equal(res["layer"], np.nanargmax(train, axis=1))
    assert np.all(res["layer"][1] != 4)
    pooled = best_layer_on_train(train, test, per_target=False)
    expected = np.nanargmax(np.nanmean(train, axis=2), axis=1)
    np.testing.assert_array_equal(pooled["layer"], np.repeat(expected[:, None], 3, 1))
    with pytest.raises(ValueError, match="same shape"):
        best_layer_on_train(train, test[:, :5])


def test_intermediate_layer_advantage():
    rng = np.random.default_rng(14)
    profile = np.array([0.1, 0.2, 0.35, 0.3, 0.15])
    S = profile[:, None] + 0.05 * rng.standard_normal((5, 60))
    res = intermediate_layer_advantage(S, n_boot=500, seed=0)
    means = S.mean(1)
    assert res["best_layer"] == 2 and res["relative_depth"] == pytest.approx(0.5)
    assert res["gap"] == pytest.approx(means[2] - means[-1])
    assert res["gap_low"] < res["gap"] < res["gap_high"]
    assert res["gap_low"] > 0.15 and res["p_last_best"] == 0.0
    # a monotone profile: the last layer is best and the gap is 0
    mono = np.linspace(0, 0.4, 5)[:, None] + 0.05 * rng.standard_normal((5, 60))
    res = intermediate_layer_advantage(mono, n_boot=300, seed=0)
    assert res["best_layer"] == 4 and res["gap"] == 0.0 and res["p_last_best"] > 0.9
    with pytest.raises(ValueError, match="at least 2 layers"):
        intermediate_layer_advantage(np.ones((1, 5)))
