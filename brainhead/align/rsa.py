"""Representational similarity analysis: RDMs, cross-validated distances, RDM comparison.

Conventions follow rsatoolbox (0.3.x) so that numbers can be checked against it:

- ``compute_rdm(X, "correlation")`` is ``1 - r`` between stimulus patterns (rows), the same
  as ``rsatoolbox.rdm.calc_rdm(..., method="correlation")``.
- ``compute_rdm(X, "euclidean")`` is the **squared** Euclidean distance **divided by the
  number of features**, the same as rsatoolbox's ``method="euclidean"``; multiply by
  ``n_features`` to get :func:`scipy.spatial.distance.pdist` ``"sqeuclidean"``. This
  per-feature scale makes regions of different sizes comparable, and it is the quantity that
  :func:`crossnobis_rdm` estimates without bias when no noise covariance is given.
- :func:`crossnobis_rdm` is rsatoolbox's ``method="crossnobis"`` with leave-one-run-out
  folds (also divided by the number of features).
- ``compare_rdms(..., "kendall_tau_a")`` is rsatoolbox's ``compare_kendall_tau_a``.

RDMs are condensed vectors (upper triangle, row-major, as :func:`scipy.spatial.distance.
squareform` and rsatoolbox order them) unless ``square=True`` is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import squareform

RDM_METRICS = ("correlation", "euclidean")
COMPARE_METHODS = ("spearman", "kendall_tau_a", "pearson")
RSA_COLUMNS = ["region", "layer", "score", "n_targets"]


def _check_option(value, allowed, name: str):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _as_2d(X, name: str, min_rows: int = 1) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {X.shape[0]}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def _to_condensed(rdm, name: str) -> np.ndarray:
    rdm = np.asarray(rdm, dtype=np.float64)
    if rdm.ndim == 2:
        if rdm.shape[0] != rdm.shape[1]:
            raise ValueError(f"{name}: a square RDM must be (n, n), got shape {rdm.shape}")
        return rdm[np.triu_indices(rdm.shape[0], k=1)]
    if rdm.ndim != 1:
        raise ValueError(f"{name} must be a condensed (1D) or square (2D) RDM, "
                         f"got shape {rdm.shape}")
    return rdm


def _square(condensed: np.ndarray) -> np.ndarray:
    return squareform(condensed, checks=False)


def compute_rdm(X, metric: str = "correlation", square: bool = False) -> np.ndarray:
    """Representational dissimilarity matrix of stimulus patterns.

    Parameters
    ----------
    X : array-like, shape (n_stimuli, n_features)
        One pattern per row (averaged over repeats beforehand if needed).
    metric : {"correlation", "euclidean"}
        ``"correlation"``: ``1 - pearson_r(X[i], X[j])`` across features; a constant
        pattern gives NaN dissimilarities. ``"euclidean"``: ``||X[i] - X[j]||**2 /
        n_features`` (squared and normalised, see the module docstring).
    square : bool
        Return the (n_stimuli, n_stimuli) matrix instead of the condensed vector.

    Returns
    -------
    rdm : ndarray, shape (n_stimuli * (n_stimuli - 1) / 2,) or (n_stimuli, n_stimuli)
    """
    _check_option(metric, RDM_METRICS, "metric")
    X = _as_2d(X, "X", min_rows=2)
    n, p = X.shape
    if metric == "correlation":
        if p < 2:
            raise ValueError(f"a correlation RDM needs at least 2 features, got {p}")
        Xc = X - X.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", Xc, Xc))
        with np.errstate(invalid="ignore", divide="ignore"):
            Xc = np.where(norms[:, None] > 0, Xc / norms[:, None], np.nan)
        D = 1.0 - Xc @ Xc.T
    else:
        sq = np.einsum("ij,ij->i", X, X)
        D = np.maximum(sq[:, None] + sq[None, :] - 2.0 * X @ X.T, 0.0) / p
    condensed = D[np.triu_indices(n, k=1)]
    return _square(condensed) if square else condensed


def shrinkage_noise_cov(residuals, dof: int | None = None,
                        shrinkage: float | None = None) -> np.ndarray:
    """Noise covariance of residuals, shrunk towards a scaled identity.

    ``cov = (1 - lam) * S + lam * mean(diag(S)) * I`` with ``S = R.T @ R / dof``; ``lam`` is
    the Ledoit-Wolf optimal shrinkage when ``shrinkage`` is None.

    Parameters
    ----------
    residuals : array-like, shape (n_samples, n_features)
        Centred residuals (e.g. trials minus their stimulus mean).
    dof : int, optional
        Degrees of freedom of the residuals; ``n_samples`` by default.
    shrinkage : float in [0, 1], optional

    Returns
    -------
    cov : ndarray, shape (n_features, n_features)
    """
    R, dof, shrinkage = _shrinkage_terms(residuals, dof, shrinkage)
    S = R.T @ R / dof
    target = np.trace(S) / S.shape[0]
    return (1.0 - shrinkage) * S + shrinkage * target * np.eye(S.shape[0])


def _shrinkage_terms(residuals, dof, shrinkage) -> tuple[np.ndarray, int, float]:
    R = _as_2d(residuals, "residuals", min_rows=2)
    dof = R.shape[0] if dof is None else int(dof)
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if shrinkage is None:
        if R.shape[0] < R.shape[1]:
            shrinkage = ledoit_wolf_from_gram(R @ R.T, R.shape[1])
        else:
            from sklearn.covariance import ledoit_wolf_shrinkage

            shrinkage = float(ledoit_wolf_shrinkage(R, assume_centered=True))
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    return R, dof, float(shrinkage)


def ledoit_wolf_from_gram(gram: np.ndarray, n_features: int) -> float:
    """Ledoit-Wolf shrinkage of centred samples from their Gram matrix ``X @ X.T``.

    The same value as :func:`sklearn.covariance.ledoit_wolf_shrinkage` with
    ``assume_centered=True``, whose sums over feature pairs are sums over sample pairs
    here: ``sum((X.T @ X) ** 2) = sum(G ** 2)`` and ``sum((X ** 2).T @ X ** 2) =
    sum(diag(G) ** 2)``. With fewer samples than features (residuals of a few hundred
    trials over thousands of voxels) this costs ``n_samples ** 2 * n_features`` instead
    of ``n_samples * n_features ** 2``.
    """
    G = np.asarray(gram, dtype=np.float64)
    n, p = G.shape[0], int(n_features)
    if p == 1:
        return 0.0
    trace = np.trace(G) / n  # trace of the empirical covariance X.T @ X / n
    mu = trace / p
    delta_ = np.sum(G ** 2) / n ** 2
    beta = (np.sum(np.diag(G) ** 2) / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace + p * mu ** 2) / p
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)


class _ShrunkPrecision:
    """The inverse of a shrunk covariance ``(1 - lam) R.T @ R / dof + lam mu I``, applied
    through the Woodbury identity: only an ``n_samples``-square system is solved, so
    thousands of targets never form (or invert) a targets-square matrix."""

    def __init__(self, residuals, dof: int, shrinkage: float):
        R = np.asarray(residuals, dtype=np.float64)
        a = (1.0 - shrinkage) / dof
        G = R @ R.T
        b = shrinkage * np.trace(G) / dof / R.shape[1]
        if b <= 0:
            raise ValueError("noise_cov is singular; use noise_cov='shrinkage' with more "
                             "residual degrees of freedom")
        self.R, self.b = R, b
        # P = (I - R.T (b/a I + G)^-1 R) / b
        self.inner = None if a == 0 else np.linalg.inv(b / a * np.eye(len(G)) + G)

    def __matmul__(self, V: np.ndarray) -> np.ndarray:
        if self.inner is None:
            return V / self.b
        return (V - self.R.T @ (self.inner @ (self.R @ V))) / self.b


def _cell_means(X, codes, mask_rows, n_stim):
    """Mean of the rows of X selected by mask_rows, per stimulus code; count per stimulus."""
    counts = np.bincount(codes[mask_rows], minlength=n_stim).astype(np.float64)
    sums = np.zeros((n_stim, X.shape[1]))
    np.add.at(sums, codes[mask_rows], X[mask_rows])
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None], counts > 0


def crossnobis_rdm(X, stim_id, runs, noise_cov=None, square: bool = False,
                   return_stimuli: bool = False):
    """Cross-validated squared Mahalanobis (crossnobis) RDM, leave-one-run-out.

    For each run ``k``, each stimulus is averaged within run ``k`` (``m_i``) and over all
    other runs (``t_i``); the fold estimate is ``(t_i - t_j) @ P @ (m_i - m_j) /
    n_features`` with ``P`` the noise precision, and folds are averaged. Noise independent
    across runs cancels in expectation, so the estimate is unbiased (it can be negative)
    for ``(mu_i - mu_j) @ P @ (mu_i - mu_j) / n_features``. In a balanced design this equals
    ``rsatoolbox.rdm.calc_rdm(..., method="crossnobis", descriptor=stim, cv_descriptor=run,
    noise=P)``. In an unbalanced design each pair is averaged over the folds where both
    stimuli are in the held-out run and in the remaining runs.

    Parameters
    ----------
    X : array-like, shape (n_samples, n_features)
        Trial (or per-run beta) patterns.
    stim_id : array-like, shape (n_samples,)
        Stimulus of each row; every stimulus must appear in at least 2 runs.
    runs : array-like, shape (n_samples,)
        Run (independent-noise partition) of each row.
    noise_cov : None, "shrinkage" or array-like, shape (n_features, n_features)
        None: identity (cross-validated squared Euclidean distance). ``"shrinkage"``:
        Ledoit-Wolf-shrunk covariance of the residuals of each row from its stimulus-by-run
        mean (:func:`shrinkage_noise_cov`; needs repeats within runs) or, when every
        stimulus occurs once per run, from its stimulus mean. An array: a noise covariance
        (not a precision), inverted here.
    square : bool
        Return the square matrix instead of the condensed vector.
    return_stimuli : bool
        Also return the stimulus labels in RDM order (sorted unique ``stim_id``).

    Returns
    -------
    rdm : ndarray, shape (n_stimuli * (n_stimuli - 1) / 2,) or (n_stimuli, n_stimuli)
        Rows and columns in the order of the sorted unique stimulus labels.
    stimuli : ndarray, shape (n_stimuli,)
        Only if ``return_stimuli``.
    """
    X = _as_2d(X, "X", min_rows=2)
    n, p = X.shape
    stim_id, runs = np.asarray(stim_id), np.asarray(runs)
    for name, arr in (("stim_id", stim_id), ("runs", runs)):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like the rows of X, "
                             f"got {arr.shape}")
    stimuli, s_code = np.unique(stim_id, return_inverse=True)
    run_labels, r_code = np.unique(runs, return_inverse=True)
    n_stim, n_runs = len(stimuli), len(run_labels)
    if n_stim < 2:
        raise ValueError(f"crossnobis needs at least 2 stimuli, got {n_stim}")
    runs_per_stim = (np.bincount(s_code * n_runs + r_code, minlength=n_stim * n_runs)
                     .reshape(n_stim, n_runs) > 0).sum(1)
    if np.any(runs_per_stim < 2):
        bad = stimuli[runs_per_stim < 2]
        raise ValueError(
            f"crossnobis needs every stimulus in >= 2 runs; {len(bad)} of {n_stim} stimuli "
            f"appear in only one run (e.g. {bad[:3].tolist()}); use compute_rdm instead or "
            f"pass runs with repeats of each stimulus")
    P = _precision(noise_cov, X, s_code, r_code, n_stim, n_runs, p)

    total = np.zeros((n_stim, n_stim))
    count = np.zeros((n_stim, n_stim))
    for k in range(n_runs):
        in_k = r_code == k
        test, has_test = _cell_means(X, s_code, in_k, n_stim)
        train, has_train = _cell_means(X, s_code, ~in_k, n_stim)
        ok = has_test & has_train
        test, train = np.where(ok[:, None], test, 0.0), np.where(ok[:, None], train, 0.0)
        K = train @ (P @ test.T)
        d = np.diag(K)
        D = d[:, None] + d[None, :] - K - K.T
        valid = np.outer(ok, ok)
        total += np.where(valid, D, 0.0)
        count += valid
    iu = np.triu_indices(n_stim, k=1)
    if np.any(count[iu] == 0):
        i, j = iu[0][count[iu] == 0][0], iu[1][count[iu] == 0][0]
        raise ValueError(
            f"stimuli {stimuli[i]!r} and {stimuli[j]!r} are never together in a held-out run "
            f"and in the remaining runs, so their crossnobis distance is undefined")
    condensed = total[iu] / count[iu] / p
    out = _square(condensed) if square else condensed
    return (out, stimuli) if return_stimuli else out


def _precision(noise_cov, X, s_code, r_code, n_stim, n_runs, p):
    """The noise precision, a matrix or (shrinkage with fewer residuals than features) an
    operator that applies it with ``@``."""
    if noise_cov is None:
        return np.eye(p)
    if isinstance(noise_cov, str):
        _check_option(noise_cov, ("shrinkage",), "noise_cov")
        cell = s_code * n_runs + r_code
        n_cells = len(np.unique(cell))
        if n_cells < len(cell):  # repeats within runs: residuals from stimulus-by-run means
            codes, n_groups = np.unique(cell, return_inverse=True)[1], n_cells
        else:
            codes, n_groups = s_code, n_stim
        means = np.zeros((n_groups, p))
        np.add.at(means, codes, X)
        means /= np.bincount(codes, minlength=n_groups)[:, None]
        dof = len(codes) - n_groups
        if dof < 1:
            raise ValueError("no residual degrees of freedom to estimate a noise covariance")
        residuals = X - means[codes]
        if len(residuals) < p:  # low rank + identity: never a p-square matrix
            R, dof, lam = _shrinkage_terms(residuals, dof, None)
            return _ShrunkPrecision(R, dof, lam)
        cov = shrinkage_noise_cov(residuals, dof=dof)
    else:
        cov = np.asarray(noise_cov, dtype=np.float64)
        if cov.shape != (p, p):
            raise ValueError(f"noise_cov must be (n_features, n_features) = ({p}, {p}), "
                             f"got shape {cov.shape}")
        if not np.allclose(cov, cov.T):
            raise ValueError("noise_cov must be symmetric")
    try:
        return np.linalg.inv(cov)
    except np.linalg.LinAlgError as err:
        raise ValueError("noise_cov is singular; use noise_cov='shrinkage'") from err


def _tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-a: (concordant - discordant) / (m (m - 1) / 2), ties count as neither."""
    m = x.size
    n0 = m * (m - 1) / 2.0

    def ties(v):
        c = np.unique(v, return_counts=True)[1].astype(np.float64)
        return (c * (c - 1) / 2.0).sum()

    n1, n2 = ties(x), ties(y)
    if n1 == n0 or n2 == n0:  # one vector constant: no pair is concordant or discordant
        return 0.0
    tau_b = stats.kendalltau(x, y, variant="b").statistic
    return float(np.clip(tau_b * np.sqrt((n0 - n1) * (n0 - n2)) / n0, -1.0, 1.0))


def compare_rdms(a, b, method: str = "spearman") -> float:
    """Similarity of two RDMs over their off-diagonal entries.

    Parameters
    ----------
    a, b : array-like, shape (n_pairs,) or (n_stimuli, n_stimuli)
        Condensed or square RDMs over the same stimuli in the same order. Entries that are
        NaN in either are left out (as rsatoolbox does).
    method : {"spearman", "kendall_tau_a", "pearson"}
        ``"kendall_tau_a"``: (concordant - discordant) / number of pairs, no tie
        correction, recommended when a model RDM has ties (Nili et al. 2014); equal to
        ``rsatoolbox.rdm.compare(..., method="tau-a")``.

    Returns
    -------
    similarity : float
        NaN when fewer than 3 entries are left or one RDM is constant (Spearman, Pearson).
    """
    _check_option(method, COMPARE_METHODS, "method")
    a, b = _to_condensed(a, "a"), _to_condensed(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"RDMs a and b must match in shape, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 3:
        return float("nan")
    if method == "kendall_tau_a":
        return _tau_a(a, b)
    if method == "spearman":
        a, b = stats.rankdata(a), stats.rankdata(b)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denom) if denom > 0 else float("nan")


def _layers(layer_features, n: int) -> dict:
    if isinstance(layer_features, Mapping):
        items = dict(layer_features)
    elif isinstance(layer_features, np.ndarray) and layer_features.ndim == 3:
        items = {i: layer_features[i] for i in range(layer_features.shape[0])}
    elif isinstance(layer_features, Sequence) and not isinstance(layer_features, str):
        items = dict(enumerate(layer_features))
    else:
        raise ValueError("layer_features must be a mapping of layer -> (n_stimuli, dim), "
                         "a sequence of such arrays or an array (n_layers, n_stimuli, dim)")
    if not items:
        raise ValueError("layer_features is empty")
    for layer, F in items.items():
        F = np.asarray(F)
        if F.ndim != 2 or F.shape[0] != n:
            raise ValueError(f"layer {layer!r}: features must be ({n}, dim) to match the "
                             f"{n} rows of Y, got shape {F.shape}")
    return items


def rsa_per_region_layer(Y, regions, layer_features, metric: str = "correlation",
                         layer_metric: str | None = None, method: str = "spearman",
                         include_all: bool = True) -> pd.DataFrame:
    """Compare the brain RDM of every region with the model RDM of every layer.

    Parameters
    ----------
    Y : array-like, shape (n_stimuli, n_targets)
        Brain responses, one row per stimulus (repeats averaged), rows in the order of the
        rows of every layer's features.
    regions : array-like of str, shape (n_targets,)
        Region label of each target; targets labelled ``""`` only count in ``"all"``.
    layer_features : mapping of layer -> array (n_stimuli, dim), sequence of arrays, or
        array (n_layers, n_stimuli, dim)
        Model features per layer; sequences and arrays are labelled 0, 1, ...
    metric : {"correlation", "euclidean"}
        Dissimilarity of the brain RDMs (:func:`compute_rdm`).
    layer_metric : {"correlation", "euclidean"}, optional
        Dissimilarity of the layer RDMs; ``metric`` by default.
    method : {"spearman", "kendall_tau_a", "pearson"}
        RDM comparison (:func:`compare_rdms`).
    include_all : bool
        Also score the region ``"all"`` made of every target.

    Returns
    -------
    scores : DataFrame
        Columns ``region, layer, score, n_targets``; one row per region x layer, regions
        sorted (``"all"`` first), layers in the given order.
    """
    _check_option(metric, RDM_METRICS, "metric")
    layer_metric = metric if layer_metric is None else layer_metric
    _check_option(layer_metric, RDM_METRICS, "layer_metric")
    _check_option(method, COMPARE_METHODS, "method")
    Y = _as_2d(Y, "Y", min_rows=3)
    regions = np.asarray(regions).astype(str)
    if regions.shape != (Y.shape[1],):
        raise ValueError(f"regions must have one label per target ({Y.shape[1]}), "
                         f"got shape {regions.shape}")
    layers = _layers(layer_features, Y.shape[0])
    layer_rdms = {name: compute_rdm(F, layer_metric) for name, F in layers.items()}
    names = (["all"] if include_all else []) + sorted(set(regions.tolist()) - {"", "all"})
    records = []
    for region in names:
        cols = np.ones(len(regions), bool) if region == "all" else regions == region
        # a correlation RDM is undefined over a single target: NaN score, not an error
        brain = (compute_rdm(Y[:, cols], metric)
                 if cols.sum() >= (2 if metric == "correlation" else 1) else None)
        for layer, model_rdm in layer_rdms.items():
            score = np.nan if brain is None else compare_rdms(brain, model_rdm, method)
            records.append({"region": region, "layer": layer, "score": score,
                            "n_targets": int(cols.sum())})
    return pd.DataFrame.from_records(records, columns=RSA_COLUMNS)
