"""Intracranial EEG (sEEG/ECoG): line-noise removal, re-reference, high-gamma envelope.

Writes two views: ``stimulus`` (mean high-gamma envelope in a post-stimulus window,
baseline-corrected) and ``timeseries`` (the envelope at a low rate with onsets).
Subjects differ in contacts; nothing here assumes a shared count.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .._logging import logger
from ..io.readers import RecordingError
from ..io.table import ResponseTable, Targets, View
from ._common import channel_meta, check_same_channels, check_same_sfreq, drop_bads, parse_events


def high_gamma_envelope(raw, params: dict):
    """Notch, common-average reference and high-gamma analytic amplitude, in place."""
    raw.pick(["seeg", "ecog"])
    nyq = raw.info["sfreq"] / 2
    lo, hi = params["high_gamma"]
    if hi >= nyq:
        raise RecordingError(
            f"high_gamma upper edge {hi} Hz is not below the Nyquist frequency {nyq} Hz"
        )
    notch = [f for f in params["notch"] if f < nyq]
    if notch:
        raw.notch_filter(notch, picks="all", verbose="error")
    if params["reference"] == "average":
        raw.set_eeg_reference("average", ch_type=["seeg", "ecog"] if "ecog" in raw else "seeg",
                              projection=False, verbose="error")
    raw.filter(lo, hi, picks="all", verbose="error")
    raw.apply_hilbert(picks="all", envelope=True, verbose="error")
    return raw


def preprocess_seeg(spec, runs) -> ResponseTable:
    """Preprocess a subject's sEEG runs into a response table.

    Returns
    -------
    table : ResponseTable
        Views ``stimulus`` (trial × contact) and ``timeseries`` (time × contact).
    """
    import mne

    params = spec.preprocess
    check_same_sfreq(runs, spec.subject)
    epochs_list, run_of_epoch, ts_blocks, ts_rows, ev = [], [], [], [], []
    for run in runs:
        raw = run.raw
        drop_bads(raw, spec.bad_channels, spec.subject, run.path)
        try:
            high_gamma_envelope(raw, params)
        except RecordingError as err:
            raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(run.path)}: {err}") from err
        events, conds, stims = parse_events(raw, run, spec.subject)
        meta = pd.DataFrame({"condition": conds, "stim_id": stims})
        epochs = mne.Epochs(raw, events, event_id=None, tmin=params["tmin"],
                            tmax=params["tmax"],
                            baseline=tuple(params["baseline"]) if params["baseline"] else None,
                            metadata=meta, preload=True, verbose="error")
        if len(epochs) == 0:
            raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(run.path)}: no epoch "
                                 "fits inside the recording")
        epochs_list.append(epochs)
        run_of_epoch += [run.label] * len(epochs)
        low = raw.copy().resample(params["timeseries_sfreq"], verbose="error")
        ts_blocks.append(low.get_data().T * 1e6)
        ts_rows.append(pd.DataFrame({"time": low.times, "group": run.label}))
        onsets = events[:, 0] / raw.info["sfreq"] - raw.first_time
        ev.append(pd.DataFrame({"onset": onsets, "stim_id": stims, "group": run.label}))
    check_same_channels([e.ch_names for e in epochs_list], runs, spec.subject)
    epochs = mne.concatenate_epochs(epochs_list, verbose="error")
    t0, t1 = params["window"]
    X = epochs.copy().crop(t0, t1).get_data(copy=False).mean(-1) * 1e6
    rows = {"stim_id": np.asarray(epochs.metadata["stim_id"], dtype=str),
            "group": np.asarray(run_of_epoch, dtype=str),
            "y": np.asarray(epochs.metadata["condition"], dtype=str)}
    ts_r = pd.concat(ts_rows, ignore_index=True)
    ev_t = pd.concat(ev, ignore_index=True)
    coords, regions = channel_meta(runs[0].raw, runs[0])
    names = np.asarray(epochs.ch_names)
    logger.info("sub-%s: %d contacts, %d epochs", spec.subject, len(names), len(epochs))
    return ResponseTable(
        subject=spec.subject, modality="seeg",
        targets=Targets(name=names, kind=["electrode"] * len(names), coords=coords,
                        region=regions),
        views={
            "stimulus": View(X=X.astype(np.float32), rows=rows),
            "timeseries": View(
                X=np.concatenate(ts_blocks).astype(np.float32),
                rows={"time": ts_r["time"].to_numpy(), "group": ts_r["group"].astype(str).to_numpy()},
                events={"onset": ev_t["onset"].to_numpy(), "stim_id": ev_t["stim_id"].astype(str).to_numpy(),
                        "group": ev_t["group"].astype(str).to_numpy()},
            ),
        },
        info={"n_epochs": len(epochs), "runs": [r.label for r in runs],
              "high_gamma": params["high_gamma"]},
    ).validate()
