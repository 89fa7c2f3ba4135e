"""Linear centred kernel alignment (CKA), biased and debiased.

Linear CKA between representations ``X`` (n, p) and ``Y`` (n, q) of the same ``n`` stimuli
is ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with the linear Gram matrices
``K = X X.T`` and ``L = Y Y.T`` (Kornblith et al. 2019). With the biased HSIC estimator and
centred features it equals ``||Y.T X||_F**2 / (||X.T X||_F ||Y.T Y||_F)``. It is invariant
to orthogonal transforms and isotropic scaling of either representation, but not to
arbitrary invertible linear maps.

The biased estimator is positive even for independent representations when ``n`` is not
much larger than ``p`` and ``q``; ``debiased=True`` uses the unbiased HSIC estimator of
Song et al. (2012) in numerator and denominator, as in debiased CKA (Kornblith et al. 2019;
Nguyen et al. 2021), which is close to 0 in expectation for independent representations
(and can be negative).

References
----------
Kornblith, Norouzi, Lee & Hinton (2019). Similarity of neural network representations
revisited. ICML.
Song, Smola, Gretton, Bedo & Borgwardt (2012). Feature selection via dependence
maximization. JMLR 13.
Nguyen, Raghu & Kornblith (2021). Do wide and deep networks learn the same things? ICLR.
"""

from __future__ import annotations

import numpy as np

CKA_METHODS = ("auto", "feature", "gram")


def _check_pair(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    for name, A in (("X", X), ("Y", Y)):
        if A.ndim != 2:
            raise ValueError(f"{name} must be 2D (n_stimuli, n_features), got shape {A.shape}")
        if not np.all(np.isfinite(A)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows (stimuli), got "
                         f"{X.shape[0]} and {Y.shape[0]}")
    return X, Y


def _hsic_feature(X, Y, debiased: bool) -> float:
    """(Scaled) HSIC of centred features without forming n x n Gram matrices.

    Biased: ``||Y.T X||_F**2``. Unbiased, times ``n (n - 3)`` (with ``d_i = ||x_i||**2``,
    ``e_i = ||y_i||**2``, ``D = sum(d)``, ``E = sum(e)``, valid because centred Grams have
    zero row sums): ``||Y.T X||_F**2 - n / (n - 2) d.e + D E / ((n - 1)(n - 2))``.
    """
    xty = float(np.sum((Y.T @ X) ** 2))
    if not debiased:
        return xty
    n = X.shape[0]
    d, e = np.einsum("ij,ij->i", X, X), np.einsum("ij,ij->i", Y, Y)
    return xty - n / (n - 2) * float(d @ e) + d.sum() * e.sum() / ((n - 1) * (n - 2))


def _hsic_gram(K, L, debiased: bool) -> float:
    """(Scaled) HSIC from Gram matrices of centred features, biased or unbiased (Song 2012).

    Biased: ``tr(K H L H)``, which is ``sum(K * L)`` because the Gram matrices of
    centred features are already doubly centred (``H K H = K``).
    """
    n = K.shape[0]
    if not debiased:
        return float(np.sum(K * L))
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    k1, l1 = Kt.sum(1), Lt.sum(1)
    return float(np.sum(Kt * Lt) + k1.sum() * l1.sum() / ((n - 1) * (n - 2))
                 - 2.0 / (n - 2) * (k1 @ l1))


def linear_cka(X, Y, debiased: bool = False, method: str = "auto") -> float:
    """Linear CKA between two representations of the same stimuli.

    Parameters
    ----------
    X : array-like, shape (n_stimuli, p)
    Y : array-like, shape (n_stimuli, q)
        Rows are stimuli in the same order; columns are centred here.
    debiased : bool
        Use the unbiased HSIC estimator (Song et al. 2012); needs ``n_stimuli >= 4``.
    method : {"auto", "feature", "gram"}
        ``"feature"`` works with the (p, q), (p, p) and (q, q) cross-products,
        ``"gram"`` with the (n, n) Gram matrices; both give the same value, ``"auto"``
        picks the cheaper one.

    Returns
    -------
    cka : float
        1 for representations equal up to rotation and isotropic scaling; NaN when a
        representation is constant (or, debiased, when an HSIC self-term is not positive).
    """
    if method not in CKA_METHODS:
        raise ValueError(f"method must be one of {list(CKA_METHODS)}, got {method!r}")
    X, Y = _check_pair(X, Y)
    if np.all(np.ptp(X, axis=0) == 0) or np.all(np.ptp(Y, axis=0) == 0):
        return float("nan")  # a constant representation has no similarity structure
    X, Y = X - X.mean(0), Y - Y.mean(0)
    n, p = X.shape
    q = Y.shape[1]
    if n < (4 if debiased else 2):
        raise ValueError(f"linear_cka{' (debiased)' if debiased else ''} needs at least "
                         f"{4 if debiased else 2} stimuli, got {n}")
    if method == "auto":
        feature_cost = n * (p * q + p * p + q * q)
        gram_cost = n * n * (p + q) + 3 * n * n
        method = "feature" if feature_cost <= gram_cost else "gram"
    if method == "gram":
        return linear_cka_gram(X @ X.T, Y @ Y.T, debiased)
    xy, xx, yy = (_hsic_feature(X, Y, debiased), _hsic_feature(X, X, debiased),
                  _hsic_feature(Y, Y, debiased))
    if xx <= 0 or yy <= 0:
        return float("nan")
    return float(xy / np.sqrt(xx * yy))


def linear_cka_gram(K: np.ndarray, L: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA from the Gram matrices of two column-centred representations.

    ``K = X @ X.T`` and ``L = Y @ Y.T`` with the columns of ``X`` and ``Y`` centred; the
    same value as :func:`linear_cka` of ``X`` and ``Y`` with ``method="gram"``. Use it
    when one representation is compared with many others: each Gram matrix is then
    formed once.

    Parameters
    ----------
    K, L : ndarray, shape (n_stimuli, n_stimuli)
    debiased : bool
        Unbiased HSIC estimator (Song et al. 2012); needs ``n_stimuli >= 4``.

    Returns
    -------
    cka : float
        NaN when an HSIC self-term is not positive (a constant representation).
    """
    K, L = np.asarray(K, dtype=np.float64), np.asarray(L, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise ValueError(f"K and L must be square Gram matrices of the same stimuli, got "
                         f"shapes {K.shape} and {L.shape}")
    if K.shape[0] < (4 if debiased else 2):
        raise ValueError(f"linear_cka_gram{' (debiased)' if debiased else ''} needs at "
                         f"least {4 if debiased else 2} stimuli, got {K.shape[0]}")
    xy, xx, yy = (_hsic_gram(K, L, debiased), _hsic_gram(K, K, debiased),
                  _hsic_gram(L, L, debiased))
    if xx <= 0 or yy <= 0:
        return float("nan")
    return float(xy / np.sqrt(xx * yy))
