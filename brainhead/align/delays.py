"""Time-delayed feature designs for encoding models of continuous recordings.

Two scikit-learn transformers stack copies of the stimulus features shifted in time,
so that a linear model (:class:`~brainhead.align.ridge.GroupRidgeCV`) can learn a
response that unfolds after the stimulus:

- :class:`Delayer`: integer delays in samples (TRs), the finite impulse response (FIR)
  design of fMRI encoding models.
- :class:`Lagger`: lags in seconds at a sampling frequency, the temporal response
  function (TRF) design of EEG/sEEG encoding models.

Rows are time points in temporal order. A positive delay ``d`` puts the feature value
of time ``i - d`` on row ``i`` (the stimulus precedes the response); a negative delay
looks into the future. Values are never shifted across run boundaries: when
``runs`` labels are given, each run is shifted on its own and the rows that would
need a value from outside their run are zero, as at the edges of the recording.

Output shape: ``(n_samples, n_delays * n_features)``, delay-major: columns
``[k * n_features:(k + 1) * n_features]`` hold the features shifted by ``delays[k]``.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data


def run_segments(runs: np.ndarray | None, n_samples: int) -> list[slice]:
    """Contiguous row ranges of each run.

    Parameters
    ----------
    runs : array-like, shape (n_samples,), or None
        Run (or session, or segment) label of every row; None means one run.
    n_samples : int

    Returns
    -------
    segments : list of slice
        One slice per run, in row order.

    Raises
    ------
    ValueError
        If ``runs`` has the wrong length, or a run's rows are not contiguous (a label
        that reappears after another run's rows), since rows must be time-ordered.
    """
    if runs is None:
        return [slice(0, n_samples)]
    runs = np.asarray(runs)
    if runs.ndim != 1 or runs.shape[0] != n_samples:
        raise ValueError(f"runs has shape {runs.shape}, X has {n_samples} rows: expected "
                         "one run label per row of X")
    if n_samples == 0:
        return []
    change = np.flatnonzero(runs[1:] != runs[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [n_samples]])
    labels = runs[starts]
    uniq, counts = np.unique(labels, return_counts=True)
    if np.any(counts > 1):
        bad = uniq[counts > 1][0].tolist()
        raise ValueError(f"run label {bad!r} appears in {counts[counts > 1][0]} separate "
                         "blocks of rows; rows must be in time order with each run's "
                         "rows contiguous")
    return [slice(int(a), int(b)) for a, b in zip(starts, stops)]


def delay_features(X: np.ndarray, delays, runs=None) -> np.ndarray:
    """Stack copies of ``X`` shifted by each delay, zero-padded at run edges.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
        Time points in rows, in temporal order.
    delays : sequence of int
        Shifts in samples; row ``i`` of block ``k`` is ``X[i - delays[k]]`` when that
        row belongs to the same run, else 0.
    runs : array-like, shape (n_samples,), optional
        Run label of every row (see :func:`run_segments`).

    Returns
    -------
    X_delayed : ndarray, shape (n_samples, len(delays) * n_features)
        Delay-major blocks, same dtype as ``X``.
    """
    X = np.asarray(X)
    n, p = X.shape
    out = np.zeros((n, len(delays) * p), dtype=X.dtype)
    for seg in run_segments(runs, n):
        Xr = X[seg]
        m = Xr.shape[0]
        for k, d in enumerate(delays):
            block = out[seg, k * p:(k + 1) * p]
            if d >= 0:
                if d < m:
                    block[d:] = Xr[:m - d]
            elif -d < m:
                block[:m + d] = Xr[-d:]
    return out


def _check_int_delays(delays, name: str) -> tuple[int, ...]:
    values = np.asarray(delays).ravel()
    if values.size == 0:
        raise ValueError(f"{name} must be a non-empty sequence of integers, got {delays!r}")
    if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool)
               for d in values.tolist()):
        raise ValueError(f"{name} must contain integers (samples), got {delays!r}")
    if len(set(values.tolist())) != values.size:
        raise ValueError(f"{name} must not repeat a value, got {delays!r}")
    return tuple(int(d) for d in values.tolist())


class _DelayTransformer(TransformerMixin, BaseEstimator):
    """Shared fit/transform of the delay transformers; subclasses set ``_delays()``."""

    def _delays(self) -> tuple[int, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X, y=None, runs=None):
        """Validate the parameters and remember the number of features.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : ignored
        runs : ignored here; accepted so ``fit`` and ``transform`` share a signature.

        Returns
        -------
        self
        """
        validate_data(self, X, dtype=[np.float64, np.float32], reset=True)
        self.delays_ = np.asarray(self._delays(), dtype=int)
        return self

    def transform(self, X, runs=None):
        """Stack the delayed copies of ``X``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Time points in rows, in temporal order.
        runs : array-like, shape (n_samples,), optional
            Run label of every row; no value crosses from one run into another.

        Returns
        -------
        X_delayed : ndarray, shape (n_samples, n_delays * n_features)
        """
        check_is_fitted(self, "delays_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return delay_features(X, self.delays_.tolist(), runs)

    def fit_transform(self, X, y=None, runs=None):
        """Fit, then transform ``X`` with the same ``runs``."""
        return self.fit(X, y).transform(X, runs=runs)

    def get_feature_names_out(self, input_features=None):
        """Names ``<feature>_delay<d>`` in the column order of :meth:`transform`."""
        check_is_fitted(self, "delays_")
        if input_features is None:
            input_features = getattr(self, "feature_names_in_",
                                     [f"x{i}" for i in range(self.n_features_in_)])
        return np.asarray([f"{f}_delay{d}" for d in self.delays_ for f in input_features],
                          dtype=object)


class Delayer(_DelayTransformer):
    """Finite impulse response design: features at several delays in samples (TRs).

    Parameters
    ----------
    delays : sequence of int
        Delays in samples; ``(1, 2, 3, 4)`` covers the haemodynamic response 1-4 TRs
        after the stimulus. 0 keeps the undelayed features; negative values look ahead.

    Attributes
    ----------
    delays_ : ndarray of int, shape (n_delays,)
    n_features_in_ : int

    Notes
    -----
    ``transform(X, runs=...)`` maps ``X`` of shape ``(n_samples, n_features)`` to
    ``(n_samples, n_delays * n_features)`` (delay-major blocks), zero-padded at the
    start (and, for negative delays, the end) of every run.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(6.0).reshape(6, 1)
    >>> Delayer(delays=(0, 1)).fit_transform(X, runs=[0, 0, 0, 1, 1, 1])[:, 1]
    array([0., 0., 1., 0., 3., 4.])
    """

    def __init__(self, delays=(1, 2, 3, 4)):
        self.delays = delays

    def _delays(self) -> tuple[int, ...]:
        return _check_int_delays(self.delays, "delays")


class Lagger(_DelayTransformer):
    """Temporal response function design: features at lags given in seconds.

    Lags are either the range ``tmin .. tmax`` (inclusive) at every sample of
    ``sfreq``, as in MNE's receptive fields, or an explicit ``lags_s``.

    Parameters
    ----------
    tmin, tmax : float, optional
        First and last lag in seconds (positive: the stimulus precedes the response).
    sfreq : float
        Sampling frequency of the rows of ``X`` in Hz.
    lags_s : sequence of float, optional
        Explicit lags in seconds, instead of ``tmin``/``tmax``. Each must be a whole
        number of samples at ``sfreq`` (within 1e-6 of a sample).

    Attributes
    ----------
    delays_ : ndarray of int, shape (n_lags,)
        Lags in samples.
    lags_s_ : ndarray of float, shape (n_lags,)
        Lags in seconds (``delays_ / sfreq``).
    n_features_in_ : int

    Notes
    -----
    ``transform(X, runs=...)`` maps ``X`` of shape ``(n_samples, n_features)`` to
    ``(n_samples, n_lags * n_features)`` (lag-major blocks), zero-padded at run edges.

    Examples
    --------
    >>> import numpy as np
    >>> lagger = Lagger(tmin=0.0, tmax=0.1, sfreq=100.0).fit(np.zeros((5, 2)))
    >>> lagger.delays_.tolist(), lagger.transform(np.ones((5, 2))).shape
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], (5, 22))
    """

    def __init__(self, tmin: float | None = None, tmax: float | None = None,
                 sfreq: float | None = None, lags_s=None):
        self.tmin = tmin
        self.tmax = tmax
        self.sfreq = sfreq
        self.lags_s = lags_s

    def _delays(self) -> tuple[int, ...]:
        if self.sfreq is None or not np.isfinite(self.sfreq) or self.sfreq <= 0:
            raise ValueError(f"sfreq must be a positive number of Hz, got {self.sfreq!r}")
        sfreq = float(self.sfreq)
        if self.lags_s is not None:
            if self.tmin is not None or self.tmax is not None:
                raise ValueError("give either lags_s or tmin/tmax, not both "
                                 f"(got lags_s={self.lags_s!r}, tmin={self.tmin!r}, "
                                 f"tmax={self.tmax!r})")
            lags = np.asarray(self.lags_s, dtype=float).ravel() * sfreq
            samples = np.round(lags)
            if lags.size and np.max(np.abs(lags - samples)) > 1e-6:
                raise ValueError(f"lags_s={self.lags_s!r} are not whole samples at "
                                 f"sfreq={sfreq} Hz")
            return _check_int_delays(samples.astype(int).tolist(), "lags_s")
        if self.tmin is None or self.tmax is None:
            raise ValueError("Lagger needs tmin and tmax (seconds) or lags_s, got "
                             f"tmin={self.tmin!r}, tmax={self.tmax!r}")
        if self.tmin > self.tmax:
            raise ValueError(f"tmin must not exceed tmax, got tmin={self.tmin}, "
                             f"tmax={self.tmax}")
        first = int(np.round(self.tmin * sfreq))
        last = int(np.round(self.tmax * sfreq))
        return tuple(range(first, last + 1))

    def fit(self, X, y=None, runs=None):
        """Validate the lags, convert them to samples and remember ``n_features_in_``."""
        super().fit(X, y, runs)
        self.lags_s_ = self.delays_ / float(self.sfreq)
        return self


__all__ = ["Delayer", "Lagger", "delay_features", "run_segments"]
