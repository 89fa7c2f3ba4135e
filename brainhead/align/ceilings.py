"""Noise ceilings from repeated stimuli, and scores normalised by them.

Both estimators target the same quantity: the **reliability** of the response averaged over
the ``k`` repeats of each stimulus,

    rho_k = var_signal / (var_signal + var_noise / k),

the fraction of the variance of the repeat-averaged data that is stimulus-driven. It is a
ceiling on the variance a model can explain in that average (R**2 <= rho_k), and
``sqrt(rho_k)`` is a ceiling on the Pearson r between any prediction and the average (the r
of the noiseless signal itself). Normalise R**2 by ``rho_k`` and r by ``sqrt(rho_k)``
(:func:`r_ceiling`).

- :func:`split_half_ceiling` estimates ``rho_k`` without a noise model: correlation of two
  random halves of the repeats, Spearman-Brown corrected to the full number of repeats.
- :func:`ncsnr` / :func:`ncsnr_ceiling` follow the Natural Scenes Dataset (Allen et al.
  2022): a noise-ceiling SNR from within-stimulus variance, turned into ``rho_k``.

References
----------
Allen et al. (2022). A massive 7T fMRI dataset to bridge cognitive neuroscience and
artificial intelligence. Nature Neuroscience 25.
Spearman (1910); Brown (1910). British Journal of Psychology 3.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def _check_responses(Y, stim_id, name: str = "Y") -> tuple[np.ndarray, np.ndarray, bool]:
    Y = np.asarray(Y, dtype=np.float64)
    vector = Y.ndim == 1
    if vector:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise ValueError(f"{name} must be (n_samples, n_targets), got shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError(f"{name} contains NaN or infinite values")
    stim_id = np.asarray(stim_id)
    if stim_id.shape != (Y.shape[0],):
        raise ValueError(f"stim_id must have shape ({Y.shape[0]},) like the rows of {name}, "
                         f"got {stim_id.shape}")
    return Y, stim_id, vector


def _repeated(stim_id: np.ndarray, min_stimuli: int, what: str):
    """Codes of the stimuli, their repeat counts and which are repeated; errors if too few."""
    stimuli, codes, counts = np.unique(stim_id, return_inverse=True, return_counts=True)
    repeated = counts >= 2
    if repeated.sum() < min_stimuli:
        raise ValueError(
            f"{what} needs repeated stimuli: at least {min_stimuli} stimuli shown >= 2 times, "
            f"got {int(repeated.sum())} of {len(stimuli)} (max repeats {counts.max()})")
    return codes, counts, repeated


def _column_r(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A, B = A - A.mean(0), B - B.mean(0)
    denom = np.sqrt((A * A).sum(0) * (B * B).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (A * B).sum(0) / denom, np.nan)


def split_half_ceiling(Y, stim_id, n_splits: int = 20, seed=0) -> np.ndarray:
    """Split-half reliability of the repeat-averaged response, per target.

    For each of ``n_splits`` random splits, the repeats of every stimulus are shuffled and
    split into two halves of ``r // 2`` repeats each (one repeat left out when ``r`` is odd);
    each half is averaged, the two averages are correlated across stimuli per target, and
    the correlation is Spearman-Brown corrected, ``2 r / (1 + r)``, to the reliability of an
    average of twice as many repeats. Corrected values are averaged over splits.

    Parameters
    ----------
    Y : array-like, shape (n_samples, n_targets) or (n_samples,)
        Single-trial responses.
    stim_id : array-like, shape (n_samples,)
        Stimulus of each row; stimuli shown once are ignored.
    n_splits : int
        Number of random splits averaged.
    seed : int or numpy.random.Generator

    Returns
    -------
    reliability : ndarray, shape (n_targets,) or scalar for 1-D ``Y``
        Estimate of ``rho_k`` (module docstring) with ``k`` twice the half size (the number
        of repeats when it is even and the same for all stimuli); ``sqrt`` of it bounds the
        Pearson r of any model with the repeat-averaged response. Can be negative for
        unreliable targets; NaN for constant targets.
    """
    Y, stim_id, vector = _check_responses(Y, stim_id)
    if int(n_splits) < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    codes, counts, repeated = _repeated(stim_id, 3, "split_half_ceiling")
    keep = repeated[codes]
    Y, codes = Y[keep], np.unique(codes[keep], return_inverse=True)[1]
    counts = np.bincount(codes)
    half = counts // 2
    n, n_stim = len(codes), len(counts)
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_sorted = np.arange(n) - start[codes[order]]
    total = np.zeros(Y.shape[1])
    for _ in range(int(n_splits)):
        # a random order of the repeats within each stimulus: sort rows by (stimulus, key)
        perm = np.lexsort((rng.random(n), codes))
        rank = np.empty(n, dtype=np.int64)
        rank[perm] = rank_in_sorted
        h = half[codes]
        side = np.where(rank < h, 0, np.where(rank < 2 * h, 1, -1))
        means = []
        for s in (0, 1):
            rows = np.flatnonzero(side == s)
            M = sparse.csr_matrix((np.full(len(rows), 1.0), (codes[rows], rows)),
                                  shape=(n_stim, n))
            means.append(np.asarray(M @ Y) / half[:, None])
        r = _column_r(*means)
        with np.errstate(invalid="ignore", divide="ignore"):
            total += 2 * r / (1 + r)
    out = total / int(n_splits)
    return out[0] if vector else out


def ncsnr(betas, stim_id) -> np.ndarray:
    """Noise-ceiling signal-to-noise ratio, as in the Natural Scenes Dataset.

    Betas are z-scored per target over all rows (so total variance is 1; NSD z-scores
    each session separately, which callers can do beforehand); the noise
    variance is the mean over repeated stimuli of the within-stimulus variance (ddof=1);
    signal sd is ``sqrt(max(1 - noise_var, 0))``; ``ncsnr = signal_sd / noise_sd``.

    Parameters
    ----------
    betas : array-like, shape (n_samples, n_targets) or (n_samples,)
        Single-trial responses (GLM betas).
    stim_id : array-like, shape (n_samples,)
        Stimulus of each row; at least 2 stimuli must be shown >= 2 times.

    Returns
    -------
    ncsnr : ndarray, shape (n_targets,) or scalar for 1-D ``betas``
        NaN for constant targets.
    """
    B, stim_id, vector = _check_responses(betas, stim_id, "betas")
    codes, counts, repeated = _repeated(stim_id, 2, "ncsnr")
    sd = B.std(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        Z = np.where(sd > 0, (B - B.mean(0)) / sd, np.nan)
    n_stim = len(counts)
    sums = np.zeros((n_stim, Z.shape[1]))
    np.add.at(sums, codes, Z)
    means = sums / counts[:, None]
    sq = np.zeros((n_stim, Z.shape[1]))
    np.add.at(sq, codes, (Z - means[codes]) ** 2)
    within = sq[repeated] / (counts[repeated, None] - 1)
    noise_var = within.mean(0)
    signal_var = np.maximum(1.0 - noise_var, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(signal_var) / np.sqrt(noise_var)
    return out[0] if vector else out


def ncsnr_ceiling(ncsnr, n_repeats) -> np.ndarray:
    """Noise ceiling (fraction of variance) of the repeat-averaged response from the ncsnr.

    ``ceiling = ncsnr**2 / (ncsnr**2 + 1 / n)``, the reliability ``rho_n`` of the module
    docstring as a fraction in [0, 1] (NSD reports it in percent). ``sqrt(ceiling)`` bounds
    the Pearson r with the average.

    Parameters
    ----------
    ncsnr : array-like, shape (n_targets,) or scalar
    n_repeats : int or array-like of int, shape (n_stimuli,)
        Repeats averaged per stimulus; with unequal repeats give one count per stimulus in
        the evaluation set and ``1 / n`` becomes the mean of ``1 / n_s`` (Allen et al.
        2022).

    Returns
    -------
    ceiling : ndarray, same shape as ``ncsnr``
    """
    snr = np.asarray(ncsnr, dtype=np.float64)
    reps = np.asarray(n_repeats, dtype=np.float64)
    if reps.size == 0 or np.any(~np.isfinite(reps)) or np.any(reps < 1):
        raise ValueError(f"n_repeats must be >= 1 (one count or one per stimulus), "
                         f"got {n_repeats!r}")
    if np.any(snr[np.isfinite(snr)] < 0):
        raise ValueError("ncsnr must be >= 0")
    inv_n = float(np.mean(1.0 / reps))
    return snr**2 / (snr**2 + inv_n)


def r_ceiling(reliability) -> np.ndarray:
    """Ceiling on Pearson r from a reliability (fraction of variance): ``sqrt(max(rho, 0))``.

    Parameters
    ----------
    reliability : array-like
        Output of :func:`split_half_ceiling` or :func:`ncsnr_ceiling`.

    Returns
    -------
    r_max : ndarray, same shape (NaN stays NaN)
    """
    rho = np.asarray(reliability, dtype=np.float64)
    return np.sqrt(np.where(np.isnan(rho), np.nan, np.maximum(rho, 0.0)))


def normalise_by_ceiling(scores, ceiling, min_ceiling: float = 0.1):
    """Divide scores by their noise ceiling, excluding unreliable targets.

    The ceiling must be on the scale of the scores: :func:`r_ceiling` for Pearson r, the
    reliability itself for R**2.

    Parameters
    ----------
    scores : array-like, shape (..., n_targets)
        E.g. (n_layers, n_targets) held-out scores.
    ceiling : array-like, shape (n_targets,)
    min_ceiling : float > 0
        Targets with a ceiling below this (or NaN) are excluded: their normalised scores are
        NaN.

    Returns
    -------
    normalised : ndarray, shape of ``scores``
        ``scores / ceiling`` for reliable targets, clipped to <= 1 (a score above its
        ceiling is noise in the ceiling estimate), NaN for the others.
    reliable : ndarray of bool, shape (n_targets,)
    n_clipped : int
        Number of normalised values that were above 1 before clipping.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ceiling = np.asarray(ceiling, dtype=np.float64)
    if ceiling.ndim != 1:
        raise ValueError(f"ceiling must be 1-D (n_targets,), got shape {ceiling.shape}")
    if scores.ndim < 1 or scores.shape[-1] != ceiling.shape[0]:
        raise ValueError(f"scores must end with the n_targets axis ({ceiling.shape[0]}) of "
                         f"ceiling, got shape {scores.shape}")
    if not (np.isfinite(min_ceiling) and min_ceiling > 0):
        raise ValueError(f"min_ceiling must be a positive number, got {min_ceiling!r}")
    reliable = np.isfinite(ceiling) & (ceiling >= min_ceiling)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(reliable, scores / np.where(reliable, ceiling, 1.0), np.nan)
    above = normalised > 1
    return np.where(above, 1.0, normalised), reliable, int(above.sum())
