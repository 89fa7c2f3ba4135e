"""Noise ceilings: planted signal + noise with a known reliability, errors, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from brainhead.align.ceilings import (
    ncsnr,
    ncsnr_ceiling,
    normalise_by_ceiling,
    r_ceiling,
    split_half_ceiling,
)

N_STIM, K = 2000, 4
SIGNAL_VAR = np.linspace(0.05, 2.0, 8)  # noise variance 1


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((N_STIM, SIGNAL_VAR.size)) * np.sqrt(SIGNAL_VAR)
    stim = np.repeat(np.arange(N_STIM), K)
    Y = S[stim] + rng.standard_normal((N_STIM * K, SIGNAL_VAR.size))
    order = rng.permutation(len(stim))  # rows need not be grouped by stimulus
    return Y[order], stim[order], S


def test_split_half_matches_analytic_reliability(planted):
    Y, stim, _ = planted
    expected = SIGNAL_VAR / (SIGNAL_VAR + 1.0 / K)
    rel = split_half_ceiling(Y, stim, n_splits=20, seed=0)
    assert rel.shape == (SIGNAL_VAR.size,)
    np.testing.assert_allclose(rel, expected, atol=0.08)
    assert np.mean(np.abs(rel - expected)) < 0.04
    # a different seed gives a different but equally close estimate
    other = split_half_ceiling(Y, stim, n_splits=20, seed=1)
    assert not np.allclose(other, rel)
    np.testing.assert_allclose(other, expected, atol=0.08)


def test_r_ceiling_bounds_correlation_of_the_signal(planted):
    Y, stim, S = planted
    # the noiseless signal is the best possible model; its r with the repeat average
    # is what sqrt(reliability) estimates
    avg = np.stack([Y[stim == s].mean(0) for s in range(N_STIM)])
    r_signal = np.array([np.corrcoef(S[:, j], avg[:, j])[0, 1] for j in range(S.shape[1])])
    np.testing.assert_allclose(r_ceiling(split_half_ceiling(Y, stim)), r_signal, atol=0.08)


def test_ncsnr_matches_analytic_snr(planted):
    Y, stim, _ = planted
    snr = ncsnr(Y, stim)
    np.testing.assert_allclose(snr, np.sqrt(SIGNAL_VAR), rtol=0.1, atol=0.03)
    np.testing.assert_allclose(ncsnr_ceiling(snr, K), SIGNAL_VAR / (SIGNAL_VAR + 1.0 / K),
                               atol=0.08)
    # a 1-D response gives a scalar; the estimate is invariant to the response's scale
    assert ncsnr(100 * Y[:, 3] + 5, stim) == pytest.approx(snr[3])


def test_ncsnr_of_pure_noise_is_small():
    rng = np.random.default_rng(1)
    n_stim, k = 1000, 3
    snr = ncsnr(rng.standard_normal((n_stim * k, 20)), np.repeat(np.arange(n_stim), k))
    # signal variance = max(1 - noise variance, 0): zero up to the noise variance's
    # sampling error, sd about sqrt(2 / (n_stim (k - 1)))
    assert np.all(snr**2 < 4 * np.sqrt(2 / (n_stim * (k - 1))))
    assert np.mean(snr == 0) > 0.2  # clipped at 0 about half the time


def test_ncsnr_ceiling_by_hand():
    # ncsnr 1 and 2 repeats: 1 / (1 + 1/2)
    assert ncsnr_ceiling(1.0, 2) == pytest.approx(2 / 3)
    # unequal repeats (1 and 3 per stimulus): 1/n becomes mean(1, 1/3) = 2/3
    assert ncsnr_ceiling(1.0, [1, 3]) == pytest.approx(1 / (1 + 2 / 3))
    np.testing.assert_allclose(ncsnr_ceiling(np.array([0.0, 3.0]), 1), [0.0, 0.9])
    with pytest.raises(ValueError, match="n_repeats must be >= 1"):
        ncsnr_ceiling(1.0, 0)


def test_no_repeats_is_a_clear_error():
    Y = np.random.default_rng(2).standard_normal((20, 3))
    stim = np.arange(20)
    with pytest.raises(ValueError, match="needs repeated stimuli"):
        split_half_ceiling(Y, stim)
    with pytest.raises(ValueError, match="needs repeated stimuli"):
        ncsnr(Y, stim)
    with pytest.raises(ValueError, match="stim_id must have shape"):
        ncsnr(Y, stim[:5])


def test_single_presentations_are_ignored(planted):
    Y, stim, _ = planted
    rng = np.random.default_rng(3)
    extra = rng.standard_normal((50, Y.shape[1])) * 10  # 50 stimuli shown once
    Y2 = np.vstack([Y, extra])
    stim2 = np.r_[stim, np.arange(N_STIM, N_STIM + 50)]
    np.testing.assert_allclose(split_half_ceiling(Y2, stim2, seed=4),
                               split_half_ceiling(Y, stim, seed=4), atol=0.05)


def test_normalise_by_ceiling_clips_and_excludes():
    scores = np.array([[0.2, 0.5, 0.3, 0.1],
                       [0.4, 0.1, 0.05, np.nan]])
    ceiling = np.array([0.4, 0.3, 0.05, np.nan])
    norm, reliable, n_clipped = normalise_by_ceiling(scores, ceiling, min_ceiling=0.1)
    np.testing.assert_array_equal(reliable, [True, True, False, False])
    np.testing.assert_allclose(norm[:, :2], [[0.5, 1.0], [1.0, 1 / 3]])
    assert np.all(np.isnan(norm[:, 2:]))
    assert n_clipped == 1  # 0.5 / 0.3; 0.4 / 0.4 is exactly 1, not clipped
    assert np.nanmax(norm) <= 1.0
    with pytest.raises(ValueError, match="n_targets axis"):
        normalise_by_ceiling(scores, ceiling[:3])
    with pytest.raises(ValueError, match="min_ceiling must be a positive"):
        normalise_by_ceiling(scores, ceiling, min_ceiling=0)
