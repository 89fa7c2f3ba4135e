"""Signal pieces shared by the simulated modalities: planted responses and noise."""

from __future__ import annotations

import numpy as np


def zscore(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Standardise along ``axis``; constant columns become 0, never NaN."""
    std = a.std(axis, keepdims=True)
    std[std == 0] = 1.0
    return (a - a.mean(axis, keepdims=True)) / std


def assign_regions(y_coords: np.ndarray, regions: list[str]) -> np.ndarray:
    """Split targets into contiguous posterior-to-anterior bands, one per region.

    Regions are listed posterior first; targets are sorted by their MNI ``y``
    coordinate and cut into equally populated bands.
    """
    if not regions:
        raise ValueError("at least one region is needed to plant a layer")
    ranks = np.argsort(np.argsort(y_coords, kind="stable"), kind="stable")
    band = (ranks * len(regions)) // len(y_coords)
    return np.asarray(regions)[band]


def planted_responses(
    features: np.ndarray,
    target_regions: np.ndarray,
    planted: dict[str, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-stimulus responses driven by the planted layer of each target's region.

    Parameters
    ----------
    features : ndarray, shape (n_layers, n_stimuli, dim)
        Layer features of the stimuli, in stimulus-table order.
    target_regions : ndarray of str, shape (n_targets,)
    planted : dict of str to int
        Region -> layer.
    rng : numpy.random.Generator

    Returns
    -------
    responses : ndarray, shape (n_stimuli, n_targets)
        Each column a random linear read-out of its region's layer, standardised to
        zero mean and unit variance across stimuli.
    """
    n_layers, n_stim, dim = features.shape
    out = np.zeros((n_stim, len(target_regions)))
    for region, layer in planted.items():
        if not 0 <= layer < n_layers:
            raise ValueError(f"planted layer {layer} of region {region!r} is outside the "
                             f"model's {n_layers} layers (0..{n_layers - 1})")
        cols = np.flatnonzero(target_regions == region)
        if cols.size == 0:
            continue
        weights = rng.standard_normal((dim, cols.size)) / np.sqrt(dim)
        out[:, cols] = zscore(zscore(features[layer]) @ weights)
    return out


def pink_noise(n_times: int, n_channels: int, rng: np.random.Generator,
               exponent: float = 1.0) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum, unit variance per channel.

    Returns
    -------
    noise : ndarray, shape (n_channels, n_times)
    """
    spectrum = rng.standard_normal((n_channels, n_times // 2 + 1)) + 1j * rng.standard_normal(
        (n_channels, n_times // 2 + 1)
    )
    freqs = np.arange(n_times // 2 + 1, dtype=float)
    freqs[0] = 1.0
    spectrum /= freqs ** (exponent / 2)
    spectrum[:, 0] = 0
    noise = np.fft.irfft(spectrum, n=n_times, axis=1)
    return zscore(noise, axis=1)


def ar1_noise(n_times: int, n_targets: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """AR(1) noise with unit marginal variance, shape (n_times, n_targets)."""
    from scipy.signal import lfilter

    white = rng.standard_normal((n_times, n_targets)) * np.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], white, axis=0)


def bandlimited_noise(n_times: int, n_channels: int, sfreq: float, band: tuple[float, float],
                      rng: np.random.Generator) -> np.ndarray:
    """White noise band-passed to ``band`` (Hz), unit variance, shape (n_channels, n_times)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, band, btype="bandpass", fs=sfreq, output="sos")
    return zscore(sosfiltfilt(sos, rng.standard_normal((n_channels, n_times)), axis=1), axis=1)


def schedule(n_items: int, n_runs: int, rng: np.random.Generator,
             n_repeats: int = 1) -> list[np.ndarray]:
    """Random order of stimulus indices split into runs of near-equal size.

    Every stimulus is shown ``n_repeats`` times: each repetition is a fresh random
    order split into ``n_runs`` runs, so there are ``n_runs * n_repeats`` runs and a
    stimulus never repeats within a run.
    """
    if n_items < 2 * n_runs:
        raise ValueError(f"{n_items} stimuli are too few for {n_runs} runs")
    runs = []
    for _ in range(n_repeats):
        runs += np.array_split(rng.permutation(n_items), n_runs)
    return runs
