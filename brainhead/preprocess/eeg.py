"""Scalp EEG: filtering, re-referencing, epoching and trial responses through MNE.

Writes two views: ``stimulus`` (mean amplitude per channel in a post-stimulus window,
in microvolts) and ``bands`` (band differential entropy per channel and band).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .._logging import logger
from ..io.readers import RecordingError
from ..io.table import ResponseTable, Targets, View
from ._common import channel_meta, check_same_channels, check_same_sfreq, drop_bads, parse_events


def clean_raw(raw, params: dict, *, subject: str, path) -> object:
    """Montage (when positions are missing), notch, band-pass and reference, in place."""
    import mne

    raw.pick("eeg")
    if raw.get_montage() is None and params.get("montage"):
        montage = mne.channels.make_standard_montage(params["montage"])
        missing = [c for c in raw.ch_names if c not in montage.ch_names]
        if missing:
            raise RecordingError(
                f"sub-{subject}: {os.path.relpath(path)}: channels {missing[:6]} are not "
                f"in montage {params['montage']!r}"
            )
        raw.set_montage(montage, verbose="error")
    nyq = raw.info["sfreq"] / 2
    notch = [f for f in params["notch"] if f < nyq]
    if notch:
        raw.notch_filter(notch, verbose="error")
    if params["l_freq"] is not None or params["h_freq"] is not None:
        raw.filter(params["l_freq"], params["h_freq"], verbose="error")
    if params["reference"] == "average":
        raw.set_eeg_reference("average", projection=False, verbose="error")
    return raw


def differential_entropy(data: np.ndarray, axis: int = -1) -> np.ndarray:
    """Differential entropy of a Gaussian with the signal's variance: 0.5 log(2 pi e var)."""
    var = np.maximum(data.var(axis=axis), np.finfo(float).tiny)
    return 0.5 * np.log(2 * np.pi * np.e * var)


def epochs_to_views(epochs, run_labels, params: dict) -> tuple[View, View]:
    """Stimulus (window mean) and bands (differential entropy) views of epochs."""
    stim_ids = np.asarray(epochs.metadata["stim_id"], dtype=str)
    rows = {"stim_id": stim_ids, "group": np.asarray(run_labels, dtype=str),
            "y": np.asarray(epochs.metadata["condition"], dtype=str)}
    t0, t1 = params["window"]
    window = epochs.copy().crop(t0, t1).get_data(copy=False).mean(-1) * 1e6  # microvolts
    post = max(0.0, epochs.tmin)
    bands = params["bands"]
    de = np.empty((len(epochs), len(epochs.ch_names), len(bands)))
    for b, (lo, hi) in enumerate(bands.values()):
        band_ep = epochs.copy().filter(lo, min(hi, epochs.info["sfreq"] / 2 - 1), verbose="error")
        de[:, :, b] = differential_entropy(band_ep.crop(post, None).get_data(copy=False) * 1e6)
    return (View(X=window.astype(np.float32), rows=rows),
            View(X=de.astype(np.float32), rows=dict(rows),
                 labels={"band": np.asarray(list(bands), dtype=str)}))


def preprocess_eeg(spec, runs) -> ResponseTable:
    """Preprocess a subject's EEG runs into a response table.

    Parameters
    ----------
    spec : brainhead.specs.SubjectSpec
    runs : list of brainhead.preprocess._common.Run

    Returns
    -------
    table : ResponseTable
        Views ``stimulus`` and ``bands``; ``y`` holds the trial condition.
    """
    import mne

    params = spec.preprocess
    check_same_sfreq(runs, spec.subject)
    all_epochs, run_of_epoch, kept, dropped = [], [], 0, 0
    for run in runs:
        raw = run.raw
        drop_bads(raw, spec.bad_channels, spec.subject, run.path)
        clean_raw(raw, params, subject=spec.subject, path=run.path)
        events, conds, stims = parse_events(raw, run, spec.subject)
        meta = pd.DataFrame({"condition": conds, "stim_id": stims})
        reject = None if params["reject_uv"] is None else {"eeg": params["reject_uv"] * 1e-6}
        epochs = mne.Epochs(raw, events, event_id=None, tmin=params["tmin"], tmax=params["tmax"],
                            baseline=tuple(params["baseline"]) if params["baseline"] else None,
                            metadata=meta, reject=reject, preload=True, verbose="error",
                            on_missing="raise", event_repeated="drop")
        if len(epochs) == 0:
            raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(run.path)}: every "
                                 "epoch was rejected or fell outside the recording")
        kept += len(epochs)
        dropped += len(events) - len(epochs)
        all_epochs.append(epochs)
        run_of_epoch += [run.label] * len(epochs)
    check_same_channels([e.ch_names for e in all_epochs], runs, spec.subject)
    epochs = mne.concatenate_epochs(all_epochs, verbose="error")
    stim_view, band_view = epochs_to_views(epochs, run_of_epoch, params)
    coords, regions = channel_meta(runs[0].raw, runs[0])
    names = np.asarray(epochs.ch_names)
    logger.info("sub-%s: %d epochs kept, %d rejected", spec.subject, kept, dropped)
    return ResponseTable(
        subject=spec.subject, modality="eeg",
        targets=Targets(name=names, kind=["channel"] * len(names), coords=coords,
                        region=regions),
        views={"stimulus": stim_view, "bands": band_view},
        info={"n_epochs_kept": kept, "n_epochs_rejected": dropped,
              "sfreq": epochs.info["sfreq"], "runs": [r.label for r in runs]},
    ).validate()
