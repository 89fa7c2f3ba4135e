"""RSA: RDMs, crossnobis and RDM comparisons against rsatoolbox and direct references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform

from brainhead.align.rsa import (
    compare_rdms,
    compute_rdm,
    crossnobis_rdm,
    ledoit_wolf_from_gram,
    rsa_per_region_layer,
    shrinkage_noise_cov,
)

rsatoolbox = pytest.importorskip("rsatoolbox")
from rsatoolbox.data import Dataset  # noqa: E402
from rsatoolbox.rdm import RDMs, calc_rdm, compare  # noqa: E402


def _design(rng, n_stim=8, n_runs=4, p=20, noise=1.0):
    stim = np.tile(np.arange(n_stim), n_runs)
    runs = np.repeat(np.arange(n_runs), n_stim)
    mu = rng.standard_normal((n_stim, p))
    X = mu[stim] + noise * rng.standard_normal((len(stim), p))
    return X, stim, runs, mu


@pytest.mark.parametrize("metric", ["correlation", "euclidean"])
def test_rdm_matches_rsatoolbox(metric):
    X = np.random.default_rng(0).standard_normal((12, 30))
    expected = calc_rdm(Dataset(X), method=metric).get_vectors()[0]
    np.testing.assert_allclose(compute_rdm(X, metric), expected, rtol=1e-10, atol=1e-12)


def test_rdm_scales_and_square_form():
    X = np.random.default_rng(1).standard_normal((9, 7))
    # euclidean is the squared distance per feature
    np.testing.assert_allclose(compute_rdm(X, "euclidean") * 7, pdist(X, "sqeuclidean"))
    np.testing.assert_allclose(compute_rdm(X, "correlation"), pdist(X, "correlation"))
    D = compute_rdm(X, "correlation", square=True)
    assert D.shape == (9, 9)
    np.testing.assert_allclose(D, squareform(compute_rdm(X)), atol=1e-12)
    np.testing.assert_allclose(np.diag(D), 0, atol=1e-12)


def test_rdm_errors():
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match="metric must be one of"):
        compute_rdm(X, "cosine")
    with pytest.raises(ValueError, match="must be 2D"):
        compute_rdm(np.ones(4))
    with pytest.raises(ValueError, match="at least 2 features"):
        compute_rdm(np.ones((4, 1)), "correlation")
    assert np.all(np.isnan(compute_rdm(X, "correlation")))  # constant patterns


@pytest.mark.parametrize("method,rsa_name", [("spearman", "spearman"),
                                             ("kendall_tau_a", "tau-a"),
                                             ("pearson", "corr")])
@pytest.mark.parametrize("ties", [False, True])
def test_compare_matches_rsatoolbox(method, rsa_name, ties):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((14, 25))
    a = compute_rdm(X)
    b = compute_rdm(X + 1.5 * rng.standard_normal(X.shape))
    if ties:  # a model RDM with many tied dissimilarities
        b = np.round(b * 3) / 3
    expected = compare(RDMs(a[None]), RDMs(b[None]), method=rsa_name)[0, 0]
    assert compare_rdms(a, b, method) == pytest.approx(expected, abs=1e-12)
    # square input gives the same answer
    assert compare_rdms(squareform(a), squareform(b), method) == pytest.approx(expected,
                                                                               abs=1e-12)


def test_tau_a_by_hand():
    # pairs (0,1), (0,2) concordant, (1,2) discordant -> (2 - 1) / 3
    assert compare_rdms([1, 2, 3], [1, 3, 2], "kendall_tau_a") == pytest.approx(1 / 3)
    # the tie in a makes pair (0,1) neither; the denominator stays 3 (tau-a, not tau-b)
    assert compare_rdms([1, 1, 2], [1, 2, 3], "kendall_tau_a") == pytest.approx(2 / 3)
    assert compare_rdms([1, 1, 1], [1, 2, 3], "kendall_tau_a") == 0.0


def test_compare_drops_nan_and_validates():
    a, b = np.array([1., 2, 3, 4, np.nan]), np.array([2., 1, 4, 3, 10])
    assert compare_rdms(a, b, "pearson") == pytest.approx(np.corrcoef(a[:4], b[:4])[0, 1])
    with pytest.raises(ValueError, match="must match in shape"):
        compare_rdms(np.ones(3), np.ones(6))
    with pytest.raises(ValueError, match="method must be one of"):
        compare_rdms(np.ones(3), np.ones(3), "kendall")


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_crossnobis_matches_rsatoolbox():  # (the warning is rsatoolbox's own)
    rng = np.random.default_rng(3)
    X, stim, runs, _ = _design(rng)
    ds = Dataset(X, obs_descriptors={"stim": stim, "run": runs})
    kw = dict(method="crossnobis", descriptor="stim", cv_descriptor="run")
    expected = calc_rdm(ds, **kw).get_vectors()[0]
    np.testing.assert_allclose(crossnobis_rdm(X, stim, runs), expected, atol=1e-12)
    cov = np.cov(rng.standard_normal((200, X.shape[1])).T)
    expected = calc_rdm(ds, noise=np.linalg.inv(cov), **kw).get_vectors()[0]
    np.testing.assert_allclose(crossnobis_rdm(X, stim, runs, noise_cov=cov), expected,
                               rtol=1e-9, atol=1e-12)


def test_crossnobis_shrinkage_uses_ledoit_wolf():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(4)
    R = rng.standard_normal((30, 12))
    np.testing.assert_allclose(shrinkage_noise_cov(R),
                               LedoitWolf(assume_centered=True).fit(R).covariance_,
                               rtol=1e-10)
    X, stim, runs, _ = _design(rng, p=12)
    # residuals from the stimulus means, dof = n_samples - n_stimuli
    means = np.stack([X[stim == s].mean(0) for s in range(8)])
    cov = shrinkage_noise_cov(X - means[stim], dof=len(stim) - 8)
    np.testing.assert_allclose(crossnobis_rdm(X, stim, runs, noise_cov="shrinkage"),
                               crossnobis_rdm(X, stim, runs, noise_cov=cov), rtol=1e-10)


@pytest.mark.parametrize("shape", [(12, 40), (40, 12)])
def test_ledoit_wolf_from_the_gram_matrix_equals_sklearn(shape):
    from sklearn.covariance import ledoit_wolf_shrinkage

    R = np.random.default_rng(7).standard_normal(shape) * np.linspace(0.5, 2, shape[1])
    assert ledoit_wolf_from_gram(R @ R.T, shape[1]) == pytest.approx(
        ledoit_wolf_shrinkage(R, assume_centered=True), rel=1e-10)


def test_crossnobis_with_more_targets_than_residuals_matches_the_dense_precision():
    """Fewer residual rows than features: the precision is applied through Woodbury's
    identity instead of inverting the targets-square covariance; same distances."""
    rng = np.random.default_rng(11)
    X, stim, runs, _ = _design(rng, n_stim=6, n_runs=3, p=60)  # 18 rows, 60 features
    means = np.stack([X[stim == s].mean(0) for s in range(6)])
    cov = shrinkage_noise_cov(X - means[stim], dof=len(stim) - 6)
    assert len(stim) < 60
    np.testing.assert_allclose(crossnobis_rdm(X, stim, runs, noise_cov="shrinkage"),
                               crossnobis_rdm(X, stim, runs, noise_cov=cov), rtol=1e-9)
    # and the dense covariance is still Ledoit-Wolf's
    from sklearn.covariance import ledoit_wolf_shrinkage

    R = X - means[stim]
    lam = ledoit_wolf_shrinkage(R, assume_centered=True)
    S = R.T @ R / (len(stim) - 6)
    np.testing.assert_allclose(
        cov, (1 - lam) * S + lam * np.trace(S) / 60 * np.eye(60), rtol=1e-10)


def test_crossnobis_is_unbiased_where_plain_distance_is_not():
    rng = np.random.default_rng(5)
    n_stim, n_runs, p, sigma = 6, 3, 10, 1.0
    mu = rng.standard_normal((n_stim, p)) * 0.5
    true = compute_rdm(mu, "euclidean")
    stim = np.tile(np.arange(n_stim), n_runs)
    runs = np.repeat(np.arange(n_runs), n_stim)
    cv, naive = [], []
    for _ in range(300):
        X = mu[stim] + sigma * rng.standard_normal((len(stim), p))
        cv.append(crossnobis_rdm(X, stim, runs))
        naive.append(compute_rdm(np.stack([X[stim == s].mean(0) for s in range(n_stim)]),
                                 "euclidean"))
    # naive distance of run averages is biased by 2 sigma^2 / n_runs per feature
    assert np.mean(naive) - true.mean() == pytest.approx(2 * sigma**2 / n_runs, rel=0.15)
    assert abs(np.mean(cv) - true.mean()) < 0.05 * true.mean()
    assert np.abs(np.mean(cv, axis=0) - true).max() < 0.15


def test_crossnobis_unbalanced_matches_direct_loop():
    rng = np.random.default_rng(6)
    X, stim, runs, _ = _design(rng, n_stim=5, n_runs=4, p=6)
    drop = (stim == 2) & (runs == 1)  # stimulus 2 missing from run 1
    extra = rng.standard_normal((1, 6))  # a second repeat of stimulus 0 in run 0
    X = np.vstack([X[~drop], extra])
    stim, runs = np.r_[stim[~drop], 0], np.r_[runs[~drop], 0]
    D = crossnobis_rdm(X, stim, runs, square=True)
    for i in range(5):
        for j in range(i + 1, 5):
            vals = []
            for k in range(4):
                te, tr = runs == k, runs != k
                if all(np.any(m & (stim == s)) for m in (te, tr) for s in (i, j)):
                    m_i, m_j = X[te & (stim == i)].mean(0), X[te & (stim == j)].mean(0)
                    t_i, t_j = X[tr & (stim == i)].mean(0), X[tr & (stim == j)].mean(0)
                    vals.append((t_i - t_j) @ (m_i - m_j) / 6)
            assert D[i, j] == pytest.approx(np.mean(vals), abs=1e-12)


def test_crossnobis_errors():
    rng = np.random.default_rng(7)
    X, stim, runs, _ = _design(rng, n_stim=4, n_runs=2, p=5)
    with pytest.raises(ValueError, match=r"every stimulus in >= 2 runs"):
        crossnobis_rdm(X, stim, np.zeros_like(runs))
    with pytest.raises(ValueError, match="noise_cov must be"):
        crossnobis_rdm(X, stim, runs, noise_cov=np.eye(3))
    with pytest.raises(ValueError, match="stim_id must have shape"):
        crossnobis_rdm(X, stim[:-1], runs)
    D, labels = crossnobis_rdm(X, np.array(list("dcba"))[stim], runs, return_stimuli=True)
    assert labels.tolist() == ["a", "b", "c", "d"] and D.shape == (6,)


def test_rsa_per_region_layer_finds_planted_layers():
    rng = np.random.default_rng(8)
    n = 40
    layers = {f"L{i}": rng.standard_normal((n, 16)) for i in range(3)}
    Y = np.hstack([layers["L2"] @ rng.standard_normal((16, 10)),
                   layers["L0"] @ rng.standard_normal((16, 8))])
    Y += 0.5 * rng.standard_normal(Y.shape)
    regions = np.array(["V1"] * 10 + ["IT"] * 8)
    df = rsa_per_region_layer(Y, regions, layers)
    assert list(df.columns) == ["region", "layer", "score", "n_targets"]
    assert len(df) == 3 * 3 and df.region.unique().tolist() == ["all", "IT", "V1"]
    best = df.loc[df.groupby("region").score.idxmax()].set_index("region").layer
    assert best["V1"] == "L2" and best["IT"] == "L0"
    row = df[(df.region == "IT") & (df.layer == "L1")].iloc[0]
    assert row.score == pytest.approx(compare_rdms(compute_rdm(Y[:, 10:]),
                                                   compute_rdm(layers["L1"])))
    assert row.n_targets == 8
    # an (n_layers, n_stimuli, dim) array labels layers 0, 1, ...
    stacked = rsa_per_region_layer(Y, regions, np.stack(list(layers.values())),
                                   include_all=False, method="kendall_tau_a")
    assert stacked.layer.tolist() == [0, 1, 2, 0, 1, 2]
    it_l0 = stacked[(stacked.region == "IT") & (stacked.layer == 0)].score.iloc[0]
    assert it_l0 == pytest.approx(compare_rdms(compute_rdm(Y[:, 10:]),
                                               compute_rdm(layers["L0"]), "kendall_tau_a"))


def test_rsa_per_region_layer_single_target_and_errors():
    rng = np.random.default_rng(9)
    Y, F = rng.standard_normal((10, 3)), rng.standard_normal((10, 4))
    df = rsa_per_region_layer(Y, ["a", "b", "b"], [F])
    assert np.isnan(df[df.region == "a"].score.iloc[0])  # no correlation RDM over 1 target
    assert df[df.region == "b"].score.notna().all()
    with pytest.raises(ValueError, match="to match the 10 rows of Y"):
        rsa_per_region_layer(Y, ["a", "b", "b"], {"x": F[:9]})
    with pytest.raises(ValueError, match="one label per target"):
        rsa_per_region_layer(Y, ["a", "b"], [F])
