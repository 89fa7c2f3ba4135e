"""Pieces shared by the EEG and sEEG pipelines: finding runs, events, channel metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._logging import progress
from ..io.readers import RecordingError, read_bids_raw, read_raw


@dataclass
class Run:
    """One loaded recording of a subject."""

    label: str
    raw: object  # mne.io.Raw
    path: Path
    channels_tsv: Path | None


def bids_root_of(spec, study_root: Path, results_dir: Path) -> Path | None:
    """BIDS root of a subject: the simulated dataset or ``source.bids_root``."""
    if spec.source == "simulated":
        return results_dir / "bids"
    if "bids_root" in spec.source:
        return Path(spec.source["bids_root"])
    return None


def load_runs(spec, bids_root: Path | None, datatype: str, task: str = "sentences") -> list[Run]:
    """Load every non-excluded run of an EEG/iEEG subject (BIDS or plain files)."""
    from mne_bids import get_entity_vals

    excluded = {str(r) for r in spec.exclude_runs}
    runs = []
    if bids_root is not None:
        if isinstance(spec.source, dict):
            task = spec.source.get("task", task)
        sub_dir = Path(bids_root) / f"sub-{spec.subject}"
        if not sub_dir.is_dir():
            raise RecordingError(f"sub-{spec.subject}: no folder {os.path.relpath(sub_dir)} "
                                 "in the BIDS dataset")
        labels = get_entity_vals(sub_dir, "run") or [None]
        if isinstance(spec.source, dict) and spec.source.get("runs"):
            labels = [str(r) for r in spec.source["runs"]]
        for label in progress(labels, desc=f"sub-{spec.subject}: reading runs"):
            if str(label) in excluded:
                continue
            raw = read_bids_raw(bids_root, spec.subject, task, datatype, run=label)
            fname = Path(raw.filenames[0])
            chan = fname.with_name(fname.name.rsplit("_", 1)[0] + "_channels.tsv")
            runs.append(Run(str(label), raw, fname, chan if chan.is_file() else None))
    else:
        files = spec.source["files"]
        for i, f in enumerate(progress(files, desc=f"sub-{spec.subject}: reading files"),
                              start=1):
            if str(i) in excluded:
                continue
            raw = read_raw(f, subject=spec.subject, stream=spec.source.get("stream"),
                           ch_type="eeg" if spec.modality == "eeg" else "seeg")
            runs.append(Run(str(i), raw, Path(f), None))
    if not runs:
        raise RecordingError(f"sub-{spec.subject}: every run is excluded (exclude_runs="
                             f"{spec.exclude_runs})")
    return runs


def drop_bads(raw, bads: list[str], subject: str, path: Path) -> None:
    """Drop the subject's bad channels, refusing names the recording does not have."""
    unknown = [b for b in bads if b not in raw.ch_names]
    if unknown:
        raise RecordingError(
            f"sub-{subject}: {os.path.relpath(path)}: bad_channels {unknown} are not "
            f"channels of this recording (it has {raw.ch_names[:8]}...)"
        )
    if bads:
        raw.drop_channels(bads)


def parse_events(raw, run: Run, subject: str):
    """Events from annotations, with ``<condition>/<stim_id>`` descriptions split.

    Returns
    -------
    events : ndarray, shape (n_events, 3)
        MNE events, one code per distinct description.
    conditions, stim_ids : ndarray of str
        One per event; a plain description gives a trial id ``run<r>-<k>`` unique to the
        trial.
    """
    import mne

    if len(raw.annotations) == 0:
        raise RecordingError(f"sub-{subject}: {os.path.relpath(run.path)}: no events "
                             "(annotations) in the recording")
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    code_to_desc = {v: k for k, v in event_id.items()}
    descs = [code_to_desc[c] for c in events[:, 2]]
    conditions, stim_ids = [], []
    for k, desc in enumerate(descs):
        if "/" in desc:
            cond, stim = desc.split("/", 1)
        else:
            cond, stim = desc, f"run{run.label}-{k:04d}"
        conditions.append(cond)
        stim_ids.append(stim)
    return events, np.asarray(conditions), np.asarray(stim_ids)


def channel_meta(raw, run: Run) -> tuple[np.ndarray, np.ndarray]:
    """MNI/head coordinates (mm, NaN if unknown) and region labels of the channels."""
    montage = raw.get_montage()
    coords = np.full((len(raw.ch_names), 3), np.nan)
    if montage is not None:
        pos = montage.get_positions()["ch_pos"]
        for i, name in enumerate(raw.ch_names):
            if name in pos and np.all(np.isfinite(pos[name])):
                coords[i] = np.asarray(pos[name]) * 1000.0
    regions = np.full(len(raw.ch_names), "", dtype=object)
    if run.channels_tsv is not None:
        table = pd.read_csv(run.channels_tsv, sep="\t", keep_default_na=False)
        if "region" in table.columns:
            lookup = dict(zip(table["name"], table["region"]))
            regions = np.array([lookup.get(n, "") for n in raw.ch_names], dtype=object)
            regions[regions == "n/a"] = ""
    return coords, regions.astype(str)


def check_same_channels(runs_channels: list[list[str]], runs: list[Run], subject: str) -> None:
    """All runs of a subject must have the same channels after dropping bads."""
    first = runs_channels[0]
    for chans, run in zip(runs_channels[1:], runs[1:]):
        if chans != first:
            diff = sorted(set(first) ^ set(chans))
            raise RecordingError(f"sub-{subject}: {os.path.relpath(run.path)}: channels differ "
                                 f"from the first run ({diff[:6]})")


def check_same_sfreq(runs: list[Run], subject: str, tolerance_hz: float = 0.0) -> None:
    """All runs of a subject must share one sampling rate.

    A run whose rate differs from the first run's by at most ``tolerance_hz`` (device
    clocks drift: 256.0276 Hz against 256.0255 Hz) is resampled to the first run's rate
    in place, and the log says so; a larger difference is an error.
    """
    from .._logging import logger

    sfreq = runs[0].raw.info["sfreq"]
    for run in runs[1:]:
        other = run.raw.info["sfreq"]
        if other == sfreq:
            continue
        if abs(other - sfreq) <= tolerance_hz:
            logger.warning("sub-%s: %s: sampling rate %.8g Hz resampled to the first run's "
                           "%.8g Hz (they differ by %.3g Hz, within "
                           "preprocess.sfreq_tolerance_hz = %g)", subject,
                           os.path.relpath(run.path), other, sfreq, abs(other - sfreq),
                           tolerance_hz)
            run.raw.resample(sfreq, verbose="error")  # MNE sets info["sfreq"] = sfreq
            continue
        raise RecordingError(
            f"sub-{subject}: {os.path.relpath(run.path)}: sampling rate {other} Hz differs "
            f"from the first run's {sfreq} Hz by {abs(other - sfreq):.4g} Hz, more than "
            f"key 'preprocess.sfreq_tolerance_hz' ({tolerance_hz:g} Hz) allows"
        )


def study_path(spec, value) -> Path:
    """A preprocessing path option: absolute, or relative to the study's study.yaml.

    :func:`brainhead.specs.load_subject` already makes these absolute; this also serves
    specs built by hand.
    """
    path = Path(value)
    if path.is_absolute():
        return path
    for parent in Path(spec.path).resolve().parents:
        if (parent / "study.yaml").is_file():
            return parent / path
    return Path(spec.path).resolve().parent / path
