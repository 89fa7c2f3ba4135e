"""The rows that a decoding study classifies: trials or windows of one modality's subjects.

:class:`DecodeRows` pools the response tables of one modality into one row index (rows
of a subject are contiguous, subjects in sorted order) with the bookkeeping that the
protocols need to keep a split honest:

``subject``  whose row it is
``trial``    the trial identity (the table's ``stim_id``; repeated presentations of a
             stimulus share it, so they are never on both sides of a split)
``run``      the run (the table's ``group``)
``session``  the session (``session`` rows where a table has them, else one session)
``t_start``, ``t_stop``  the row's span in its run (s; NaN where the table lacks it),
             from which overlapping windows are found
``windowed`` whether the row is a fixed-length window of a continuous recording (its
             subject's ``preprocess.epoching`` is ``fixed``): such rows are grouped in
             contiguous blocks, not one by one

and the arrays the models read: the band features (``bands`` view, channels x bands;
the ``stimulus`` view as one band where a table has no bands view, e.g. sEEG high-gamma)
and the raw epochs (``epochs`` view, channels x time) where present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._logging import logger

__all__ = ["DecodeRows", "SubjectData", "load_rows"]


@dataclass
class SubjectData:
    """One subject's model inputs (rows in the subject's order).

    Attributes
    ----------
    bands : ndarray, shape (n_rows, n_channels, n_bands)
    band_names : list of str
    epochs : ndarray, shape (n_rows, n_channels, n_times) | None
    times : ndarray, shape (n_times,) | None
    channels : list of str
    coords : ndarray, shape (n_channels, 3)
        MNI/head coordinates in mm (NaN where unknown).
    """

    bands: np.ndarray
    band_names: list[str]
    epochs: np.ndarray | None
    times: np.ndarray | None
    channels: list[str]
    coords: np.ndarray


@dataclass
class DecodeRows:
    """Rows of one modality pooled over subjects (see the module docstring).

    ``offset[s]`` is the first global row of subject ``s``; its rows are
    ``offset[s] .. offset[s] + len(data[s].bands)``.
    """

    study: str
    modality: str
    subject: np.ndarray
    y: np.ndarray
    trial: np.ndarray
    run: np.ndarray
    session: np.ndarray
    t_start: np.ndarray
    t_stop: np.ndarray
    windowed: np.ndarray
    data: dict[str, SubjectData] = field(default_factory=dict)
    offset: dict[str, int] = field(default_factory=dict)
    label: str = "y"

    def __len__(self) -> int:
        return len(self.y)

    @property
    def subjects(self) -> list[str]:
        """Subjects in row order."""
        return list(self.data)

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.y)

    def local(self, idx: np.ndarray, subject: str) -> np.ndarray:
        """Positions in ``subject``'s arrays of the global rows ``idx`` that are its own."""
        idx = np.asarray(idx)
        mine = idx[self.subject[idx] == subject]
        return mine - self.offset[subject]

    def per_subject(self, idx: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """``(subject, local positions)`` of sorted global rows, subjects in row order."""
        idx = np.sort(np.asarray(idx))
        return [(s, self.local(idx, s)) for s in self.subjects
                if np.any(self.subject[idx] == s)]

    def prepare_epochs(self, band=None, window=None) -> DecodeRows:
        """Band-pass (Hz) and then crop (s) every subject's raw epochs, in place.

        ``decode.epochs_band`` and ``decode.epochs_window``; filtering comes first, on
        the whole epoch, so the crop has no filter edges. Raises ValueError naming the
        study, the subject and the key when the band is above the Nyquist frequency or
        the window outside the epochs.
        """
        for s, d in self.data.items():
            if d.epochs is None or (band is None and window is None):
                continue
            X, times = d.epochs, d.times
            sfreq = 1.0 / float(times[1] - times[0])
            who = f"study {self.study}: sub-{s} ({self.modality})"
            if band is not None:
                from mne.filter import filter_data

                lo, hi = band
                if not 0 <= lo < hi < sfreq / 2:
                    raise ValueError(f"{who}: key 'decode.epochs_band': {list(band)} Hz must "
                                     f"have 0 <= low < high < {sfreq / 2:g} Hz (the Nyquist "
                                     f"frequency of the epochs at decode.epochs_sfreq)")
                X = filter_data(X.astype(np.float64), sfreq, lo or None, hi,
                                verbose="error").astype(np.float32)
            if window is not None:
                keep = (times >= window[0] - 1e-9) & (times <= window[1] + 1e-9)
                if keep.sum() < 2:
                    raise ValueError(f"{who}: key 'decode.epochs_window': {list(window)} s is "
                                     f"outside the epochs ({times[0]:g} to {times[-1]:g} s)")
                X, times = X[:, :, keep], times[keep]
            d.epochs, d.times = np.ascontiguousarray(X), times
        return self

    @classmethod
    def from_tables(cls, study: str, modality: str, tables, *, label: str = "y",
                    classes=None, windowed=None, trial_groups: str = "stimulus",
                    min_stimuli: int = 2) -> DecodeRows:
        """Pool response tables of one modality.

        Parameters
        ----------
        study, modality : str
        tables : list of brainhead.io.ResponseTable
        label : str
            The per-row array holding labels (``decode.label``).
        classes : list of str | None
            Labels to keep; None keeps all.
        windowed : dict of str to bool | None
            Per subject: its rows are fixed-length windows of continuous recordings.
        trial_groups : {"stimulus", "trial", "auto"}
            The trial identity of a row: its ``stim_id`` (rows sharing it are one trial,
            e.g. repeated presentations), the row itself, or ``"auto"``: the stimulus
            when every class of the subject has at least ``min_stimuli`` distinct
            stimuli, else the row (a cue design whose stim_id names the condition).
        min_stimuli : int
            See ``trial_groups`` (the number of folds).

        Raises
        ------
        ValueError
            A table without the label array, or with fewer than two of the classes, naming
            the study and the subject.
        """
        windowed = windowed or {}
        cols = {k: [] for k in ("subject", "y", "trial", "run", "session", "t_start",
                                "t_stop", "windowed")}
        data, offset, n = {}, {}, 0
        for table in sorted(tables, key=lambda t: t.subject):
            who = f"study {study}: sub-{table.subject} ({modality})"
            view = table.views.get("bands") or table.view("stimulus")
            if label not in view.rows:
                raise ValueError(f"{who}: key 'decode.label': the response table has no "
                                 f"per-row array {label!r} (it has {sorted(view.rows)})")
            y = np.asarray(view.rows[label], dtype=str)
            keep = np.ones(len(y), bool) if classes is None else np.isin(y, list(classes))
            if len(np.unique(y[keep])) < 2:
                raise ValueError(
                    f"{who}: key 'decode.classes': fewer than two classes to decode; the "
                    f"table's {label!r} holds {sorted(set(y.tolist()))}"
                    + (f" and decode.classes keeps {list(classes)}" if classes else ""))
            rows = {k: np.asarray(v)[keep] for k, v in view.rows.items()}
            m = int(keep.sum())
            if "bands" in table.views:
                bands = table.views["bands"].X[keep]
                band_names = [str(b) for b in table.views["bands"].labels["band"]]
            else:  # one feature per channel (sEEG high-gamma), as a single band
                bands = table.view("stimulus").X[keep][:, :, None]
                band_names = ["stimulus"]
            epochs = times = None
            if "epochs" in table.views:
                ev = table.views["epochs"]
                if len(ev.X) != len(view.X) or not np.array_equal(
                        np.asarray(ev.rows["stim_id"], str), np.asarray(view.rows["stim_id"], str)):
                    raise ValueError(f"{who}: the epochs view's rows differ from the "
                                     "band view's; rerun preprocessing")
                epochs, times = ev.X[keep], np.asarray(ev.labels["time"], float)
            data[table.subject] = SubjectData(
                bands=np.asarray(bands, np.float32), band_names=band_names,
                epochs=epochs, times=times, channels=[str(c) for c in table.targets.name],
                coords=np.asarray(table.targets.coords, float))
            offset[table.subject] = n
            n += m
            cols["subject"].append(np.full(m, table.subject))
            cols["y"].append(y[keep])
            stim = np.asarray(rows["stim_id"], dtype=str)
            by_trial = trial_groups == "trial" or (trial_groups == "auto" and min(
                len(np.unique(stim[y[keep] == c])) for c in np.unique(y[keep])) < min_stimuli)
            if by_trial and len(np.unique(stim)) < m:  # each row its own trial, named
                run = np.asarray(rows["group"], dtype=str)
                count: dict[str, int] = {}
                ids = []
                for s, r in zip(stim, run):
                    count[r] = count.get(r, 0) + 1
                    ids.append(f"{s}#run{r}-{count[r] - 1}")
                stim = np.asarray(ids)
                logger.info("%s: trials are rows (stim_id names %d stimuli for %d rows)",
                            who, len(np.unique(rows["stim_id"])), m)
            cols["trial"].append(stim)
            cols["run"].append(np.asarray(rows["group"], dtype=str))
            cols["session"].append(np.asarray(rows.get("session", np.full(m, "1")), dtype=str))
            for key in ("t_start", "t_stop"):
                cols[key].append(np.asarray(rows.get(key, np.full(m, np.nan)), dtype=float))
            cols["windowed"].append(np.full(m, bool(windowed.get(table.subject, False))))
        if not data:
            raise ValueError(f"study {study}: no {modality} subject to decode")
        arrays = {k: np.concatenate(v) for k, v in cols.items()}
        return cls(study=study, modality=modality, data=data, offset=offset, label=label,
                   **arrays)


def load_rows(study, modality: str, paths) -> DecodeRows:
    """Read the response tables of ``paths`` and pool those of ``modality``.

    Parameters
    ----------
    study : brainhead.specs.StudySpec
        With a ``decode`` section.
    modality : {"eeg", "seeg"}
    paths : list of path-like
        ``results/<study>/sub-*/responses.h5``.
    """
    from ..io.store import read_responses

    decode = study.config["decode"]
    tables = [read_responses(p) for p in paths]
    tables = [t for t in tables if t.modality == modality]
    windowed = {t.subject: study.subjects[t.subject].preprocess.get("epoching") == "fixed"
                for t in tables if t.subject in study.subjects}
    try:
        rows = DecodeRows.from_tables(study.name, modality, tables, label=decode["label"],
                                      classes=decode["classes"], windowed=windowed,
                                      trial_groups=decode.get("trial_groups", "auto"),
                                      min_stimuli=decode["n_folds"])
        return rows.prepare_epochs(decode.get("epochs_band"), decode.get("epochs_window"))
    except ValueError as err:  # name the file whose key to change
        import os

        raise ValueError(f"{os.path.relpath(study.path)}: {err}") from None


def responses_path(results_dir, subject: str) -> Path:
    """``results/<study>/sub-<id>/responses.h5``."""
    return Path(results_dir) / f"sub-{subject}" / "responses.h5"
