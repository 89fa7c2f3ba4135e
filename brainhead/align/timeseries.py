"""Layer-by-layer alignment of continuous recordings (the ``timeseries`` view).

:func:`score_timeseries` is the time-series counterpart of
:func:`~brainhead.align.scores.score_responses`, with the same outputs. For every layer
of the trained model and of its random-weights control:

1. **Design.** Each stimulus' layer features, reduced to their first principal
   components (fitted on the stimuli's features only, never on responses), are placed at
   the samples of its events (:func:`onset_matrix`) and stacked at several delays per run
   (:func:`lag_samples`): FIR delays of a few TRs for fMRI (:class:`~.delays.Delayer`),
   TRF lags of a fraction of a second for EEG/sEEG (:class:`~.delays.Lagger`).
2. **Onset baseline.** The response to every stimulus regardless of its content (an
   evoked response, the BOLD of "a stimulus is on") is predicted by a ridge model of the
   onsets alone, fitted on each fold's training rows, and removed
   (:func:`onset_baseline_residuals`; ``align.timeseries_baseline``), so that the
   layers, and the random control, are scored on what the onsets do not explain.
3. **Encoding.** Ridge (:class:`~.ridge.GroupRidgeCV`) in outer folds that leave out
   whole runs; runs that share a stimulus are merged first (:func:`run_groups`). Alphas
   and the best layer are chosen on the grouped inner cross-validation of each training
   set, never on leave-one-out (neighbouring samples are autocorrelated).
4. **Scores.** ``r``: held-out Pearson r per target averaged over folds, region score
   the mean over its targets. p-value: circular shifts of the test responses within each
   test run, exact per fold and aggregated over folds
   (:func:`~.scores.aggregate_fold_pvalues`). Confidence interval: circular block
   bootstrap of the time points of each test run. ``r_diff``: trained minus random, with
   the same bootstrap draws for both.

There are no ``r_ceiled``, ``rsa``, ``cka`` or ``cka_debiased`` rows: a time series has
no repeated trials for a noise ceiling and no stimulus-by-target matrix for the
model-free comparisons (they are computed on the ``stimulus`` view).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from .._logging import ProgressBar, logger
from ..io.readers import RecordingError
from ..io.table import View
from .delays import Delayer, Lagger, run_segments
from .ridge import GroupRidgeCV, pearson_r
from .scores import (
    RegionCurves,
    _boot_region_r,
    _fold_null_counts,
    _fold_pvalues,
    _region_masks,
    _RegionMeans,
    _zscore_cols,
    add_qvalues,
    fit_layer,
    leakage_free_groups,
    outer_folds,
)
from .stats import NULL_BLOCK_ELEMENTS, fdr_bh

#: Modalities with a time-series design: FIR delays (fMRI) or TRF lags (EEG, sEEG).
TIMESERIES_MODALITIES = ("fmri", "eeg", "seeg")
#: Smallest circular shift of the null distribution, in seconds; the shift is also at
#: least twice the longest delay or lag, so the shifted responses never overlap the
#: stimulus-locked response nor its autocorrelation at short lags.
MIN_SHIFT_S = 10.0
#: BLAS threads of the principal component analysis of the features (see
#: :func:`reduce_features`).
PCA_BLAS_THREADS = 1
#: Defaults of the time-series keys of the study's ``align`` section.
TIMESERIES_DEFAULTS = {"fir_delays_s": [2, 4, 6, 8], "trf_lags_s": [0.0, 0.6],
                       "trf_step_s": 0.1, "n_components": 64, "block_s": 20.0,
                       "timeseries_baseline": "onset"}
#: Baselines whose prediction is removed before the layers are scored.
BASELINES = ("onset", "none")


def sample_period(time: np.ndarray, runs: np.ndarray) -> float:
    """Median spacing of consecutive samples within runs, in seconds (the TR for fMRI).

    Raises
    ------
    ValueError
        If no run has two samples, or the spacing is not positive.
    """
    time = np.asarray(time, dtype=np.float64)
    diffs = [np.diff(time[seg]) for seg in run_segments(runs, len(time))]
    diffs = np.concatenate(diffs) if diffs else np.empty(0)
    dt = float(np.median(diffs)) if diffs.size else np.nan
    if not dt > 0:
        raise ValueError(f"rows['time'] must increase within each run, got a median spacing "
                         f"of {dt} s over {diffs.size} intervals")
    return dt


def lag_samples(params: dict, modality: str, dt: float) -> np.ndarray:
    """Delays (fMRI FIR) or lags (EEG/sEEG TRF) of the design, in whole samples.

    fMRI: ``params["fir_delays_s"]`` (default ``[2, 4, 6, 8]``) divided by the TR ``dt``
    and rounded. EEG/sEEG: ``trf_lags_s = [tmin, tmax]`` (default ``[0.0, 0.6]``) every
    ``trf_step_s`` (default 0.1) seconds, rounded to samples of ``dt``. Values that round
    to the same sample are kept once.

    Returns
    -------
    lags : ndarray of int, shape (n_lags,)
        Sorted; positive values mean the stimulus precedes the response.
    """
    if modality == "fmri":
        seconds = np.asarray(params.get("fir_delays_s", TIMESERIES_DEFAULTS["fir_delays_s"]),
                             dtype=np.float64).ravel()
        if seconds.size == 0:
            raise ValueError("align.fir_delays_s must list at least one delay in seconds")
    elif modality in ("eeg", "seeg"):
        tmin, tmax = (float(v) for v in params.get("trf_lags_s",
                                                   TIMESERIES_DEFAULTS["trf_lags_s"]))
        step = float(params.get("trf_step_s", TIMESERIES_DEFAULTS["trf_step_s"]))
        if not step > 0 or tmin > tmax:
            raise ValueError(f"align.trf_lags_s=[{tmin}, {tmax}] must have tmin <= tmax and "
                             f"align.trf_step_s={step} must be positive")
        seconds = tmin + step * np.arange(int(np.floor((tmax - tmin) / step + 1e-9)) + 1)
    else:
        raise ValueError(f"modality must be one of {TIMESERIES_MODALITIES}, got {modality!r}")
    return np.unique(np.round(seconds / dt).astype(int))


def onset_matrix(view: View, modality: str, *, label: str = ""
                 ) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Which stimulus is on at which sample: the events of a time-series view as a matrix.

    Each event is placed at the first sample of its run at or after its onset. For fMRI
    events with a ``duration``, it is also placed at every further sample before
    ``onset + duration`` (a boxcar over the TRs it covers); EEG/sEEG events are impulses
    at their onset, the TRF lags model the response's time course. Several events on one
    sample add up. Events whose run ends before their onset, or starts more than one
    sample after it, are left out (with a warning).

    Parameters
    ----------
    view : View
        ``rows["time"]`` (s, within run), ``rows["group"]`` (run, rows time-ordered and
        each run contiguous), ``events["onset"]``, ``events["stim_id"]``,
        ``events["group"]`` and optionally ``events["duration"]``.
    modality : {"fmri", "eeg", "seeg"}
    label : str
        Names the recording in error messages (e.g. ``"sub-01"``).

    Returns
    -------
    onsets : scipy.sparse.csr_matrix, shape (n_times, n_stimuli)
        Number of events of each stimulus at each sample.
    stim_ids : ndarray of str, shape (n_stimuli,)
        Sorted ids of the stimuli of the events that were placed.
    """
    where = label or "time series"
    missing = [key for key in ("onset", "stim_id", "group") if key not in view.events]
    if missing:
        raise RecordingError(f"{where}: the timeseries view has no events{missing}; it needs "
                             "onset, stim_id and group per event")
    time = np.asarray(view.rows["time"], dtype=np.float64)
    runs = np.asarray(view.rows["group"]).astype(str)
    dt = sample_period(time, runs)
    onset = np.asarray(view.events["onset"], dtype=np.float64)
    stim = np.asarray(view.events["stim_id"]).astype(str)
    ev_run = np.asarray(view.events["group"]).astype(str)
    duration = view.events.get("duration") if modality == "fmri" else None
    segments = {runs[seg.start]: seg for seg in run_segments(runs, len(runs))}
    unknown = sorted(set(ev_run.tolist()) - set(segments))
    if unknown:
        raise RecordingError(f"{where}: events of runs {unknown[:3]} have no samples in the "
                             f"time series, whose runs are {sorted(segments)[:5]}")
    tol = 1e-6 * dt
    rows, events = [], []
    for run, seg in segments.items():
        t = time[seg]
        ev = np.flatnonzero(ev_run == run)
        first = np.searchsorted(t, onset[ev] - tol)
        inside = first < len(t)
        inside[inside] = t[first[inside]] - onset[ev[inside]] < dt + tol
        ev, first = ev[inside], first[inside]
        stop = first + 1
        if duration is not None:
            end = onset[ev] + np.asarray(duration, dtype=np.float64)[ev]
            stop = np.maximum(stop, np.searchsorted(t, end - tol))
        count = stop - first
        offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        rows.append(seg.start + np.repeat(first, count) + offset)
        events.append(np.repeat(ev, count))
    rows, events = np.concatenate(rows), np.concatenate(events)
    n_left_out = len(onset) - len(np.unique(events))
    if n_left_out:
        logger.warning("%s: %d of %d events lie outside the samples of their run and are "
                       "left out", where, n_left_out, len(onset))
    stim_ids, col = np.unique(stim[events], return_inverse=True)
    onsets = sparse.csr_matrix((np.ones(len(rows)), (rows, col)),
                               shape=(len(time), len(stim_ids)))
    return onsets, stim_ids


def run_groups(runs: np.ndarray, events_stim_id: np.ndarray, events_run: np.ndarray
               ) -> np.ndarray:
    """Outer-fold group of every sample: its run, merged with runs sharing a stimulus.

    Time series cannot be split within a run, so unlike
    :func:`brainhead.splits.leakage_free_groups` there is no fallback to stimulus groups: runs
    that share a stimulus (directly or through other runs) always form one group.

    Parameters
    ----------
    runs : ndarray, shape (n_times,)
        Run of every sample.
    events_stim_id, events_run : ndarray, shape (n_events,)
        Stimulus and run of every event.

    Returns
    -------
    groups : ndarray of int, shape (n_times,)

    Raises
    ------
    ValueError
        If fewer than 3 groups remain: one is left out in each outer fold and the
        alphas are chosen by grouped cross-validation over the others.
    """
    runs = np.asarray(runs).astype(str)
    events_run = np.asarray(events_run).astype(str)
    merged = leakage_free_groups(events_stim_id, events_run)
    group_of: dict[str, set] = {run: set() for run in np.unique(runs).tolist()}
    for run, g in zip(events_run.tolist(), merged.tolist()):
        if run in group_of:
            group_of[run].add(f"merged {g}")
    # A run without events is a group of its own; a run in several groups means that
    # leakage_free_groups fell back to stimulus groups (fewer than 3 merged groups).
    labels = {run: (gs.pop() if len(gs) == 1 else None) if gs else f"run {run}"
              for run, gs in group_of.items()}
    n_groups = len(set(labels.values()) - {None})
    if None in labels.values() or n_groups < 3:
        raise ValueError(
            f"time-series scoring needs at least 3 groups of runs that share no stimulus "
            f"(one left out per outer fold, two to choose alphas), but the "
            f"{len(group_of)} run(s) {sorted(group_of)[:6]} form fewer once runs sharing "
            "a stimulus are merged; record more runs or score the stimulus view")
    return np.unique([labels[r] for r in runs.tolist()], return_inverse=True)[1]


def reduce_features(F: np.ndarray, n_components: int | None) -> np.ndarray:
    """Project stimuli's features on their first principal axes.

    The axes come from the centred features of these stimuli (no responses); the
    features are projected without centring, so, as with the raw features, each
    stimulus keeps its share of the mean activation (the response common to all
    stimuli). ``n_components`` None or 0, or at least the number of features, keeps the
    raw features.

    Parameters
    ----------
    F : ndarray, shape (n_stimuli, n_features)
    n_components : int or None

    Returns
    -------
    F_reduced : ndarray, shape (n_stimuli, k)
        ``k = min(n_components, n_stimuli)``, or ``n_features`` when nothing is reduced.
    """
    if not n_components or n_components >= F.shape[1]:
        return F
    k = min(int(n_components), F.shape[0])
    # one BLAS thread: a few hundred stimuli gain nothing from more, and multithreaded
    # LAPACK stalls when the cores are oversubscribed (seconds instead of milliseconds
    # per call measured on a shared 2-core machine)
    with threadpool_limits(limits=PCA_BLAS_THREADS, user_api="blas"):
        axes = PCA(n_components=k, random_state=0).fit(F).components_
    return F @ axes.T


def _circular_shift_blocks(zp: np.ndarray, zy: np.ndarray, segments: list[slice],
                           shifts: list[np.ndarray]):
    """Pearson r of a fold with its test responses circularly shifted within each run.

    ``zp`` and ``zy`` are the fold's column-normalised predictions and responses
    (:func:`~.scores._zscore_cols`); shifting within runs keeps each column's mean and
    norm, so the r of a shift is a sum of per-run circular cross-correlations, all
    computed at once by FFT, a block of targets at a time so that memory stays bounded
    (:data:`~.stats.NULL_BLOCK_ELEMENTS`).

    Yields
    ------
    cols : slice
        Targets of the block.
    r_null : ndarray, shape (n_shifts, cols.stop - cols.start)
        Row ``i``: run ``j`` shifted by ``shifts[j][i]`` samples for every run.
    """
    n_shifts, t = len(shifts[0]), zp.shape[1]
    width = max(1, NULL_BLOCK_ELEMENTS // max(n_shifts, len(zp), 1))
    for start in range(0, t, width):
        cols = slice(start, min(start + width, t))
        out = np.zeros((n_shifts, cols.stop - cols.start))
        for seg, shift in zip(segments, shifts):
            n = seg.stop - seg.start
            cross = np.fft.irfft(np.conj(np.fft.rfft(zp[seg, cols], axis=0))
                                 * np.fft.rfft(zy[seg, cols], axis=0), n=n, axis=0)
            out += cross[shift]
        yield cols, out


def _block_weights(rng: np.random.Generator, segments: list[slice], n_rows: int,
                   n_boot: int, block: int) -> np.ndarray:
    """Circular block bootstrap of each run as per-sample counts, (n_boot, n_rows).

    Each run of ``n`` samples is resampled as ``ceil(n / block)`` blocks of ``block``
    consecutive samples (wrapping at the run's end) with uniformly drawn starts; a run
    shorter than ``block`` is one block.
    """
    weights = np.zeros((n_boot, n_rows))
    draws = np.arange(n_boot)[:, None]
    for seg in segments:
        n = seg.stop - seg.start
        length = min(block, n)
        counts = np.zeros((n_boot, n))
        np.add.at(counts, (draws, rng.integers(0, n, (n_boot, -(-n // length)))), 1)
        # sample t is covered by the blocks starting at t - length + 1 .. t (circularly)
        padded = np.concatenate([counts[:, n - length + 1:], counts], axis=1)
        cumsum = np.concatenate([np.zeros((n_boot, 1)), np.cumsum(padded, axis=1)], axis=1)
        weights[:, seg] = cumsum[:, length:length + n] - cumsum[:, :n]
    return weights


@dataclass
class _FoldDraws:
    """The resampling of one outer fold's test rows, shared by every layer and control.

    Attributes
    ----------
    segments : list of slice
        Rows of each test run, relative to the fold's test rows.
    shifts : list of ndarray of int, each shape (n_perm,)
        Circular shift of each test run in every draw of the null.
    weights : ndarray, shape (n_boot, n_test)
        Circular block bootstrap counts of every test row (:func:`_block_weights`).
    zy : ndarray, shape (n_test, n_targets)
        Column-normalised test responses.
    """

    segments: list[slice]
    shifts: list[np.ndarray]
    weights: np.ndarray
    zy: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, segments: list[slice], Y_test: np.ndarray,
             n_perm: int, n_boot: int, min_shift: int, block: int) -> _FoldDraws:
        """Shifts in ``[min_shift, n_run - min_shift]``, then block bootstrap counts."""
        shifts = [rng.integers(min_shift, seg.stop - seg.start - min_shift + 1, n_perm)
                  for seg in segments]
        weights = _block_weights(rng, segments, len(Y_test), n_boot, block)
        return cls(segments, shifts, weights, _zscore_cols(Y_test))


def _layer_statistics(fit, folds, draws: list[_FoldDraws], regions: _RegionMeans
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Circular-shift p-values and block-bootstrap r of one layer's held-out predictions.

    The p-values are exact within each fold and aggregated over folds with
    :func:`~.scores.aggregate_fold_pvalues`; a region's null is the mean over its
    targets of the shifted r. All shifts and bootstrap draws of a fold at once.

    Returns
    -------
    p : ndarray, shape (n_targets,)
    region_p : ndarray, shape (n_regions,)
    region_boot : ndarray, shape (n_boot, n_regions)
        Region mean of the Pearson r of every bootstrap draw, averaged over folds.
    """
    n_perm = len(draws[0].shifts[0])
    counts, boot_data = [], []
    for f, ((_, test), d) in enumerate(zip(folds, draws)):
        zp = _zscore_cols(fit.pred[test].astype(np.float64))
        blocks = _circular_shift_blocks(zp, d.zy, d.segments, d.shifts)
        counts.append(_fold_null_counts(blocks, fit.r_folds[f], regions, n_perm))
        boot_data.append((zp, d.zy, d.weights))
    exceed, valid, region_exceed = (np.stack(c) for c in zip(*counts))
    p, region_p = _fold_pvalues(fit.r_folds, exceed, valid, region_exceed, n_perm)
    return p, region_p, _boot_region_r(boot_data, regions)


def onset_baseline_residuals(onsets: sparse.csr_matrix, delayer, runs: np.ndarray,
                             Y: np.ndarray, folds, groups: np.ndarray, alphas: np.ndarray,
                             n_inner_splits: int, baseline: str = "onset", *,
                             masks: dict[str, np.ndarray] | None = None, label: str = ""
                             ) -> list[np.ndarray]:
    """Responses of each outer fold with the stimulus-onset baseline removed.

    Continuous recordings carry a response to every stimulus whatever its content (an
    evoked response, the BOLD of "a sentence is on"). Any features placed at the onsets
    predict it, random ones included, and it can dwarf the content-specific part that
    separates layers. With ``baseline="onset"``, a ridge model of the onsets alone
    (one regressor, the number of events at each sample, at the same delays or lags
    as the layers) is fitted on each fold's training rows, and its prediction is
    subtracted from every row of that fold; the layers then explain what the onsets do
    not. The held-out r of the baseline is logged per region.

    Parameters
    ----------
    onsets : scipy.sparse matrix, shape (n_times, n_stimuli)
        :func:`onset_matrix`.
    delayer : Delayer or Lagger
        The layers' delays or lags.
    runs : ndarray, shape (n_times,)
    Y : ndarray, shape (n_times, n_targets)
    folds : list of (train, test)
    groups : ndarray, shape (n_times,)
        Inner folds of the baseline's alpha never split a group.
    alphas : ndarray
    n_inner_splits : int
    baseline : {"onset", "none"}
        ``"none"`` returns ``Y`` for every fold.
    masks : dict of str to ndarray of bool, optional
        Regions whose baseline r is logged.
    label : str
        Names the recording in the log.

    Returns
    -------
    Y_folds : list of ndarray, float32, each shape (n_times, n_targets)
        One per fold, centred per run.
    """
    if baseline not in BASELINES:
        raise ValueError(f"timeseries_baseline must be one of {BASELINES}, got {baseline!r}")
    if baseline == "none":
        return [Y.astype(np.float32)] * len(folds)
    presence = np.asarray(onsets.sum(axis=1), dtype=np.float32).reshape(-1, 1)
    design = delayer.fit_transform(presence, runs=runs)
    out, r = [], []
    for train, test in folds:
        model = GroupRidgeCV(alphas=alphas, n_splits=n_inner_splits)
        model.fit(design[train], Y[train].astype(np.float32), groups=groups[train])
        resid = Y - model.predict(design).astype(np.float64)
        for seg in run_segments(runs, len(runs)):
            resid[seg] -= resid[seg].mean(0)
        out.append(resid.astype(np.float32))
        r.append(pearson_r(model.predict(design[test]), Y[test]))
    r = np.nanmean(np.stack(r), axis=0)
    for key, cols in (masks or {"all": np.ones(Y.shape[1], bool)}).items():
        logger.info("%s: onset baseline held-out r %.3f (%s), removed before the layers",
                    label or "time series", float(np.nanmean(r[cols])), key)
    return out


def score_timeseries(view: View, regions: np.ndarray, features: dict[str, np.ndarray],
                     feature_rows: dict[str, int], params: dict, modality: str, *,
                     seed: int = 0, label: str = ""
                     ) -> tuple[list[dict], list[dict], dict[str, np.ndarray]]:
    """Encoding scores of a subject's continuous responses against layer features.

    The time-series counterpart of :func:`~.scores.score_responses` (see the module
    docstring for the method): same rows, best-layer rows and per-target arrays, with the
    metrics ``r`` and ``r_diff`` only.

    Responses are centred per run (run offsets carry no stimulus information). Runs
    without any placed event are left out with a warning. The ridge models run in
    float32, the precision of the response tables (half the cost of float64 for the
    lagged designs); the statistics are computed in float64.

    Parameters
    ----------
    view : View
        The ``timeseries`` view (see :func:`onset_matrix`); ``X`` of shape
        (n_times, n_targets).
    regions : ndarray of str, shape (n_targets,)
        Region of each target, ``""`` where none.
    features : dict of str to ndarray, shape (n_layers, n_stimuli, dim)
        ``trained`` and ``random`` features of every stimulus.
    feature_rows : dict of str to int
        Row of each stimulus id in the feature arrays.
    params : dict
        The study's ``align`` section: ``alphas_log10``, ``n_inner_splits``,
        ``n_permutations`` (circular shifts), ``n_bootstraps``, ``ci``, and optionally
        ``fir_delays_s``, ``trf_lags_s``, ``trf_step_s``, ``n_components``, ``block_s``,
        ``timeseries_baseline`` (defaults in :data:`TIMESERIES_DEFAULTS`).
    modality : {"fmri", "eeg", "seeg"}
        FIR delays for fMRI, TRF lags otherwise.
    seed : int
        Seeds the shifts and bootstrap draws, shared by every layer and control.
    label : str
        Names the recording in messages (e.g. ``"sub-01"``).

    Returns
    -------
    rows : list of dict
        Summary rows (:data:`~.scores.SUMMARY_COLUMNS` except subject/modality/view/model):
        ``r`` per region, control and layer, ``r_diff`` per region and layer
        (control ``"trained-random"``); ``n_clipped`` is 0.
    best : list of dict
        Best-layer rows (:data:`~.scores.BEST_COLUMNS` except subject/modality/view/model).
    per_target : dict of str to ndarray
        ``r_<control>``, ``p_<control>``, ``q_<control>`` of shape (n_layers, n_targets)
        and ``ceiling`` (n_targets, all NaN), float32.

    Raises
    ------
    RecordingError
        If an event's stimulus has no feature row.
    ValueError
        If fewer than 3 groups of runs share no stimulus (:func:`run_groups`), or a run
        is too short for circular shifts of at least :data:`MIN_SHIFT_S` seconds (and
        twice the longest delay or lag) away from 0.
    """
    where = label or "time series"
    onsets, stims = onset_matrix(view, modality, label=label)
    missing = sorted(set(np.asarray(view.events["stim_id"]).astype(str).tolist())
                     - set(feature_rows))
    if missing:
        raise RecordingError(f"{where}: {len(missing)} stimuli of the time-series events "
                             f"have no features (e.g. {missing[:3]})")
    runs = np.asarray(view.rows["group"]).astype(str)
    dt = sample_period(view.rows["time"], runs)
    placed = np.unique(runs[onsets.nonzero()[0]])
    keep = np.isin(runs, placed)
    if not keep.all():
        logger.warning("%s: runs %s have no event and are left out", where,
                       sorted(set(runs[~keep].tolist())))
    runs, onsets = runs[keep], onsets[keep]
    Y = np.asarray(view.X, dtype=np.float64)[keep]
    for seg in run_segments(runs, len(runs)):
        Y[seg] -= Y[seg].mean(0)

    ev_run = np.asarray(view.events["group"]).astype(str)
    on = np.isin(ev_run, placed)
    groups = run_groups(runs, np.asarray(view.events["stim_id"])[on], ev_run[on])
    folds = outer_folds(groups)

    lags = lag_samples(params, modality, dt)
    delayer = (Delayer(delays=tuple(lags.tolist())) if modality == "fmri"
               else Lagger(lags_s=lags * dt, sfreq=1.0 / dt))
    n_perm, n_boot = int(params["n_permutations"]), int(params["n_bootstraps"])
    level = float(params["ci"])
    lo, hi, n = params["alphas_log10"]
    alphas = np.logspace(lo, hi, int(n))
    Y_folds = onset_baseline_residuals(
        onsets, delayer, runs, Y, folds, groups, alphas, params["n_inner_splits"],
        params.get("timeseries_baseline", TIMESERIES_DEFAULTS["timeseries_baseline"]),
        masks=_region_masks(regions), label=where)
    n_components = params.get("n_components", TIMESERIES_DEFAULTS["n_components"])
    block = max(1, int(round(float(params.get("block_s", TIMESERIES_DEFAULTS["block_s"]))
                             / dt)))
    min_shift = int(np.ceil(max(MIN_SHIFT_S, 2 * np.abs(lags).max() * dt) / dt - 1e-9))

    short = [seg for seg in run_segments(runs, len(runs)) if seg.stop - seg.start < 2 * min_shift]
    if n_perm and short:
        n_run = short[0].stop - short[0].start
        raise ValueError(
            f"{where}: run {runs[short[0].start]!r} has {n_run} samples ({n_run * dt:.1f} s); "
            f"circular shifts of at least {min_shift} samples ({min_shift * dt:.1f} s) need "
            f"at least {2 * min_shift}")
    rng = np.random.default_rng(seed)
    draws = [_FoldDraws.draw(rng, run_segments(runs[test], len(test)), Yf[test], n_perm,
                             n_boot, min_shift, block) for (_, test), Yf in zip(folds, Y_folds)]
    masks = _region_masks(regions)
    region_means = _RegionMeans(masks)

    rows: list[dict] = []
    per_target: dict[str, np.ndarray] = {
        "ceiling": np.full(Y.shape[1], np.nan, dtype=np.float32)}
    n_layers = next(iter(features.values())).shape[0]
    curves = RegionCurves(masks, n_layers, n_boot, len(folds))
    stim_rows = np.array([feature_rows[s] for s in stims])
    for control, F in features.items():
        r_all = np.empty((n_layers, Y.shape[1]))
        p_all = np.empty((n_layers, Y.shape[1]))
        # one step per ridge fold of each layer, and one for the layer's resampling
        with ProgressBar(f"{label} {control}", total=n_layers * (len(folds) + 1)) as bar:
            for layer in range(n_layers):
                def fold_done(k, layer=layer):
                    bar.advance(what=f"layer {layer}: ridge fold {k + 1}/{len(folds)}")
                reduced = reduce_features(F[layer][stim_rows].astype(np.float64), n_components)
                X = delayer.fit_transform((onsets @ reduced).astype(np.float32), runs=runs)
                fit = fit_layer(X, Y_folds, folds, groups, alphas, params["n_inner_splits"],
                                "inner_cv", on_fold=fold_done)
                r_all[layer] = np.nanmean(fit.r_folds, axis=0)
                p_all[layer], region_p, region_boot = _layer_statistics(fit, folds, draws,
                                                                        region_means)
                bar.advance(what=f"layer {layer}: {n_perm} circular shifts, {n_boot} "
                                 "block bootstraps")
                region_r = curves.record(control, layer, fit, region_boot, level)
                for i, (key, cols) in enumerate(masks.items()):
                    score, ci = region_r[key]
                    rows.append({"region": key, "control": control, "layer": layer,
                                 "n_targets": int(cols.sum()), "n_clipped": 0, "metric": "r",
                                 "score": score, "ci_low": ci[0], "ci_high": ci[1],
                                 "p": float(region_p[i])})
        per_target[f"r_{control}"] = r_all.astype(np.float32)
        per_target[f"p_{control}"] = p_all.astype(np.float32)
        per_target[f"q_{control}"] = np.stack([fdr_bh(p) for p in p_all]).astype(np.float32)

    rows += curves.paired_rows(level)
    add_qvalues(rows)
    best = curves.best_rows(level)
    return rows, best, per_target


__all__ = ["BASELINES", "MIN_SHIFT_S", "TIMESERIES_DEFAULTS", "TIMESERIES_MODALITIES",
           "lag_samples", "onset_baseline_residuals", "onset_matrix", "reduce_features",
           "run_groups", "sample_period", "score_timeseries"]
