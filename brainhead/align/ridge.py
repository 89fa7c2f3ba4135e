"""Ridge encoding models with one regularisation strength per target.

The solver follows the usual eigenbasis trick: one SVD of the training design serves
every alpha and every target, so choosing an alpha per target by grouped
cross-validation costs one SVD per inner fold plus matrix products.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut
from sklearn.utils.validation import check_is_fitted, validate_data

DEFAULT_ALPHAS = tuple(np.logspace(-1, 6, 15).tolist())


def solve_ridge_svd(
    X: np.ndarray,
    Y: np.ndarray,
    alphas: np.ndarray,
    X_test: np.ndarray,
) -> np.ndarray:
    """Ridge predictions on ``X_test`` for every alpha, from one SVD of ``X``.

    Solves ``min_W ||X W - Y||^2 + alpha ||W||^2`` for each alpha; ``X`` and ``Y`` are
    expected centred (no intercept is fitted here).

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_targets)
    alphas : ndarray, shape (n_alphas,)
    X_test : ndarray, shape (n_test, n_features)

    Returns
    -------
    predictions : ndarray, shape (n_alphas, n_test, n_targets)
    """
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    UtY = U.T @ Y  # (k, n_targets)
    XtV = X_test @ Vt.T  # (n_test, k)
    out = np.empty((len(alphas), X_test.shape[0], Y.shape[1]), dtype=Y.dtype)
    for i, alpha in enumerate(alphas):
        shrink = (s / (s**2 + alpha)).astype(Y.dtype)
        out[i] = XtV @ (shrink[:, None] * UtY)
    return out


def solve_ridge_coef(X: np.ndarray, Y: np.ndarray, alpha_per_target: np.ndarray) -> np.ndarray:
    """Ridge weights with one alpha per target, from one SVD of ``X``.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_targets)
    alpha_per_target : ndarray, shape (n_targets,)

    Returns
    -------
    coef : ndarray, shape (n_features, n_targets)
    """
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    UtY = U.T @ Y
    coef = np.empty((X.shape[1], Y.shape[1]), dtype=Y.dtype)
    for alpha in np.unique(alpha_per_target):
        cols = alpha_per_target == alpha
        shrink = (s / (s**2 + alpha)).astype(Y.dtype)
        coef[:, cols] = Vt.T @ (shrink[:, None] * UtY[:, cols])
    return coef


def _inner_splitter(groups: np.ndarray, n_splits: int):
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(
            "alpha selection needs at least 2 groups inside the training data, "
            f"got {n_groups}"
        )
    if n_groups <= n_splits:
        return LeaveOneGroupOut()
    return GroupKFold(n_splits=n_splits)


class GroupRidgeCV(RegressorMixin, BaseEstimator):
    """Ridge regression with an alpha per target, chosen by grouped cross-validation.

    Features are standardised and targets centred with statistics of the training
    data; the alpha of each target minimises its squared error summed over inner folds
    that never split a group (run, session or stimulus).

    Parameters
    ----------
    alphas : array-like of float
        Candidate regularisation strengths.
    n_splits : int
        Inner folds; with fewer groups than this, leave-one-group-out is used.

    Attributes
    ----------
    coef_ : ndarray, shape (n_features, n_targets)
    intercept_ : ndarray, shape (n_targets,)
    best_alphas_ : ndarray, shape (n_targets,)
    cv_scores_ : ndarray, shape (n_alphas, n_targets)
        Inner-fold R^2 of every alpha for every target.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, n_splits: int = 5):
        self.alphas = alphas
        self.n_splits = n_splits

    def fit(self, X, y, groups=None):
        """Fit on ``X`` (n_samples, n_features), ``y`` (n_samples, n_targets)."""
        X, Y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=[np.float64, np.float32])
        Y = np.asarray(Y, dtype=X.dtype)
        self._y_1d = Y.ndim == 1
        if Y.ndim == 1:
            Y = Y[:, None]
        if groups is None:
            groups = np.arange(X.shape[0])
        groups = np.asarray(groups)
        if groups.shape[0] != X.shape[0]:
            raise ValueError(
                f"groups has {groups.shape[0]} entries, X has {X.shape[0]} samples"
            )
        alphas = np.asarray(self.alphas, dtype=float).ravel()
        if alphas.size == 0 or np.any(alphas <= 0):
            raise ValueError(f"alphas must be positive and non-empty, got {self.alphas}")

        sse = np.zeros((alphas.size, Y.shape[1]), dtype=np.float64)
        sst = np.zeros(Y.shape[1], dtype=np.float64)
        for train, val in _inner_splitter(groups, self.n_splits).split(X, Y, groups):
            Xtr, Xva = _standardise(X[train], X[val])
            ymean = Y[train].mean(0)
            pred = solve_ridge_svd(Xtr, Y[train] - ymean, alphas, Xva) + ymean
            sse += ((pred - Y[val][None]) ** 2).sum(1)
            sst += ((Y[val] - Y[val].mean(0)) ** 2).sum(0)
        best = np.argmin(sse, axis=0)
        self.best_alphas_ = alphas[best]
        self.cv_scores_ = 1.0 - sse / np.maximum(sst, np.finfo(float).tiny)

        self._x_mean = X.mean(0)
        self._x_scale = _safe_std(X)
        Xs = (X - self._x_mean) / self._x_scale
        ymean = Y.mean(0)
        self.coef_ = solve_ridge_coef(Xs, Y - ymean, self.best_alphas_)
        self.intercept_ = ymean
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X):
        """Predict targets for ``X`` (n_samples, n_features)."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        pred = ((X - self._x_mean) / self._x_scale) @ self.coef_ + self.intercept_
        return pred[:, 0] if self._y_1d else pred

    def score(self, X, y, sample_weight=None):
        """Mean Pearson r over targets between predictions and ``y``."""
        pred = self.predict(X)
        y = np.asarray(y)
        if pred.ndim == 1:
            pred, y = pred[:, None], y[:, None]
        return float(np.nanmean(pearson_r(pred, y)))


def _safe_std(X: np.ndarray) -> np.ndarray:
    std = X.std(0)
    std[std == 0] = 1.0
    return std


def _standardise(X_train: np.ndarray, X_test: np.ndarray):
    mean, std = X_train.mean(0), _safe_std(X_train)
    return (X_train - mean) / std, (X_test - mean) / std


def pearson_r(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of ``A`` and ``B`` (n_samples, n_cols).

    A constant column gives NaN (no correlation is defined), never a silent 0.
    """
    constant = (np.ptp(A, axis=0) == 0) | (np.ptp(B, axis=0) == 0)
    A = A - A.mean(0)
    B = B - B.mean(0)
    denom = np.sqrt((A**2).sum(0) * (B**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(~constant & (denom > 0), (A * B).sum(0) / denom, np.nan)
