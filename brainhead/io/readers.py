"""Readers of raw recordings, through MNE, mne-bids, nibabel and nilearn.

Each reader turns a failure of the underlying library into one error that names the
file and, where known, the subject.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

#: File extension -> MNE reader function name.
RAW_READERS = {
    ".edf": "read_raw_edf",
    ".bdf": "read_raw_bdf",
    ".vhdr": "read_raw_brainvision",
    ".fif": "read_raw_fif",
    ".set": "read_raw_eeglab",
    ".gdf": "read_raw_gdf",
}


class RecordingError(ValueError):
    """A recording cannot be read or does not fit what the study asks of it."""


def _where(path, subject: str | None) -> str:
    who = f"sub-{subject}: " if subject else ""
    return f"{who}{os.path.relpath(path)}"


def read_raw(path: str | os.PathLike, *, subject: str | None = None):
    """Read an EEG/iEEG file with the MNE reader its extension calls for.

    Parameters
    ----------
    path : path-like
        EDF/EDF+, BDF, BrainVision (.vhdr), FIF, EEGLAB (.set) or GDF.
    subject : str | None
        Used in error messages.

    Returns
    -------
    raw : mne.io.Raw
        Preloaded.
    """
    import mne

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in RAW_READERS:
        raise RecordingError(
            f"{_where(path, subject)}: unsupported file type {ext!r}; expected one of "
            f"{sorted(RAW_READERS)}"
        )
    if not path.is_file():
        raise RecordingError(f"{_where(path, subject)}: file not found")
    reader = getattr(mne.io, RAW_READERS[ext])
    try:
        raw = reader(path, preload=True, verbose="error")
    except Exception as err:  # MNE raises many types for broken files
        raise RecordingError(f"{_where(path, subject)}: cannot be read: {err}") from err
    return raw


def read_bids_raw(bids_root, subject: str, task: str, datatype: str, *, run=None,
                  session: str | None = None):
    """Read one BIDS EEG/iEEG recording through mne-bids.

    Returns
    -------
    raw : mne.io.Raw
        Preloaded, with annotations from events.tsv and, for iEEG, the contact
        positions from electrodes.tsv.
    """
    from mne_bids import BIDSPath, read_raw_bids

    bp = BIDSPath(root=bids_root, subject=subject, task=task, run=run, session=session,
                  datatype=datatype, suffix=datatype)
    matches = bp.match()
    if not matches:
        raise RecordingError(
            f"sub-{subject}: no {datatype} recording for task '{task}' run {run} in "
            f"BIDS root {os.path.relpath(bids_root)}"
        )
    data_files = [m for m in matches if m.extension not in (".json", ".tsv")]
    try:
        raw = read_raw_bids(data_files[0], verbose="error")
        raw.load_data()
    except Exception as err:
        raise RecordingError(f"{_where(data_files[0].fpath, subject)}: cannot be read: {err}") from err
    return raw


def bids_runs(bids_root, subject: str, task: str, datatype: str,
              session: str | None = None) -> list[str]:
    """Sorted run labels of a subject's recordings in a BIDS dataset."""
    from mne_bids import get_entity_vals

    runs = get_entity_vals(Path(bids_root) / f"sub-{subject}", "run",
                           ignore_datatypes=[d for d in ("eeg", "ieeg", "func", "anat")
                                             if d != datatype])
    return sorted(runs) or [None]


def read_events_tsv(path: str | os.PathLike, *, subject: str | None = None,
                    required: tuple[str, ...] = ("onset", "duration")) -> pd.DataFrame:
    """Read a BIDS ``events.tsv`` and check its required columns."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{_where(path, subject)}: events file not found")
    events = pd.read_csv(path, sep="\t", na_values="n/a")
    missing = [c for c in required if c not in events.columns]
    if missing:
        raise RecordingError(
            f"{_where(path, subject)}: events file lacks column(s) {missing}; it has "
            f"{list(events.columns)}"
        )
    return events


def read_bold(path: str | os.PathLike, *, subject: str | None = None,
              t_r: float | None = None):
    """Load a 4D BOLD NIfTI image and its repetition time.

    Returns
    -------
    img : nibabel.Nifti1Image
    t_r : float
        From ``t_r`` if given, else the header (pixdim[4]) or the BIDS JSON sidecar.
    """
    import json

    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{_where(path, subject)}: file not found")
    try:
        img = nib.load(path)
    except Exception as err:
        raise RecordingError(f"{_where(path, subject)}: cannot be read as NIfTI: {err}") from err
    if img.ndim != 4:
        raise RecordingError(
            f"{_where(path, subject)}: expected a 4D BOLD image, got {img.ndim}D "
            f"with shape {img.shape}"
        )
    if t_r is None:
        sidecar = Path(str(path).replace(".nii.gz", ".json").replace(".nii", ".json"))
        if sidecar.is_file():
            t_r = json.loads(sidecar.read_text()).get("RepetitionTime")
    if t_r is None:
        zooms = img.header.get_zooms()
        t_r = float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else None
    if not t_r:
        raise RecordingError(
            f"{_where(path, subject)}: repetition time (TR) missing from the header and "
            "sidecar; set source.t_r in the subject file"
        )
    return img, float(t_r)


def stimulus_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a stimuli TSV with at least ``stim_id`` and ``text``, ids unique."""
    table = pd.read_csv(path, sep="\t", dtype={"stim_id": str})
    for col in ("stim_id", "text"):
        if col not in table.columns:
            raise RecordingError(f"{os.path.relpath(path)}: stimuli table lacks column {col!r}")
    dup = table["stim_id"][table["stim_id"].duplicated()].tolist()
    if dup:
        raise RecordingError(f"{os.path.relpath(path)}: duplicate stim_id {dup[:5]}")
    return table


def as_str_array(values) -> np.ndarray:
    """Strings as a numpy unicode array."""
    return np.asarray([str(v) for v in values], dtype=str)
