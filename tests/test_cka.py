"""Linear CKA, biased and debiased: invariances, limits and independent references."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest

from brainhead.align.cka import linear_cka


def _u_statistic_hsic(K, L):
    """Unbiased HSIC as the explicit U-statistic over distinct index tuples (slow)."""
    n = K.shape[0]
    t1 = np.mean([K[i, j] * L[i, j] for i, j in permutations(range(n), 2)])
    t2 = np.mean([K[i, j] * L[q, r] for i, j, q, r in permutations(range(n), 4)])
    t3 = np.mean([K[i, j] * L[i, q] for i, j, q in permutations(range(n), 3)])
    return t1 + t2 - 2 * t3


def test_identical_is_one():
    X = np.random.default_rng(0).standard_normal((30, 5))
    assert linear_cka(X, X) == pytest.approx(1.0)
    assert linear_cka(X, X, debiased=True) == pytest.approx(1.0)


def test_hand_computed_case():
    # centred X = [-1, 0, 1], Y = [-1, 1, 0]: ||Y'X||^2 = 1, ||X'X|| = ||Y'Y|| = 2 -> 1/4
    X, Y = np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [3.0], [2.0]])
    assert linear_cka(X, Y) == pytest.approx(0.25)
    # with one feature each, linear CKA is the squared Pearson correlation
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((20, 1)), rng.standard_normal((20, 1))
    assert linear_cka(x, y) == pytest.approx(np.corrcoef(x[:, 0], y[:, 0])[0, 1] ** 2)


def test_orthogonal_column_spaces_give_zero():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((25, 6))
    Q = np.linalg.qr(A - A.mean(0))[0]  # orthonormal, centred columns
    X, Y = Q[:, :3] @ rng.standard_normal((3, 4)), Q[:, 3:] @ rng.standard_normal((3, 7))
    assert abs(linear_cka(X, Y)) < 1e-12
    assert abs(linear_cka(X, Y, method="gram")) < 1e-12


def test_debiased_matches_u_statistic():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    K, L = Xc @ Xc.T, Yc @ Yc.T
    expected = _u_statistic_hsic(K, L) / np.sqrt(_u_statistic_hsic(K, K)
                                                 * _u_statistic_hsic(L, L))
    assert linear_cka(X, Y, debiased=True, method="feature") == pytest.approx(expected)
    assert linear_cka(X, Y, debiased=True, method="gram") == pytest.approx(expected)


def test_debiased_removes_the_positive_bias_on_independent_noise():
    rng = np.random.default_rng(4)
    biased, debiased = [], []
    for _ in range(10):
        X, Y = rng.standard_normal((60, 40)), rng.standard_normal((60, 50))
        biased.append(linear_cka(X, Y))
        debiased.append(linear_cka(X, Y, debiased=True))
    assert min(biased) > 0.3  # every biased estimate is far from 0
    # debiased: zero in expectation, so the mean of 10 draws is within 3 standard errors
    assert abs(np.mean(debiased)) < 3 * np.std(debiased, ddof=1) / np.sqrt(10)
    assert abs(np.mean(debiased)) < 0.03


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(debiased):
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((40, 6)), rng.standard_normal((40, 8))
    Y[:, :3] += X[:, :3]
    base = linear_cka(X, Y, debiased)
    R = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    assert linear_cka(X @ R, Y, debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * X + 3.0, Y, debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(Y, X, debiased) == pytest.approx(base, rel=1e-12)  # symmetry
    # stretching a column that Y does not share makes X mostly unrelated to Y
    aniso = X * np.array([1.0, 1, 1, 1, 1, 20])
    assert linear_cka(aniso, Y, debiased) < base - 0.1


@pytest.mark.parametrize("shape", [(50, 4, 6), (12, 40, 30), (20, 3, 60)])
@pytest.mark.parametrize("debiased", [False, True])
def test_feature_and_gram_forms_agree(shape, debiased):
    n, p, q = shape
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((n, p)), rng.standard_normal((n, q))
    Y[:, : min(p, q)] += X[:, : min(p, q)]
    f = linear_cka(X, Y, debiased, method="feature")
    g = linear_cka(X, Y, debiased, method="gram")
    assert f == pytest.approx(g, rel=1e-10, abs=1e-12)
    assert linear_cka(X, Y, debiased) == pytest.approx(f, rel=1e-10, abs=1e-12)


def test_degenerate_inputs_and_errors():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((10, 3))
    assert np.isnan(linear_cka(np.full((10, 2), 0.1), X))
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(X, X[:9])
    with pytest.raises(ValueError, match="at least 4 stimuli"):
        linear_cka(X[:3], X[:3], debiased=True)
    with pytest.raises(ValueError, match="method must be one of"):
        linear_cka(X, X, method="kernel")
    with pytest.raises(ValueError, match="NaN or infinite"):
        linear_cka(np.where(X > 1, np.nan, X), X)
