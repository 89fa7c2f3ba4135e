"""Permutation tests that respect the structure of the data, FDR, bootstrap CIs, layer stats.

Permutations are generated as row indices (:func:`permute_indices`) and applied to the
responses, never to the predictors, so any scorer can be tested with
:func:`permutation_test`:

- ``"stimulus"``: exchangeable rows (one row per stimulus or trial), optionally only
  within groups (runs, sessions, subjects);
- ``"block"``: contiguous blocks of ``block_size`` rows are shuffled within each run,
  which keeps the autocorrelation within blocks (time series);
- ``"circular"``: each run is circularly shifted by a random lag, which keeps all
  autocorrelation except across the wrap point.

Many draws at once: the alignment scores (:mod:`~brainhead.align.scores`) standardise
the data once and score all draws of a fold as array operations, in blocks of
:data:`NULL_BLOCK_ELEMENTS` so that memory does not grow with the number of draws:
:func:`permuted_column_dots` (Pearson r under every permutation of the rows),
:func:`counts_from_indices` with :func:`weighted_r` (Pearson r of every bootstrap draw
from weighted moments) and :class:`PairPermutations` (RDM and Gram-matrix comparisons
under every permutation of the stimuli).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
from scipy import sparse, stats

PERMUTATION_SCHEMES = ("stimulus", "block", "circular")
ALTERNATIVES = ("greater", "less", "two-sided")
_BATCH_ELEMENTS = 2**22  # rows x columns per bootstrap / sign-flip batch (32 MiB float64)
#: Entries of one block of resampled scores (resamples x columns, 4 MiB in float64). The
#: batched nulls below work block by block, so their scratch memory stays a few such
#: blocks whatever the number of resamples and targets.
NULL_BLOCK_ELEMENTS = 2**19
#: Bytes of the row-pair products that :func:`permuted_column_dots` forms once per column
#: block and reads for every permutation: small enough to stay in the CPU cache.
_PAIR_PRODUCT_BYTES = 2**22


def _check_option(value, allowed, name: str):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_ci(ci: float) -> float:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    return float(ci)


def permute_indices(n: int, scheme: str = "stimulus", groups=None,
                    block_size: int | None = None, rng=None, min_shift: int = 1
                    ) -> np.ndarray:
    """One random permutation of ``n`` row indices that respects the data's structure.

    Parameters
    ----------
    n : int
        Number of rows.
    scheme : {"stimulus", "block", "circular"}
        ``"stimulus"``: shuffle rows, within each group when ``groups`` is given.
        ``"block"``: cut each run into contiguous blocks of ``block_size`` rows (the last
        may be shorter) and shuffle the blocks within the run. ``"circular"``: shift each
        run circularly by a random lag in ``[min_shift, n_run - min_shift]``.
    groups : array-like, shape (n,), optional
        Group (run) of each row; for ``"block"`` and ``"circular"`` the rows of a run, in
        index order, are its time order. None: all rows form one group.
    block_size : int, optional
        Required for ``"block"``.
    rng : None, int or numpy.random.Generator
    min_shift : int
        Smallest circular lag (``"circular"`` only); runs must be longer than
        ``2 * min_shift - 1`` rows.

    Returns
    -------
    index : ndarray of int, shape (n,)
        A permutation of ``range(n)``; ``Y[index]`` is the permuted data. Every index stays
        within its group.
    """
    n = _check_positive_int(n, "n")
    _check_option(scheme, PERMUTATION_SCHEMES, "scheme")
    rng = np.random.default_rng(rng)
    if groups is None:
        members = [np.arange(n)]
    else:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
        codes = np.unique(groups, return_inverse=True)[1]
        order = np.argsort(codes, kind="stable")
        members = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
    if scheme == "block":
        if block_size is None:
            raise ValueError("scheme='block' needs block_size (rows per block)")
        block_size = _check_positive_int(block_size, "block_size")
    if scheme == "circular":
        min_shift = _check_positive_int(min_shift, "min_shift")
    index = np.arange(n)
    for rows in members:
        m = len(rows)
        if scheme == "stimulus":
            index[rows] = rows[rng.permutation(m)]
        elif scheme == "block":
            blocks = np.split(rows, np.arange(block_size, m, block_size))
            index[rows] = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        else:
            if m < 2 * min_shift:
                raise ValueError(f"a run of {m} rows is too short for circular shifts of at "
                                 f"least min_shift={min_shift}")
            shift = rng.integers(min_shift, m - min_shift + 1)
            index[rows] = np.roll(rows, shift)
    return index


def permutation_pvalues(observed, null, alternative: str = "greater") -> np.ndarray:
    """Permutation p-values with the ``(count + 1) / (n + 1)`` correction.

    Parameters
    ----------
    observed : array-like, shape (n_targets,) or scalar
    null : array-like, shape (n_permutations, n_targets) or (n_permutations,)
        NaN null values are ignored per target (``n`` counts the finite ones).
    alternative : {"greater", "less", "two-sided"}
        ``"two-sided"`` doubles the smaller one-sided p-value (capped at 1), which does
        not assume a null distribution centred on 0.

    Returns
    -------
    p : ndarray, shape of ``observed``
        In ``[1 / (n + 1), 1]``; NaN where ``observed`` is NaN or no null value is finite.
    """
    _check_option(alternative, ALTERNATIVES, "alternative")
    obs = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    if null.ndim == 0 or null.shape[1:] != obs.shape:
        raise ValueError(f"null must be (n_permutations, *observed.shape) = (n, "
                         f"{', '.join(map(str, obs.shape))}), got shape {null.shape}")
    finite = np.isfinite(null)
    n_valid = finite.sum(0)
    with np.errstate(invalid="ignore"):
        ge = ((null >= obs) & finite).sum(0)
        le = ((null <= obs) & finite).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_greater, p_less = (ge + 1.0) / (n_valid + 1.0), (le + 1.0) / (n_valid + 1.0)
    p = {"greater": p_greater, "less": p_less,
         "two-sided": np.minimum(2 * np.minimum(p_greater, p_less), 1.0)}[alternative]
    return np.where(np.isnan(obs) | (n_valid == 0), np.nan, p)


class PermutationResult(NamedTuple):
    """Result of :func:`permutation_test`."""

    observed: np.ndarray
    """Observed scores, shape (n_targets,)."""
    null: np.ndarray
    """Scores of the permuted data, shape (n_permutations, n_targets)."""
    pvalues: np.ndarray
    """Permutation p-values, shape (n_targets,)."""


def permutation_test(score_fn: Callable[[np.ndarray], np.ndarray], Y,
                     n_permutations: int = 1000, scheme: str = "stimulus", groups=None,
                     block_size: int | None = None, alternative: str = "greater",
                     seed=0) -> PermutationResult:
    """Permutation test of per-target scores, permuting the rows of the responses.

    Parameters
    ----------
    score_fn : callable
        ``score_fn(Y_permuted) -> scores`` of shape (n_targets,) (or a scalar); it holds
        the fixed predictors, e.g. ``lambda Yp: pearson_r(pred, Yp)``.
    Y : array-like, shape (n_samples, ...)
        Responses; rows are permuted.
    n_permutations : int
    scheme, groups, block_size
        See :func:`permute_indices`.
    alternative : {"greater", "less", "two-sided"}
        See :func:`permutation_pvalues`.
    seed : None, int or numpy.random.Generator

    Returns
    -------
    result : PermutationResult
        ``(observed, null, pvalues)``.
    """
    n_permutations = _check_positive_int(n_permutations, "n_permutations")
    Y = np.asarray(Y)
    if Y.ndim < 1 or Y.shape[0] < 2:
        raise ValueError(f"Y must have at least 2 rows, got shape {Y.shape}")
    rng = np.random.default_rng(seed)
    observed = np.atleast_1d(np.asarray(score_fn(Y), dtype=np.float64))
    null = np.empty((n_permutations,) + observed.shape)
    for i in range(n_permutations):
        idx = permute_indices(Y.shape[0], scheme, groups=groups, block_size=block_size,
                              rng=rng)
        scores = np.atleast_1d(np.asarray(score_fn(Y[idx]), dtype=np.float64))
        if scores.shape != observed.shape:
            raise ValueError(f"score_fn returned shape {scores.shape} on permuted data but "
                             f"{observed.shape} on the original")
        null[i] = scores
    return PermutationResult(observed, null, permutation_pvalues(observed, null, alternative))


def fdr_bh(pvalues) -> np.ndarray:
    """Benjamini-Hochberg FDR q-values (adjusted p-values), NaN-aware.

    ``q_(i) = min_{j >= i} min(1, m p_(j) / j)`` over the ``m`` finite p-values sorted
    ascending; equal to ``scipy.stats.false_discovery_control(p, method="bh")``.

    Parameters
    ----------
    pvalues : array-like, any shape
        NaN entries are left out of ``m`` and stay NaN.

    Returns
    -------
    q : ndarray, shape of ``pvalues``
        Monotone in p: a smaller p never gets a larger q.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    ok = ~np.isnan(flat)
    vals = flat[ok]
    if np.any((vals < 0) | (vals > 1)):
        raise ValueError("p-values must be in [0, 1]")
    q = np.full(flat.shape, np.nan)
    m = vals.size
    if m:
        order = np.argsort(vals, kind="stable")
        adj = vals[order] * m / np.arange(1, m + 1)
        adj = np.minimum.accumulate(adj[::-1])[::-1]
        out = np.empty(m)
        out[order] = np.minimum(adj, 1.0)
        q[ok] = out
    return q.reshape(p.shape)


@contextmanager
def _quiet_nan():
    """Silence numpy's empty/all-NaN slice warnings: the NaN result is the documented one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning,
                                message="(Mean of empty slice|All-NaN slice)")
        yield


def _percentile_ci(dist: np.ndarray, ci: float, axis: int = 0):
    alpha = (1 - ci) / 2
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanquantile(dist, [alpha, 1 - alpha], axis=axis)
    return lo, hi


def weighted_r(W: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson r per column of ``A`` and ``B`` for every draw of resampling counts.

    Row ``b`` of the result is the Pearson r of the rows of ``A`` and ``B`` repeated
    ``W[b]`` times (a bootstrap resample given as counts, :func:`counts_from_indices`),
    from weighted moments: five matrix products for all draws instead of one resampled
    copy per draw.

    Parameters
    ----------
    W : ndarray, shape (n_draws, n_rows)
        Non-negative weights (counts) of the rows in each draw.
    A, B : ndarray, shape (n_rows, n_columns)
        Centre them first (on all rows) to keep the moment sums accurate.

    Returns
    -------
    r : ndarray, shape (n_draws, n_columns)
        NaN where a draw leaves a column (numerically) without variance.
    """
    n = W.sum(1, keepdims=True)
    ma, mb = W @ A / n, W @ B / n
    saa, sbb = W @ (A * A) / n, W @ (B * B) / n
    cov = W @ (A * B) / n - ma * mb
    va = saa - ma**2
    vb = sbb - mb**2
    denom = np.sqrt(np.maximum(va, 0) * np.maximum(vb, 0))
    scale = np.sqrt(saa * sbb)
    with np.errstate(invalid="ignore", divide="ignore"):
        # a resample with (numerically) no variance has no correlation
        return np.where(denom > 1e-12 * scale, cov / denom, np.nan)


def counts_from_indices(index: np.ndarray, n: int) -> np.ndarray:
    """Resampling counts of row indices drawn with replacement.

    Parameters
    ----------
    index : ndarray of int, shape (n_draws, n_rows)
        Row ``b``: the rows (in ``range(n)``) of draw ``b``, repeats allowed.
    n : int

    Returns
    -------
    counts : ndarray of float64, shape (n_draws, n)
        How many times each row is in each draw; ``A[index[b]]`` and ``A`` weighted by
        ``counts[b]`` have the same moments.
    """
    index = np.asarray(index, dtype=np.intp)
    n_draws = index.shape[0]
    flat = (np.arange(n_draws)[:, None] * n + index).ravel()
    return np.bincount(flat, minlength=n_draws * n).reshape(n_draws, n).astype(np.float64)


def permuted_column_dots(A: np.ndarray, B: np.ndarray, perms: np.ndarray, *,
                         max_elements: int = NULL_BLOCK_ELEMENTS
                         ) -> Iterator[tuple[slice, np.ndarray]]:
    """``sum_i A[i, j] * B[perms[k, i], j]`` for every permutation ``k`` and column ``j``.

    With column-normalised ``A`` (predictions) and ``B`` (responses), this is the
    Pearson r of every column under every permutation of the responses' rows (a
    permutation keeps a column's mean and norm), all permutations at once. Columns come
    in blocks of at most ``max_elements / n_perm`` columns, so memory stays bounded.

    Two ways to the same sums: with no more rows than permutations, each column block
    forms the products of every pair of rows ``A[i, j] * B[m, j]`` once (``n**2`` rows,
    kept small enough to stay in cache) and every permutation adds up ``n`` of them, as
    one sparse matrix product; otherwise the rows of ``B`` are gathered per permutation.

    Parameters
    ----------
    A, B : ndarray, shape (n, n_columns)
    perms : ndarray of int, shape (n_perm, n)
        Each row a permutation of ``range(n)``.
    max_elements : int
        Bound on the entries of one block of the result (and of the gathered rows).

    Yields
    ------
    cols : slice
        Columns of the block.
    dots : ndarray, shape (n_perm, cols.stop - cols.start)
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    n, t = A.shape
    perms = np.asarray(perms, dtype=np.intp).reshape(-1, n)
    n_perm = perms.shape[0]
    pair_cols = _PAIR_PRODUCT_BYTES // (8 * n * n)
    if 0 < n <= n_perm and pair_cols >= 16:
        width = int(max(1, min(t, pair_cols, max_elements // n_perm)))
        pick = sparse.csr_matrix(
            (np.ones(n_perm * n), (np.arange(n) * n + perms).ravel(),
             np.arange(0, n_perm * n + 1, n)), shape=(n_perm, n * n))
        for start in range(0, t, width):
            cols = slice(start, min(start + width, t))
            pairs = (A[:, None, cols] * B[None, :, cols]).reshape(n * n, -1)
            yield cols, np.asarray(pick @ pairs)
        return
    width = int(max(1, min(t, 64, max_elements // max(n_perm, n, 1))))
    step = max(1, max_elements // max(n * width, 1))
    for start in range(0, t, width):
        cols = slice(start, min(start + width, t))
        a, b = A[:, cols], B[:, cols]
        out = np.empty((n_perm, cols.stop - cols.start))
        for s in range(0, n_perm, step):
            out[s:s + step] = np.einsum("kij,ij->kj", b[perms[s:s + step]], a)
        yield cols, out


class PairPermutations:
    """Stimulus permutations as permuted pairs, for weighted sums over square matrices.

    For every permutation ``p = perms[k]`` and every pair ``i < j`` (condensed,
    row-major order as :func:`scipy.spatial.distance.squareform`), :meth:`sums` gives
    ``sum_(i<j) S[p_i, p_j] * weights[(i, j)]``: the comparison of fixed RDMs (or Gram
    matrices) with one whose stimuli are permuted, all permutations at once. The flat
    indices of the permuted pairs are the same for every matrix and every call (every
    layer of a subject), so they are formed once and kept when they take at most
    ``cache_bytes``; otherwise they are formed again, block by block, at each call.

    Parameters
    ----------
    perms : ndarray of int, shape (n_perm, n)
    max_elements : int
        Pairs gathered at once (permutations x pairs).
    cache_bytes : int
        Largest size of the kept pair indices.
    """

    def __init__(self, perms: np.ndarray, *, max_elements: int = NULL_BLOCK_ELEMENTS,
                 cache_bytes: int = 2**25):
        perms = np.asarray(perms)
        self.n = perms.shape[1] if perms.ndim == 2 else 0
        self.perms = perms.astype(np.intp).reshape(-1, self.n)
        self._iu = np.triu_indices(self.n, 1)
        n_pairs = len(self._iu[0])
        self._step = max(1, max_elements // max(n_pairs, 1))
        # Kept indices are C-ordered and, where the cache allows, of numpy's index type:
        # np.take casts any other index array to one first, and reads Fortran-ordered
        # ones (what fancy indexing along the columns gives) against their memory
        # order, which made the gather four to five times slower (demo EEG job).
        n_idx = self.perms.shape[0] * n_pairs
        dtype = None
        for candidate in (np.intp, np.int32):
            fits = candidate is np.intp or self.n * self.n < 2**31
            if fits and n_idx * np.dtype(candidate).itemsize <= cache_bytes:
                dtype = candidate
                break
        self._cache = list(self._index_blocks(dtype)) if dtype is not None else None

    def _index_blocks(self, dtype=np.intp) -> Iterator[tuple[slice, np.ndarray]]:
        iu0, iu1 = self._iu
        for s in range(0, self.perms.shape[0], self._step):
            p = self.perms[s:s + self._step]
            idx = p[:, iu0] * self.n + p[:, iu1]
            yield slice(s, s + len(p)), np.ascontiguousarray(idx, dtype=dtype)

    def sums(self, squares: Sequence[np.ndarray], weights: Sequence[np.ndarray]
             ) -> list[np.ndarray]:
        """Weighted sums of the permuted off-diagonal entries of every square matrix.

        Parameters
        ----------
        squares : sequence of ndarray, each shape (n, n)
        weights : sequence of ndarray, each shape (n * (n - 1) / 2, n_columns)
            One per square matrix, pairs in condensed order.

        Returns
        -------
        sums : list of ndarray, each shape (n_perm, n_columns)
        """
        flat = [np.ascontiguousarray(S, dtype=np.float64).ravel() for S in squares]
        weights = [np.asarray(W, dtype=np.float64) for W in weights]
        out = [np.empty((self.perms.shape[0], W.shape[1])) for W in weights]
        for rows, idx in (self._cache if self._cache is not None else self._index_blocks()):
            for f, W, o in zip(flat, weights, out):
                o[rows] = np.take(f, idx) @ W
        return out


def _stat_fn(stat):
    if callable(stat):
        return stat
    _check_option(stat, ("mean", "median"), "stat")
    return np.nanmean if stat == "mean" else np.nanmedian


def bootstrap_r_ci(y_true, y_pred, n_boot: int = 1000, ci: float = 0.95, seed=0,
                   stat: str = "mean", per_target: bool = False) -> dict:
    """Bootstrap CI of the Pearson r between data and predictions, resampling stimuli.

    Rows (stimuli) are resampled with replacement; in each resample the Pearson r of every
    target is recomputed (vectorised) and summarised over targets by ``stat``.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n_samples, n_targets) or (n_samples,)
    n_boot : int
    ci : float in (0, 1)
        Coverage of the percentile interval.
    seed : None, int or numpy.random.Generator
    stat : {"mean", "median"}
        Summary over targets (NaN targets ignored).
    per_target : bool
        Also return the per-target r and CIs.

    Returns
    -------
    result : dict
        ``estimate`` (stat of the observed r over targets), ``low``, ``high`` (percentile
        CI of that stat), ``distribution`` (n_boot,); with ``per_target``: ``r``,
        ``r_low``, ``r_high`` of shape (n_targets,).
    """
    A = np.asarray(y_true, dtype=np.float64)
    B = np.asarray(y_pred, dtype=np.float64)
    if A.ndim == 1 and B.ndim == 1:
        A, B = A[:, None], B[:, None]
    if A.ndim != 2 or A.shape != B.shape:
        raise ValueError(f"y_true and y_pred must have the same shape (n_samples, n_targets),"
                         f" got {np.shape(y_true)} and {np.shape(y_pred)}")
    if A.shape[0] < 3:
        raise ValueError(f"bootstrap_r_ci needs at least 3 samples, got {A.shape[0]}")
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
        raise ValueError("y_true and y_pred must be finite")
    n_boot = _check_positive_int(n_boot, "n_boot")
    ci = _check_ci(ci)
    summary = _stat_fn(stat)
    rng = np.random.default_rng(seed)
    n, t = A.shape
    A, B = A - A.mean(0), B - B.mean(0)  # centring first keeps the moment sums accurate
    r_obs = weighted_r(np.ones((1, n)), A, B)[0]
    boot = np.empty((n_boot, t))
    batch = max(1, _BATCH_ELEMENTS // max(n, t))
    for s in range(0, n_boot, batch):
        m = min(batch, n_boot - s)
        W = rng.multinomial(n, np.full(n, 1.0 / n), size=m).astype(np.float64)
        boot[s:s + m] = weighted_r(W, A, B)
    with _quiet_nan():
        dist = summary(boot, axis=1)
        estimate = float(summary(r_obs))
        lo, hi = _percentile_ci(dist, ci)
        out = {"estimate": estimate, "low": float(lo), "high": float(hi),
               "distribution": dist}
        if per_target:
            r_lo, r_hi = _percentile_ci(boot, ci, axis=0)
            out.update(r=r_obs, r_low=r_lo, r_high=r_hi)
    return out


def bootstrap_ci(values, n_boot: int = 1000, ci: float = 0.95, seed=0,
                 stat="mean") -> dict:
    """Percentile bootstrap CI of a statistic of independent units.

    Parameters
    ----------
    values : array-like, shape (n_units,) or (n_units, n_columns)
        Units (subjects, targets, stimuli) along axis 0 are resampled with replacement.
    n_boot : int
    ci : float in (0, 1)
    seed : None, int or numpy.random.Generator
    stat : {"mean", "median"} or callable
        A callable is called as ``stat(sample, axis=1)`` on samples of shape
        (n_batch, n_units, ...) and must reduce that axis (like ``np.mean``).

    Returns
    -------
    result : dict
        ``estimate`` (stat of ``values``), ``low``, ``high``, each a float (or an array of
        shape (n_columns,)), and ``distribution`` of shape (n_boot[, n_columns]).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[0] < 2:
        raise ValueError(f"values must be (n_units,) or (n_units, n_columns) with "
                         f"n_units >= 2, got shape {x.shape}")
    n_boot = _check_positive_int(n_boot, "n_boot")
    ci = _check_ci(ci)
    fn = _stat_fn(stat)
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    width = x[0].size
    dist = np.empty((n_boot,) + x.shape[1:])
    batch = max(1, _BATCH_ELEMENTS // (n * width))
    with _quiet_nan():
        for s in range(0, n_boot, batch):
            m = min(batch, n_boot - s)
            dist[s:s + m] = fn(x[rng.integers(0, n, size=(m, n))], axis=1)
        estimate = fn(x[None], axis=1)[0]
        lo, hi = _percentile_ci(dist, ci)

    def _out(v):
        return float(v) if np.ndim(v) == 0 else np.asarray(v)

    return {"estimate": _out(estimate), "low": _out(lo), "high": _out(hi),
            "distribution": dist}


class PairedResult(NamedTuple):
    """Result of :func:`paired_test`."""

    statistic: np.ndarray | float
    """Wilcoxon W, or the mean difference ``a - b`` for the sign-flip test."""
    pvalue: np.ndarray | float


def _paired_1d(d, method, n_permutations, rng, alternative):
    d = d[np.isfinite(d)]
    if d.size < 2:
        return np.nan, np.nan
    if method == "wilcoxon":
        if np.all(d == 0):
            return 0.0, 1.0
        res = stats.wilcoxon(d, alternative=alternative)
        return float(res.statistic), float(res.pvalue)
    observed = d.mean()
    null = np.empty(n_permutations)
    batch = max(1, _BATCH_ELEMENTS // d.size)
    for s in range(0, n_permutations, batch):
        m = min(batch, n_permutations - s)
        signs = rng.integers(0, 2, size=(m, d.size)) * 2.0 - 1.0
        null[s:s + m] = signs @ d / d.size
    return float(observed), float(permutation_pvalues(observed, null, alternative))


def paired_test(a, b, method: str = "wilcoxon", n_permutations: int = 10000, seed=0,
                alternative: str = "two-sided") -> PairedResult:
    """Paired test of ``a`` against ``b`` (e.g. trained vs random model, per layer).

    Parameters
    ----------
    a, b : array-like, shape (n_units,) or (n_units, n_layers)
        Paired scores over units (targets or subjects); columns are tested separately.
        Pairs with a NaN are dropped.
    method : {"wilcoxon", "signflip"}
        ``"wilcoxon"``: signed-rank test of ``a - b`` (:func:`scipy.stats.wilcoxon`).
        ``"signflip"``: the mean difference against ``n_permutations`` random sign flips
        of the differences (exchangeable under a null symmetric about 0), p-values from
        :func:`permutation_pvalues`.
    n_permutations : int
        Sign-flip only.
    seed : None, int or numpy.random.Generator
        Sign-flip only.
    alternative : {"two-sided", "greater", "less"}
        ``"greater"``: ``a`` larger than ``b``.

    Returns
    -------
    result : PairedResult
        ``(statistic, pvalue)``, floats or arrays of shape (n_layers,). NaN where fewer
        than 2 pairs are finite.
    """
    _check_option(method, ("wilcoxon", "signflip"), "method")
    _check_option(alternative, ALTERNATIVES, "alternative")
    n_permutations = _check_positive_int(n_permutations, "n_permutations")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ValueError(f"a and b must have the same shape (n_units,) or (n_units, "
                         f"n_layers), got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    d = (a - b).reshape(a.shape[0], -1)
    res = np.array([_paired_1d(d[:, j], method, n_permutations, rng, alternative)
                    for j in range(d.shape[1])])
    if a.ndim == 1:
        return PairedResult(float(res[0, 0]), float(res[0, 1]))
    return PairedResult(res[:, 0], res[:, 1])


def best_layer_on_train(train_scores, test_scores, per_target: bool = True) -> dict:
    """Held-out score of the layer chosen on training scores, fold by fold.

    In each outer fold the layer is chosen by its inner (training) score only; the score
    reported is that layer's held-out score in the same fold, so the choice of the best
    layer never sees test data and the reported score is not inflated by it.

    Parameters
    ----------
    train_scores : array-like, shape (n_folds, n_layers) or (n_folds, n_layers, n_targets)
        Inner-CV (training-set) scores; NaN layers are never chosen.
    test_scores : array-like, same shape
        Held-out scores of the same folds and layers.
    per_target : bool
        With targets: choose a layer per target (True) or one layer per fold by the mean
        training score over targets (False).

    Returns
    -------
    result : dict
        ``layer``: chosen layer, shape (n_folds,) or (n_folds, n_targets); ``score``:
        its held-out score, same shape; ``mean``: ``score`` averaged over folds (shape
        () or (n_targets,)).
    """
    train = np.asarray(train_scores, dtype=np.float64)
    test = np.asarray(test_scores, dtype=np.float64)
    if train.shape != test.shape or train.ndim not in (2, 3):
        raise ValueError(f"train_scores and test_scores must have the same shape (n_folds, "
                         f"n_layers[, n_targets]), got {train.shape} and {test.shape}")
    with _quiet_nan():
        sel = train if per_target or train.ndim == 2 else np.nanmean(train, axis=2)
    all_nan = np.all(np.isnan(sel), axis=1)
    if np.any(all_nan):
        raise ValueError(f"every layer has a NaN training score in "
                         f"{int(all_nan.sum())} fold(s)/target(s); no layer can be chosen")
    layer = np.nanargmax(sel, axis=1)
    if train.ndim == 3 and not per_target:
        layer = np.repeat(layer[:, None], train.shape[2], axis=1)
    score = np.take_along_axis(test, layer[:, None], axis=1)[:, 0]
    with _quiet_nan():
        mean = np.nanmean(score, axis=0)
    return {"layer": layer, "score": score, "mean": mean if np.ndim(mean) else float(mean)}


def intermediate_layer_advantage(layer_scores, n_boot: int = 1000, ci: float = 0.95,
                                 seed=0) -> dict:
    """How much better the best layer is than the last one, with a bootstrap CI.

    Parameters
    ----------
    layer_scores : array-like, shape (n_layers, n_units)
        Scores of every layer for each unit (target, region or subject); NaN ignored.
    n_boot : int
    ci : float in (0, 1)
    seed : None, int or numpy.random.Generator

    Returns
    -------
    result : dict
        ``best_layer`` (int, by mean over units), ``relative_depth`` (``best_layer /
        (n_layers - 1)``), ``gap`` (best-layer mean minus last-layer mean, >= 0),
        ``gap_low``, ``gap_high`` (percentile CI over units resampled with replacement,
        the best layer re-chosen in each resample), ``gap_distribution`` (n_boot,) and
        ``p_last_best`` (fraction of resamples whose best layer is the last). Because the
        best layer is re-chosen, the gap is >= 0 in every resample: read ``p_last_best``
        (not whether the CI contains 0) as the evidence against "the last layer is best".
    """
    S = np.asarray(layer_scores, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] < 2 or S.shape[1] < 2:
        raise ValueError(f"layer_scores must be (n_layers, n_units) with at least 2 layers "
                         f"and 2 units, got shape {S.shape}")
    n_boot = _check_positive_int(n_boot, "n_boot")
    ci = _check_ci(ci)
    valid = np.isfinite(S)
    if not np.all(valid.any(axis=1)):
        raise ValueError("a layer has no finite score")
    filled = np.where(valid, S, 0.0)
    n_layers, n_units = S.shape
    means = filled.sum(1) / valid.sum(1)
    best = int(np.argmax(means))
    rng = np.random.default_rng(seed)
    gaps = np.empty(n_boot)
    last_best = np.empty(n_boot, dtype=bool)
    batch = max(1, _BATCH_ELEMENTS // max(n_units, n_layers))
    for s in range(0, n_boot, batch):
        m = min(batch, n_boot - s)
        W = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=m).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mb = (W @ filled.T) / (W @ valid.T)  # (m, n_layers)
        mb_best = np.nanmax(np.where(np.isnan(mb), -np.inf, mb), axis=1)
        gaps[s:s + m] = mb_best - mb[:, -1]
        last_best[s:s + m] = mb[:, -1] >= mb_best
    lo, hi = _percentile_ci(gaps, ci)
    return {"best_layer": best, "relative_depth": best / (n_layers - 1),
            "gap": float(means[best] - means[-1]), "gap_low": float(lo),
            "gap_high": float(hi), "gap_distribution": gaps,
            "p_last_best": float(last_best.mean())}


__all__ = [
    "ALTERNATIVES", "NULL_BLOCK_ELEMENTS", "PERMUTATION_SCHEMES", "PairPermutations",
    "PairedResult", "PermutationResult", "best_layer_on_train", "bootstrap_ci",
    "bootstrap_r_ci", "counts_from_indices", "fdr_bh", "intermediate_layer_advantage",
    "paired_test", "permutation_pvalues", "permutation_test", "permute_indices",
    "permuted_column_dots", "weighted_r",
]
