"""Tests of brainhead.align: the ridge solvers, GroupRidgeCV, the CV groups and the
layer-by-layer scoring of a subject against a model and its random control."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from brainhead.align import (
    BEST_COLUMNS,
    SUMMARY_COLUMNS,
    GroupRidgeCV,
    align_subject,
    collect_summary,
    encoding_scores,
    leakage_free_groups,
    pearson_r,
    score_responses,
    score_subject,
    solve_ridge_coef,
    solve_ridge_svd,
)
from brainhead.align.ridge import DEFAULT_ALPHAS
from brainhead.align.scores import (
    aggregate_fold_pvalues,
    average_repeats,
    fit_layer,
    noise_ceiling,
    outer_folds,
    view_for,
)
from brainhead.io import (
    RecordingError,
    ResponseTable,
    Targets,
    View,
    provenance,
    read_arrays,
    write_arrays,
    write_responses,
)


def _closed_form(X, Y, alpha):
    return np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ Y)


def _same_partition(a, b) -> bool:
    """True when labelings ``a`` and ``b`` put the same samples together."""
    a, b = np.asarray(a), np.asarray(b)
    return bool(np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 6))
    Y = rng.normal(size=(30, 4))
    X_test = rng.normal(size=(7, 6))
    return X, Y, X_test


# --------------------------------------------------------------------------- solvers
def test_solve_ridge_svd_matches_closed_form(problem):
    X, Y, X_test = problem
    alphas = np.array([1e-3, 0.5, 10.0, 1e4])
    preds = solve_ridge_svd(X, Y, alphas, X_test)
    assert preds.shape == (len(alphas), X_test.shape[0], Y.shape[1])
    for i, alpha in enumerate(alphas):
        np.testing.assert_allclose(preds[i], X_test @ _closed_form(X, Y, alpha),
                                   rtol=1e-10, atol=1e-12)
    # more regularisation shrinks the predictions
    norms = np.linalg.norm(preds, axis=(1, 2))
    assert np.all(np.diff(norms) < 0)


def test_solve_ridge_svd_wide_design():
    """More features than samples: the thin SVD still gives the exact ridge solution."""
    rng = np.random.default_rng(1)
    X, Y, X_test = rng.normal(size=(8, 20)), rng.normal(size=(8, 3)), rng.normal(size=(4, 20))
    preds = solve_ridge_svd(X, Y, np.array([0.1, 3.0]), X_test)
    for i, alpha in enumerate([0.1, 3.0]):
        np.testing.assert_allclose(preds[i], X_test @ _closed_form(X, Y, alpha), rtol=1e-9)


def test_solve_ridge_coef_matches_closed_form(problem):
    X, Y, _ = problem
    for alpha in (1e-2, 1.0, 100.0):
        coef = solve_ridge_coef(X, Y, np.full(Y.shape[1], alpha))
        np.testing.assert_allclose(coef, _closed_form(X, Y, alpha), rtol=1e-10, atol=1e-12)


def test_solve_ridge_coef_alpha_per_target(problem):
    X, Y, _ = problem
    alphas = np.array([0.1, 1e3, 0.1, 5.0])  # repeated alpha on targets 0 and 2
    coef = solve_ridge_coef(X, Y, alphas)
    assert coef.shape == (X.shape[1], Y.shape[1])
    for j, alpha in enumerate(alphas):
        np.testing.assert_allclose(coef[:, j], _closed_form(X, Y[:, [j]], alpha)[:, 0],
                                   rtol=1e-10, atol=1e-12)


def test_solvers_keep_float32(problem):
    X, Y, X_test = (a.astype(np.float32) for a in problem)
    assert solve_ridge_svd(X, Y, np.array([1.0]), X_test).dtype == np.float32
    coef = solve_ridge_coef(X, Y, np.ones(Y.shape[1]))
    assert coef.dtype == np.float32
    np.testing.assert_allclose(coef, _closed_form(X.astype(float), Y.astype(float), 1.0),
                               rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------- GroupRidgeCV
@pytest.mark.parametrize("alpha", [0.1, 10.0, 1000.0])
def test_group_ridge_single_alpha_matches_sklearn_ridge(alpha):
    rng = np.random.default_rng(2)
    X = rng.normal(loc=3.0, scale=[1.0, 5.0, 0.2, 2.0, 1.0], size=(60, 5))
    Y = X @ rng.normal(size=(5, 3)) + rng.normal(size=(60, 3)) + [10.0, -2.0, 0.0]
    X_test = rng.normal(loc=3.0, size=(15, 5))
    groups = np.repeat(np.arange(6), 10)

    model = GroupRidgeCV(alphas=[alpha], n_splits=3).fit(X, Y, groups=groups)
    np.testing.assert_array_equal(model.best_alphas_, np.full(3, alpha))

    scaler = StandardScaler().fit(X)
    ymean = Y.mean(0)
    ref = Ridge(alpha=alpha).fit(scaler.transform(X), Y - ymean)
    expected = ref.predict(scaler.transform(X_test)) + ymean
    np.testing.assert_allclose(model.predict(X_test), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.intercept_, ymean)
    np.testing.assert_allclose(model.coef_, ref.coef_.T, rtol=1e-6, atol=1e-10)


def test_group_ridge_chooses_alpha_by_signal():
    rng = np.random.default_rng(3)
    n, p = 120, 5
    X = rng.normal(size=(n, p))
    noiseless = X @ rng.normal(size=p)
    noise = rng.normal(size=n)
    Y = np.column_stack([noise, noiseless])
    groups = np.repeat(np.arange(12), 10)
    alphas = np.logspace(-3, 6, 10)

    model = GroupRidgeCV(alphas=alphas, n_splits=4).fit(X, Y, groups=groups)
    assert model.best_alphas_.shape == (2,)
    assert model.cv_scores_.shape == (len(alphas), 2)
    assert model.coef_.shape == (p, 2)
    assert model.intercept_.shape == (2,)
    assert model.best_alphas_[0] >= 1e3          # pure noise: shrink everything
    assert model.best_alphas_[1] == alphas.min()  # noiseless linear: no shrinkage
    assert model.cv_scores_[0, 1] > 0.999
    assert model.cv_scores_[:, 0].max() < 0.05
    # the chosen alpha is the one with the best inner-fold score
    np.testing.assert_array_equal(model.best_alphas_, alphas[model.cv_scores_.argmax(0)])
    # score() is the mean Pearson r over targets
    assert model.score(X, Y) == pytest.approx(
        np.nanmean(pearson_r(model.predict(X), Y)))


def test_group_ridge_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        GroupRidgeCV().predict(np.zeros((3, 2)))


def test_group_ridge_1d_target():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.01 * rng.normal(size=40)
    model = GroupRidgeCV(alphas=[0.01, 1.0, 100.0], n_splits=3).fit(
        X, y, groups=np.repeat(np.arange(4), 10))
    pred = model.predict(X[:5])
    assert pred.shape == (5,)
    assert model.best_alphas_.shape == (1,)
    np.testing.assert_allclose(pred, y[:5], atol=0.1)
    # 2-D y with one column keeps its 2-D shape
    assert model.fit(X, y[:, None]).predict(X[:5]).shape == (5, 1)


def test_group_ridge_without_groups_uses_samples():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 2))
    y = X @ [1.0, 1.0]
    model = GroupRidgeCV(alphas=[1e-3, 1e3], n_splits=3).fit(X, y)
    assert model.best_alphas_[0] == 1e-3
    np.testing.assert_allclose(model.predict(X), y, atol=1e-3)


@pytest.mark.parametrize("alphas", [[-1.0, 1.0], [0.0], [], np.array([])])
def test_group_ridge_invalid_alphas(alphas):
    X, y = np.random.default_rng(6).normal(size=(20, 2)), np.arange(20.0)
    with pytest.raises(ValueError, match="alphas must be positive and non-empty"):
        GroupRidgeCV(alphas=alphas).fit(X, y)


def test_group_ridge_needs_two_groups():
    X, y = np.random.default_rng(7).normal(size=(20, 2)), np.arange(20.0)
    with pytest.raises(ValueError, match="at least 2 groups"):
        GroupRidgeCV(alphas=[1.0]).fit(X, y, groups=np.zeros(20))


def test_group_ridge_groups_length_mismatch():
    X, y = np.random.default_rng(8).normal(size=(20, 2)), np.arange(20.0)
    with pytest.raises(ValueError, match="groups has 19 entries"):
        GroupRidgeCV(alphas=[1.0]).fit(X, y, groups=np.arange(19))


def test_group_ridge_clone_and_params():
    est = GroupRidgeCV(alphas=[0.5, 5.0], n_splits=3)
    assert est.get_params() == {"alphas": [0.5, 5.0], "n_splits": 3, "cv": None,
                                "device": "auto", "dtype": None, "standardize": True,
                                "target_batch_size": None}
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert not hasattr(twin, "coef_")
    assert twin.set_params(n_splits=7).n_splits == 7
    assert GroupRidgeCV().get_params()["alphas"] is DEFAULT_ALPHAS


def test_group_ridge_repr():
    """repr() must work (logging, error messages, sklearn's html display, test ids).

    Fails with brainhead's ndarray default for ``alphas``: sklearn's repr compares
    the default with ``==``, which is ambiguous for an array (see the report).
    """
    assert repr(GroupRidgeCV()) == "GroupRidgeCV()"
    assert "n_splits=3" in repr(GroupRidgeCV(alphas=[1.0], n_splits=3))


# Checks that fail for documented reasons. check_estimator_repr is the bug tested by
# test_group_ridge_repr; keeping it here avoids reporting one bug twice.
_EXPECTED_FAILED_CHECKS = {
    "check_fit2d_1sample": "one sample is one group: GroupRidgeCV says 'needs at least "
                           "2 groups', not the 'n_samples=1' wording the check looks for",
    "check_supervised_y_2d": "GroupRidgeCV is multi-output but does not declare "
                             "target_tags.multi_output=True, so sklearn expects a "
                             "DataConversionWarning for a column y",
    "check_estimator_repr": "library bug: ndarray default of alphas breaks repr "
                            "(see test_group_ridge_repr)",
}


def _run_checks(estimator, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sklearn.utils.estimator_checks import check_estimator

        results = check_estimator(estimator, on_fail=None, on_skip=None,
                                  expected_failed_checks=expected)
    return results


def test_group_ridge_sklearn_estimator_checks():
    results = _run_checks(GroupRidgeCV(alphas=[0.1, 1.0, 10.0], n_splits=3),
                          _EXPECTED_FAILED_CHECKS)
    statuses = {r["check_name"]: r["status"] for r in results}
    failed = {r["check_name"]: repr(r["exception"])[:200] for r in results
              if r["status"] == "failed"}
    assert failed == {}
    assert sum(s == "passed" for s in statuses.values()) >= 40
    assert statuses["check_fit2d_1sample"] == "xfail"  # still fails for its reason
    for name in ("check_fit_score_takes_y", "check_estimators_dtypes",
                 "check_regressors_train", "check_fit_check_is_fitted"):
        assert statuses[name] == "passed"


class _TaggedGroupRidgeCV(GroupRidgeCV):
    """GroupRidgeCV with the fixes proposed in the report (tuple default, tags)."""

    def __init__(self, alphas=tuple(np.asarray(DEFAULT_ALPHAS).tolist()), n_splits: int = 5):
        super().__init__(alphas=alphas, n_splits=n_splits)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def test_group_ridge_estimator_checks_with_proposed_fix():
    """With a non-array default and a multi-output tag, only the 1-sample wording check
    fails, and the multi-output regressor checks (skipped otherwise) pass."""
    results = _run_checks(_TaggedGroupRidgeCV(),
                          {"check_fit2d_1sample": _EXPECTED_FAILED_CHECKS[
                              "check_fit2d_1sample"]})
    statuses = {r["check_name"]: r["status"] for r in results}
    assert [n for n, s in statuses.items() if s == "failed"] == []
    assert statuses["check_regressor_multioutput"] == "passed"
    assert statuses["check_estimator_repr"] == "passed"


# --------------------------------------------------------------------------- pearson_r
def test_pearson_r_matches_scipy():
    rng = np.random.default_rng(9)
    A = rng.normal(size=(50, 4))
    B = 0.5 * A + rng.normal(size=(50, 4)) * [0.1, 1.0, 3.0, 10.0]
    r = pearson_r(A, B)
    expected = [scipy.stats.pearsonr(A[:, j], B[:, j]).statistic for j in range(4)]
    np.testing.assert_allclose(r, expected, rtol=1e-12)
    np.testing.assert_allclose(pearson_r(A, -A), -1.0)


def test_pearson_r_constant_column_is_nan():
    rng = np.random.default_rng(10)
    A = rng.normal(size=(20, 3))
    B = rng.normal(size=(20, 3))
    A[:, 1] = 1.0
    B[:, 2] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks out
        r = pearson_r(A, B)
    assert np.isfinite(r[0])
    assert np.isnan(r[1]) and np.isnan(r[2])


def test_pearson_r_constant_column_with_rounding_is_nan():
    """A constant column whose mean is not exact in floating point (0.1, 4.2) is still
    constant: r must be NaN, never a rounding artefact. Two such columns currently give
    r = +-1, a spurious perfect correlation (see the report)."""
    rng = np.random.default_rng(10)
    A = rng.normal(size=(20, 3))
    B = rng.normal(size=(20, 3))
    A[:, 0] = 4.2
    A[:, 1] = 0.1
    B[:, 1] = 0.3
    B[:, 2] = 0.7
    r = pearson_r(A, B)
    assert np.isnan(r).all(), r


# --------------------------------------------------------------------------- CV groups
def test_leakage_free_groups_unique_stimuli_keep_runs():
    runs = np.repeat([1, 2, 3, 4], 5)
    stim = np.arange(20)
    groups = leakage_free_groups(stim, runs)
    assert len(np.unique(groups)) == 4
    assert _same_partition(groups, runs)
    assert groups.dtype.kind == "i"


def test_leakage_free_groups_merges_runs_sharing_a_stimulus():
    runs = np.repeat(["r1", "r2", "r3", "r4"], 3)
    stim = np.array(["a", "b", "c", "d", "e", "a", "f", "g", "h", "i", "j", "k"])
    groups = leakage_free_groups(stim, runs)  # 'a' is in r1 and r2
    assert len(np.unique(groups)) == 3
    assert _same_partition(groups, np.where(np.isin(runs, ["r1", "r2"]), "r12", runs))


def test_leakage_free_groups_transitive_merge():
    runs = np.repeat([0, 1, 2, 3, 4], 2)
    stim = np.array(["a", "b", "b", "c", "c", "d", "x", "y", "z", "w"])
    groups = leakage_free_groups(stim, runs)  # 0-1 share b, 1-2 share c
    assert _same_partition(groups, [0, 0, 0, 0, 0, 0, 3, 3, 4, 4])


def test_leakage_free_groups_falls_back_to_stimuli():
    stim = np.tile(["s1", "s2", "s3", "s4", "s5"], 4)
    runs = np.repeat([1, 2, 3, 4], 5)  # every stimulus in every run
    groups = leakage_free_groups(stim, runs)
    assert len(np.unique(groups)) == 5
    assert _same_partition(groups, stim)


def _components(stim, group):
    """Oracle: connected components of the bipartite run-stimulus graph, per sample."""
    g_codes = np.unique(group, return_inverse=True)[1]
    s_codes = np.unique(stim, return_inverse=True)[1]
    n_g = g_codes.max() + 1
    n = n_g + s_codes.max() + 1
    graph = coo_matrix((np.ones(len(stim)), (g_codes, n_g + s_codes)), shape=(n, n))
    return connected_components(graph, directed=False)[1][g_codes]


def test_leakage_free_groups_property():
    """Random inputs: never a stimulus in two groups; runs only merged when needed."""
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 60))
        stim = rng.integers(0, int(rng.integers(1, 40)), size=n).astype(str)
        runs = rng.integers(0, int(rng.integers(1, 8)), size=n)
        groups = leakage_free_groups(stim, runs)
        assert groups.shape == (n,)
        for s in np.unique(stim):
            assert len(np.unique(groups[stim == s])) == 1, (seed, s)
        comps = _components(stim, runs)
        n_comps = len(np.unique(comps))
        if n_comps >= 3:
            assert _same_partition(groups, comps), seed
        elif n_comps < 2:
            assert _same_partition(groups, stim), seed
        else:  # 2 merged groups: kept today; nested CV would need 3 (see the report)
            assert _same_partition(groups, comps) or _same_partition(groups, stim), seed


# --------------------------------------------------------------------------- encoding
def test_encoding_scores_recovers_linear_map():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(200, 10))
    Y = X @ rng.normal(size=(10, 6)) + 0.05 * rng.normal(size=(200, 6))
    groups = np.repeat(np.arange(4), 50)
    r = encoding_scores(X, Y, groups, np.logspace(-2, 4, 7), 3)
    assert r.shape == (6,)
    assert np.all(r > 0.98)


def test_encoding_scores_null():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(200, 10))
    Y = rng.normal(size=(200, 30))
    groups = np.repeat(np.arange(4), 50)
    r = encoding_scores(X, Y, groups, np.logspace(-2, 4, 7), 3)
    assert r.shape == (30,)
    assert abs(np.nanmean(r)) < 0.15


def test_encoding_scores_needs_two_groups():
    X = np.random.default_rng(13).normal(size=(20, 2))
    with pytest.raises(ValueError, match="at least 2 groups"):
        encoding_scores(X, X, np.zeros(20), np.array([1.0]), 3)



@pytest.mark.parametrize("selection", ["loo", "inner_cv"])
def test_fit_layer_selection_uses_training_rows_only(selection):
    rng = np.random.default_rng(14)
    X = rng.normal(size=(120, 6))
    Y = X @ rng.normal(size=(6, 5)) + rng.normal(size=(120, 5))
    groups = np.repeat(np.arange(4), 30)
    folds = outer_folds(groups)
    alphas = np.logspace(-2, 4, 7)
    fit = fit_layer(X, Y, folds, groups, alphas, 3, selection)
    assert fit.inner.shape == fit.r_folds.shape == (4, 5)
    # changing the test rows of every fold leaves the selection scores unchanged
    train, test = folds[0]
    Y2 = Y.copy()
    Y2[test] = rng.normal(size=Y2[test].shape)
    fit2 = fit_layer(X, Y2, folds, groups, alphas, 3, selection)
    np.testing.assert_allclose(fit2.inner[0], fit.inner[0])
    assert not np.allclose(fit2.r_folds[0], fit.r_folds[0])
    if selection == "loo":  # exact leave-one-out R^2 of the best alpha, by brute force
        # (features standardised once with the statistics of the whole training set)
        X = StandardScaler().fit(X[train]).transform(X)
        best = -np.inf * np.ones(5)
        for alpha in alphas:
            pred = np.empty((len(train), 5))
            for i in range(len(train)):
                keep = np.delete(train, i)
                pred[i] = Ridge(alpha=alpha).fit(X[keep], Y[keep]).predict(X[train[[i]]])[0]
            sse = ((Y[train] - pred) ** 2).sum(0)
            # the baseline is the mean of the other rows, as in the closed form
            yt = Y[train]
            sst = ((yt - (yt.sum(0) - yt) / (len(yt) - 1)) ** 2).sum(0)
            best = np.maximum(best, 1 - sse / sst)
        np.testing.assert_allclose(fit.inner[0], best, rtol=1e-6, atol=1e-8)


def test_fit_layer_rejects_unknown_selection():
    X = np.random.default_rng(15).normal(size=(40, 2))
    groups = np.repeat(np.arange(4), 10)
    with pytest.raises(ValueError, match="selection must be one of"):
        fit_layer(X, X, outer_folds(groups), groups, np.array([1.0]), 3, "test_curve")


# --------------------------------------------------------------------------- a subject
N_STIM, N_RUNS, DIM, N_LAYERS = 160, 4, 8, 3
ALIGN_PARAMS = {"view": "stimulus", "alphas_log10": [-1, 4, 6], "n_inner_splits": 3,
                "n_permutations": 200, "n_bootstraps": 200, "ci": 0.95, "min_ceiling": 0.3}
PLANTED = {"A": 1, "B": 2}


def _toy_features(rng):
    shared = rng.normal(size=(N_STIM, DIM))
    trained = np.stack([0.6 * shared + rng.normal(size=(N_STIM, DIM))
                        for _ in range(N_LAYERS)])
    random = rng.normal(size=(N_LAYERS, N_STIM, DIM))
    return trained, random


def _write_subject(tmp_path, subject="x01", drop_feature_stims=0, n_repeats=1):
    """A response table whose region A follows trained layer 1 and region B layer 2.

    With ``n_repeats`` > 1 every stimulus is shown that many times, in different runs,
    with independent noise on each presentation.
    """
    rng = np.random.default_rng(20)
    stim_ids = np.array([f"st{i:03d}" for i in range(N_STIM)])
    trained, random = _toy_features(rng)

    regions = ["A"] * 4 + ["B"] * 4 + [""]
    signal = np.empty((N_STIM, len(regions)))
    noise_sd = np.empty(len(regions))
    for j, region in enumerate(regions):
        if region:
            signal[:, j] = trained[PLANTED[region]] @ rng.normal(size=DIM)
            noise_sd[j] = 0.5 * signal[:, j].std() * np.sqrt(n_repeats)
        else:  # a target without region: only in 'all'
            signal[:, j] = 0.0
            noise_sd[j] = 1.0
    rows = np.concatenate([rng.permutation(N_STIM) for _ in range(n_repeats)])
    Y = signal[rows] + noise_sd * rng.normal(size=(len(rows), len(regions)))
    targets = Targets(name=[f"v{j}" for j in range(len(regions))],
                      kind=["voxel"] * len(regions),
                      coords=np.full((len(regions), 3), np.nan), region=regions)
    view = View(X=Y.astype(np.float32),
                rows={"stim_id": stim_ids[rows],
                      "group": np.repeat(np.arange(N_RUNS * n_repeats), N_STIM // N_RUNS)})
    table = ResponseTable(subject=subject, modality="fmri", targets=targets,
                          views={"stimulus": view})
    responses = write_responses(tmp_path / f"sub-{subject}" / "responses.h5", table,
                                provenance("preprocess", {}))

    # features in another order than the responses, with one extra stimulus
    order = rng.permutation(N_STIM)[drop_feature_stims:]
    extra = rng.normal(size=(N_LAYERS, 1, DIM))
    features = write_arrays(
        tmp_path / "features" / "toy.h5",
        {"trained": np.concatenate([trained[:, order], extra], 1).astype(np.float32),
         "random": np.concatenate([random[:, order], extra], 1).astype(np.float32),
         "stim_id": np.append(stim_ids[order], "unused")},
        provenance("features", {}))
    return responses, features


@pytest.fixture(scope="module")
def subject_files(tmp_path_factory):
    return _write_subject(tmp_path_factory.mktemp("subject"))


@pytest.fixture(scope="module")
def scored(subject_files):
    return score_subject(*subject_files, "toy", ALIGN_PARAMS, seed=3)


def _metric(summary, metric, control="trained"):
    return summary[(summary["metric"] == metric) & (summary["control"] == control)]


def test_score_subject_summary_layout(scored):
    summary, best, per_target = scored
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(best.columns) == BEST_COLUMNS
    # no repeats: no ceiling; r, rsa, cka, cka_debiased per control; r_diff once
    assert len(summary) == 3 * N_LAYERS * (2 * 4 + 1)
    assert set(summary["metric"]) == {"r", "rsa", "cka", "cka_debiased", "r_diff"}
    keys = set(zip(summary["region"], summary["control"], summary["layer"]))
    assert keys == {(g, c, k) for g in ("all", "A", "B")
                    for c in ("trained", "random", "trained-random") for k in range(N_LAYERS)}
    assert set(summary["subject"]) == {"x01"} and set(summary["model"]) == {"toy"}
    assert set(summary["modality"]) == {"fmri"}
    counts = summary.groupby("region")["n_targets"].unique()
    assert counts["all"].tolist() == [9] and counts["A"].tolist() == [4]
    assert counts["B"].tolist() == [4]
    assert set(per_target) == {"ceiling", "r_trained", "r_random", "p_trained", "p_random",
                               "q_trained", "q_random"}
    for key, arr in per_target.items():
        assert arr.shape == ((9,) if key == "ceiling" else (N_LAYERS, 9))
        assert arr.dtype == np.float32
    assert np.isnan(per_target["ceiling"]).all()  # no repeats, no ceiling
    # every r row has a bootstrap interval, a p-value and a q-value
    r = summary[summary["metric"] == "r"]
    assert r[["ci_low", "ci_high", "p", "q"]].notna().all().all()
    assert ((r["p"] > 0) & (r["p"] <= 1) & (r["q"] >= r["p"] - 1e-12)).all()
    assert set(best["region"]) == {"all", "A", "B"}


def test_score_subject_finds_planted_layers(scored):
    summary, best, per_target = scored
    trained, random = _metric(summary, "r"), _metric(summary, "r", "random")
    for region, layer in PLANTED.items():
        curve = trained[trained["region"] == region].set_index("layer")
        assert curve["score"].idxmax() == layer, curve
        assert curve.loc[layer, "score"] > 0.7
        assert curve.loc[layer, "ci_low"] < curve.loc[layer, "score"] < curve.loc[layer, "ci_high"]
        assert curve.loc[layer, "p"] == pytest.approx(2 / 201)  # the smallest possible
        assert curve.loc[layer, "q"] < 0.05
        control = random[random["region"] == region].set_index("layer")["score"]
        assert curve.loc[layer, "score"] > control[layer] + 0.5
        assert control.abs().max() < 0.2
        # the paired test sees the gap at the planted layer
        diff = summary[(summary["metric"] == "r_diff") & (summary["region"] == region)]
        diff = diff.set_index("layer")
        assert diff.loc[layer, "ci_low"] > 0.4 and diff.loc[layer, "p"] < 0.05
        # the model-free metrics peak at the planted layer too
        for metric in ("rsa", "cka", "cka_debiased"):
            m = _metric(summary, metric)
            m = m[m["region"] == region].set_index("layer")["score"]
            assert m.idxmax() == layer, (metric, m)
        rsa = _metric(summary, "rsa")
        assert rsa[(rsa["region"] == region) & (rsa["layer"] == layer)]["p"].iloc[0] < 0.05
    # the region summary is the mean of its targets' scores
    a_rows = trained[(trained["region"] == "A")].sort_values("layer")["score"].to_numpy()
    np.testing.assert_allclose(a_rows, per_target["r_trained"][:, :4].mean(1), rtol=1e-5)


def test_best_layer_is_chosen_on_training_folds(scored):
    summary, best, _ = scored
    best = best.set_index("region")
    for region, layer in PLANTED.items():
        row = best.loc[region]
        assert row["best_layer"] == layer
        assert row["layers_per_fold"].split() == [str(layer)] * N_RUNS  # one per outer fold
        assert row["score"] > 0.7 and row["random_score"] < 0.2
        assert row["relative_depth"] == pytest.approx(layer / (N_LAYERS - 1))
        r = _metric(summary, "r")
        r = r[r["region"] == region].set_index("layer")["score"]
        assert row["gap_to_last"] == pytest.approx(r[layer] - r[N_LAYERS - 1])
        assert row["gap_ci_low"] <= row["gap_to_last"] <= row["gap_ci_high"]
    # region A peaks at layer 1 of 3: a real intermediate-layer advantage
    assert best.loc["A", "gap_ci_low"] > 0.3


def test_score_subject_null_pvalues_are_valid(tmp_path):
    """Pure-noise responses: P(p < alpha) never exceeds alpha (the fold-aggregated
    permutation p-value is valid, if conservative), and FDR finds nothing."""
    rng = np.random.default_rng(5)
    n_targets = 300
    trained, random = _toy_features(rng)
    Y = rng.normal(size=(N_STIM, n_targets))
    stim = np.array([f"s{i}" for i in range(N_STIM)])
    params = {**ALIGN_PARAMS, "n_bootstraps": 10}
    rows, _, per_target = score_responses(
        Y, stim, np.repeat(np.arange(N_RUNS), N_STIM // N_RUNS), np.array([""] * n_targets),
        {"trained": trained[:1], "random": random[:1]}, {s: i for i, s in enumerate(stim)},
        params, seed=0)
    p = per_target["p_trained"][0]
    assert p.shape == (n_targets,) and np.all((p > 0) & (p <= 1))
    for alpha in (0.05, 0.1, 0.2, 0.5):
        tolerance = 2.5 * np.sqrt(alpha * (1 - alpha) / n_targets)
        assert np.mean(p < alpha) <= alpha + tolerance, alpha
    assert np.mean(p < 0.5) > 0.1  # not degenerate: small p-values do occur
    assert not (per_target["q_trained"][0] < 0.05).any()


def test_aggregate_fold_pvalues_is_valid_under_dependence():
    """Identical folds (the worst dependence) and independent folds both stay valid."""
    rng = np.random.default_rng(0)
    u = rng.uniform(size=(1, 20000))
    same = aggregate_fold_pvalues(np.repeat(u, 4, axis=0))
    indep = aggregate_fold_pvalues(rng.uniform(size=(4, 20000)))
    for p in (same, indep):
        for alpha in (0.01, 0.05, 0.2):
            assert np.mean(p <= alpha) <= alpha + 0.005
    np.testing.assert_allclose(aggregate_fold_pvalues(np.array([[0.01], [0.2], [0.03], [0.9]])),
                               [0.06])  # twice the 2nd smallest of 4


def test_score_subject_with_repeats_reports_ceiled_scores(tmp_path):
    responses, features = _write_subject(tmp_path, n_repeats=2)
    summary, best, per_target = score_subject(responses, features, "toy", ALIGN_PARAMS)
    ceiling = per_target["ceiling"]
    assert np.isfinite(ceiling[:8]).all() and (ceiling[:8] > 0.6).all()
    assert ceiling[8] < 0.3 or np.isnan(ceiling[8])  # the pure-noise target
    reliable = np.isfinite(ceiling) & (ceiling >= ALIGN_PARAMS["min_ceiling"])
    ceiled = _metric(summary, "r_ceiled")
    assert not ceiled.empty and (ceiled["score"].dropna() <= 1.0).all()
    a = ceiled[(ceiled["region"] == "A") & (ceiled["layer"] == PLANTED["A"])].iloc[0]
    r = _metric(summary, "r")
    r_a = r[(r["region"] == "A") & (r["layer"] == PLANTED["A"])]["score"].iloc[0]
    assert a["score"] > r_a and a["n_targets"] == 4
    assert a["n_clipped"] >= 0
    all_row = ceiled[(ceiled["region"] == "all") & (ceiled["layer"] == 0)].iloc[0]
    assert all_row["n_targets"] == reliable.sum()  # unreliable targets are left out
    assert best.set_index("region").loc["B", "best_layer"] == PLANTED["B"]



def test_score_subject_with_repeats_scores_crossnobis_rsa(tmp_path):
    responses, features = _write_subject(tmp_path, n_repeats=2)
    summary, _, _ = score_subject(responses, features, "toy", ALIGN_PARAMS, seed=1)
    cn = summary[summary["metric"] == "rsa_crossnobis"]
    # every stimulus is shown twice: one crossnobis RSA row per region, control and layer
    assert len(cn) == 3 * 2 * N_LAYERS
    for region in ("A", "B"):
        rows = cn[(cn["region"] == region) & (cn["layer"] == PLANTED[region])]
        trained = rows[rows["control"] == "trained"].iloc[0]
        random = rows[rows["control"] == "random"].iloc[0]
        assert trained["score"] > random["score"] + 0.1
        assert trained["p"] < 0.05
    # the random control's crossnobis RSA is null-like
    assert (cn[cn["control"] == "random"]["p"] > 0.001).all()


def test_score_subject_rsa_distance_option(subject_files, scored):
    params = {**ALIGN_PARAMS, "rsa_distance": "euclidean", "n_permutations": 20,
              "n_bootstraps": 20}
    summary, _, _ = score_subject(*subject_files, "toy", params, seed=3)
    corr = _metric(scored[0], "rsa").set_index(["region", "layer"])["score"]
    eucl = _metric(summary, "rsa").set_index(["region", "layer"])["score"]
    assert not np.allclose(corr.loc[eucl.index], eucl)
    assert "rsa_crossnobis" not in set(summary["metric"])  # no stimulus shown twice


@pytest.mark.parametrize("kind", ["split_half", "ncsnr"])
def test_noise_ceiling_recovers_known_reliability(kind):
    # signal and noise variance 1, 2 repeats: reliability of the mean 1 / (1 + 1/2)
    rng = np.random.default_rng(16)
    n_stim, n_targets = 3000, 4
    signal = rng.normal(size=(n_stim, n_targets))
    stim = np.tile(np.arange(n_stim), 2).astype(str)
    Y = signal[np.tile(np.arange(n_stim), 2)] + rng.normal(size=(2 * n_stim, n_targets))
    ceiling = noise_ceiling(Y, stim, kind, seed=0)
    np.testing.assert_allclose(ceiling, np.sqrt(2 / 3), atol=0.03)
    no_repeats = noise_ceiling(Y[:n_stim], stim[:n_stim], kind)
    assert no_repeats.shape == (n_targets,) and np.isnan(no_repeats).all()


def test_noise_ceiling_rejects_unknown_kind():
    with pytest.raises(ValueError, match="ceiling must be one of"):
        noise_ceiling(np.zeros((4, 1)), np.array(["a", "a", "b", "b"]), "oracle")


def test_score_subject_ncsnr_ceiling(tmp_path):
    responses, features = _write_subject(tmp_path, n_repeats=2)
    params = {**ALIGN_PARAMS, "ceiling": "ncsnr", "n_permutations": 20, "n_bootstraps": 20}
    _, _, nc = score_subject(responses, features, "toy", params)
    _, _, sh = score_subject(responses, features, "toy",
                             {**params, "ceiling": "split_half"})
    assert np.isfinite(nc["ceiling"][:8]).all()
    # two estimators of the same reliability agree on the signal targets
    np.testing.assert_allclose(nc["ceiling"][:8], sh["ceiling"][:8], atol=0.1)


def test_view_for_modality():
    assert view_for({"view": "stimulus"}, "eeg") == "stimulus"
    assert view_for({"view": "timeseries"}, "eeg") == "timeseries"
    per_modality = {"view": {"fmri": "timeseries"}}
    assert view_for(per_modality, "fmri") == "timeseries"
    assert view_for(per_modality, "eeg") == "stimulus"
    assert view_for({}, "seeg") == "stimulus"


def test_average_repeats_keeps_first_appearance_order():
    Y = np.arange(12, dtype=float).reshape(6, 2)
    stim = np.array(["b", "a", "b", "c", "a", "b"])
    group = np.array(["1", "1", "2", "2", "3", "3"])
    Y_avg, stims, groups, counts = average_repeats(Y, stim, group)
    assert stims.tolist() == ["b", "a", "c"] and counts.tolist() == [3, 2, 1]
    assert groups.tolist() == ["1", "1", "2"]
    np.testing.assert_allclose(Y_avg[0], Y[[0, 2, 5]].mean(0))
    np.testing.assert_allclose(Y_avg[1], Y[[1, 4]].mean(0))


def test_align_subject_writes_outputs(subject_files, tmp_path):
    out_h5, out_tsv = tmp_path / "align" / "sub-x01_toy.h5", tmp_path / "align" / "x.tsv"
    out_best = tmp_path / "align" / "x_best.tsv"
    summary = align_subject(*subject_files, "toy", ALIGN_PARAMS, out_h5, out_tsv, out_best,
                            seed=3)
    arrays, attrs = read_arrays(out_h5)
    assert arrays["r_trained"].shape == (N_LAYERS, 9)
    assert arrays["r_random"].shape == (N_LAYERS, 9)
    assert arrays["q_trained"].shape == (N_LAYERS, 9)
    assert arrays["target_name"].tolist() == [f"v{j}" for j in range(9)]
    assert arrays["target_region"].tolist() == ["A"] * 4 + ["B"] * 4 + [""]
    assert attrs["brainhead_step"] == "align"
    assert '"model": "toy"' in attrs["params"]
    with h5py.File(out_h5) as f:
        assert f["r_trained"].dtype == np.float32
    on_disk = pd.read_csv(out_tsv, sep="\t", dtype={"subject": str})
    pd.testing.assert_frame_equal(on_disk, summary, check_dtype=False)
    best = pd.read_csv(out_best, sep="\t", dtype={"subject": str})
    assert list(best.columns) == BEST_COLUMNS and len(best) == 3
    assert sorted(p.name for p in out_h5.parent.iterdir()) == ["sub-x01_toy.h5", "x.tsv",
                                                                "x_best.tsv"]


def test_score_subject_is_repeatable(subject_files, scored):
    again, best, _ = score_subject(*subject_files, "toy", ALIGN_PARAMS, seed=3)
    pd.testing.assert_frame_equal(again, scored[0])
    other, _, _ = score_subject(*subject_files, "toy", ALIGN_PARAMS, seed=4)
    assert not np.allclose(other["ci_low"].fillna(0), again["ci_low"].fillna(0))


def test_score_subject_missing_stimulus(tmp_path):
    responses, features = _write_subject(tmp_path, drop_feature_stims=2)
    with pytest.raises(RecordingError, match="not in the stimuli table") as info:
        score_subject(responses, features, "toy", ALIGN_PARAMS)
    assert "sub-x01: 2 stimuli of responses.h5" in str(info.value)
    assert "toy.h5" in str(info.value)


def test_score_subject_unknown_view(subject_files):
    with pytest.raises(ValueError, match="has no 'bands' view"):
        score_subject(*subject_files, "toy", {**ALIGN_PARAMS, "view": "bands"})


def test_collect_summary(tmp_path):
    def frame(subject, n):
        return pd.DataFrame({"subject": subject, "modality": "eeg", "view": "stimulus",
                             "region": "all", "model": "m", "control": "trained", "layer": range(n),
                             "metric": "r", "score": np.linspace(0, 1, n),
                             "n_targets": 3, "ci_low": 0.0, "ci_high": 1.0, "p": 0.5,
                             "q": 0.5, "n_clipped": 0})[SUMMARY_COLUMNS[::-1]]  # reordered
    paths = []
    for subject, n in (("01", 2), ("02", 3)):
        paths.append(tmp_path / f"sub-{subject}.tsv")
        frame(subject, n).to_csv(paths[-1], sep="\t", index=False)
    out = tmp_path / "align" / "summary.tsv"
    summary = collect_summary(paths, out)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == 5
    assert summary["subject"].tolist() == ["01", "01", "02", "02", "02"]  # leading 0 kept
    back = pd.read_csv(out, sep="\t", dtype={"subject": str})
    pd.testing.assert_frame_equal(back, summary)
    assert [p.name for p in out.parent.iterdir()] == ["summary.tsv"]
