"""Signal pieces shared by the simulated modalities: planted responses and noise."""

from __future__ import annotations

import hashlib
import json
import operator

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


def _name_entropy(*names: str | None) -> int:
    """A stable 128-bit integer from names (never Python's salted ``hash``)."""
    digest = hashlib.sha256(json.dumps(list(names)).encode()).digest()
    return int.from_bytes(digest[:16], "little")


def shared_bases(
    features: np.ndarray,
    planted: dict[str, int],
    rank: int,
    seed: int,
    *,
    modality: str | None = None,
) -> dict[str, np.ndarray] | None:
    """Study-level read-out subspaces, one per region, shared by every subject.

    Each region gets ``rank`` orthonormal directions in the (standardised) feature space
    of the layers, drawn uniformly (Haar) from a generator seeded by ``seed``, the
    region's name and ``modality``, and never by the subject: every subject of a study
    whose targets lie in that region reads out the same subspace of its planted layer
    (see :func:`planted_responses`).

    Parameters
    ----------
    features : ndarray, shape (n_layers, n_stimuli, dim)
        Layer features of the stimuli; only the shape is used (``dim`` for the bases,
        ``n_layers`` to check ``planted``).
    planted : dict of str to int
        Region -> layer; a basis is drawn for every region (its layer does not enter
        the draw).
    rank : int
        Directions per region, ``0 <= rank <= dim``. 0 means no shared structure and
        returns None, which :func:`planted_responses` reads as independent read-outs.
    seed : int
        The study seed (>= 0).
    modality : str or None
        Mixed into the seed: regions of the same name get different bases in different
        modalities. None shares a region's basis across modalities.

    Returns
    -------
    bases : dict of str to ndarray, shape (dim, rank), or None
        Region -> basis with orthonormal columns; None when ``rank`` is 0.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> features = rng.standard_normal((3, 100, 16))  # (n_layers, n_stimuli, dim)
    >>> planted = {"posterior": 1, "anterior": 2}
    >>> bases = shared_bases(features, planted, rank=4, seed=42, modality="eeg")
    >>> bases["posterior"].shape
    (16, 4)
    >>> regions = np.array(["posterior"] * 5 + ["anterior"] * 5)
    >>> planted_responses(features, regions, planted, rng, shared_bases=bases).shape
    (100, 10)
    """
    n_layers, _, dim = np.shape(features)
    rank = operator.index(rank)
    if not 0 <= rank <= dim:
        raise ValueError(f"shared rank {rank} must be between 0 and the feature "
                         f"dimension {dim}")
    _check_layers(planted, n_layers)
    if rank == 0:
        return None
    bases = {}
    for region in planted:
        rng = np.random.default_rng([seed, _name_entropy(modality, region)])
        q, r = np.linalg.qr(rng.standard_normal((dim, rank)))
        bases[region] = q * np.where(np.diag(r) < 0, -1.0, 1.0)  # Haar, not QR's signs
    return bases


def planted_responses(
    features: np.ndarray,
    target_regions: np.ndarray,
    planted: dict[str, int],
    rng: np.random.Generator,
    shared_bases: dict[str, np.ndarray] | None = None,
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
        The subject's generator: it draws the read-out weights (or mixing coefficients).
    shared_bases : dict of str to ndarray, shape (dim, rank), optional
        Region -> orthonormal basis shared across subjects (:func:`shared_bases`). Each
        target then reads out its region's subspace: weights ``basis @ c`` with ``c``
        of shape (rank,) drawn for that target, so the responses of all subjects in a
        region span the same ``rank`` directions of the layer. None (default): every
        target is an independent random read-out of the whole layer.

    Returns
    -------
    responses : ndarray, shape (n_stimuli, n_targets)
        Each column a random linear read-out of its region's standardised layer
        features, standardised to zero mean and unit variance across stimuli; targets
        outside the planted regions are 0.
    """
    n_layers, n_stim, dim = features.shape
    _check_layers(planted, n_layers)
    out = np.zeros((n_stim, len(target_regions)))
    for region, layer in planted.items():
        cols = np.flatnonzero(target_regions == region)
        if cols.size == 0:
            continue
        if shared_bases is None:
            weights = rng.standard_normal((dim, cols.size)) / np.sqrt(dim)
        else:
            basis = _region_basis(shared_bases, region, dim)
            weights = basis @ (rng.standard_normal((basis.shape[1], cols.size))
                               / np.sqrt(basis.shape[1]))
        out[:, cols] = zscore(zscore(features[layer]) @ weights)
    return out


def _check_layers(planted: dict[str, int], n_layers: int) -> None:
    for region, layer in planted.items():
        if not 0 <= layer < n_layers:
            raise ValueError(f"planted layer {layer} of region {region!r} is outside the "
                             f"model's {n_layers} layers (0..{n_layers - 1})")


def _region_basis(bases: dict[str, np.ndarray], region: str, dim: int) -> np.ndarray:
    if region not in bases:
        raise ValueError(f"no shared basis for region {region!r} "
                         f"(bases are given for: {', '.join(map(repr, bases)) or 'none'})")
    basis = np.asarray(bases[region], dtype=float)
    if basis.ndim != 2 or basis.shape[0] != dim or not 1 <= basis.shape[1] <= dim:
        raise ValueError(f"shared basis of region {region!r} must have shape (dim, rank) "
                         f"with dim = {dim} and 1 <= rank <= dim, got {basis.shape}")
    return basis


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
