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


def _edf_expected_size(path: Path) -> tuple[int, int] | None:
    """Header-declared size of an EDF/BDF file and the number of data records.

    Returns ``None`` when the header leaves the number of records open (-1), which
    EDF allows while a recording is still being written.
    """
    with open(path, "rb") as fid:
        head = fid.read(256)
        if len(head) < 256:
            raise ValueError(f"the file has {len(head)} bytes, fewer than the 256-byte "
                             "EDF/BDF header")
        try:
            n_records = int(head[236:244].decode("ascii").strip())
            n_signals = int(head[252:256].decode("ascii").strip())
        except ValueError as err:
            raise ValueError("the header's number of records or signals is not a "
                             "number") from err
        if n_records < 0:
            return None
        fid.seek(256 + 216 * n_signals)
        block = fid.read(8 * n_signals)
    if len(block) < 8 * n_signals:
        raise ValueError(f"the header declares {n_signals} signals but the file ends "
                         "inside the signal headers")
    try:
        n_samples = [int(block[8 * i:8 * i + 8].decode("ascii").strip())
                     for i in range(n_signals)]
    except ValueError as err:
        raise ValueError("a signal's number of samples per record is not a number") from err
    sample_bytes = 3 if path.suffix.lower() == ".bdf" else 2
    header_bytes = 256 * (n_signals + 1)
    return header_bytes + n_records * sum(n_samples) * sample_bytes, n_records


def edf_sampling_rate(path: str | os.PathLike) -> float | None:
    """Highest sampling rate (Hz) that an EDF/BDF header declares, without reading data.

    Annotation channels (``EDF Annotations``, ``BDF Annotations``) are left out. Returns
    None when the header cannot be parsed (the reader reports that later).
    """
    try:
        with open(path, "rb") as fid:
            head = fid.read(256)
            n_signals = int(head[252:256].decode("ascii").strip())
            duration = float(head[244:252].decode("ascii").strip())
            block = fid.read(256 * n_signals)
        if duration <= 0 or len(block) < 256 * n_signals:
            return None
        labels = [block[16 * i:16 * i + 16].decode("latin-1").strip()
                  for i in range(n_signals)]
        offset = 216 * n_signals
        samples = [int(block[offset + 8 * i:offset + 8 * i + 8].decode("ascii").strip())
                   for i in range(n_signals)]
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    rates = [n / duration for label, n in zip(labels, samples)
             if "annotations" not in label.lower()]
    return max(rates) if rates else None


def _check_edf_size(path: Path, ext: str, where: str) -> None:
    """An EDF/BDF file must hold at least the bytes its header declares."""
    kind = ext[1:].upper()
    try:
        expected = _edf_expected_size(path)
    except ValueError as err:
        raise RecordingError(f"{where}: cannot be read: not a valid {kind} file: "
                             f"{err}") from err
    size = path.stat().st_size
    if expected is not None and size < expected[0]:
        raise RecordingError(
            f"{where}: cannot be read: truncated {kind} file: the header declares {expected[1]} data "
            f"records ({expected[0]} bytes) but the file has {size} bytes"
        )


def _check_companions(path: Path, ext: str, where: str) -> None:
    """The files a multi-file format needs beside ``path`` must exist."""
    if ext == ".vhdr":
        text = path.read_text(encoding="latin-1", errors="replace")
        for key in ("DataFile", "MarkerFile"):
            match = next((ln.split("=", 1)[1].strip() for ln in text.splitlines()
                          if ln.strip().startswith(f"{key}=")), None)
            if match is None:
                if key == "DataFile":
                    raise RecordingError(f"{where}: the BrainVision header names no "
                                         "DataFile")
                continue
            if not (path.parent / match).is_file():
                raise RecordingError(f"{where}: the BrainVision header's {key} "
                                     f"{match!r} is not beside it")


def read_raw(path: str | os.PathLike, *, subject: str | None = None, preload: bool = True,
             stream: dict | None = None, ch_type: str = "eeg"):
    """Read an EEG/iEEG file with the MNE reader its extension calls for.

    Parameters
    ----------
    path : path-like
        EDF/EDF+ (``.edf``), BDF (``.bdf``), BrainVision (``.vhdr``), FIF (``.fif``,
        ``.fif.gz``), EEGLAB (``.set``, with its ``.fdt`` if the data are separate),
        GDF (``.gdf``), or a CSV/TSV stream (``.csv``, ``.tsv``; read by
        :func:`brainhead.io.streams.read_stream`).
    subject : str | None
        Used in error messages.
    preload : bool
        Load the data into memory (default), which also reads every sample once so that
        a damaged data section is reported here.
    stream : dict | None
        Options of :func:`~brainhead.io.streams.read_stream` for CSV/TSV streams (the
        subject's ``source.stream``).
    ch_type : str
        Channel type of CSV/TSV stream columns.

    Returns
    -------
    raw : mne.io.Raw
        With the file's annotations.

    Raises
    ------
    RecordingError
        Naming the file (and subject) when the file is missing, of an unsupported type,
        truncated (EDF/BDF: fewer bytes than the header declares), has duplicate
        channel names, has annotations outside the recording, lacks a companion file
        (BrainVision ``.eeg``/``.vmrk``) or cannot be parsed by MNE.

    Notes
    -----
    BrainVision free-text markers, which MNE reads as ``Comment/<text>``, are renamed
    ``<text>`` so that an exported annotation reads back as itself.
    """
    import warnings

    import mne

    path = Path(path)
    where = _where(path, subject)
    name = path.name.lower()
    ext = ".fif" if name.endswith(".fif.gz") else path.suffix.lower()
    if ext in (".csv", ".tsv"):
        from .streams import read_stream

        return read_stream(path, subject=subject, ch_type=ch_type, **(stream or {}))
    if ext not in RAW_READERS:
        raise RecordingError(
            f"{where}: unsupported file type {ext!r}; expected one of "
            f"{sorted(RAW_READERS) + ['.csv', '.tsv']}"
        )
    if not path.is_file():
        raise RecordingError(f"{where}: file not found")
    if ext in (".edf", ".bdf"):
        _check_edf_size(path, ext, where)
    _check_companions(path, ext, where)
    reader = getattr(mne.io, RAW_READERS[ext])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # "warning" so that MNE's warnings reach ``caught`` (checked below).
            raw = reader(path, preload=preload, verbose="warning")
        except Exception as err:  # MNE raises many types for broken files
            raise RecordingError(f"{where}: cannot be read: {err}") from err
    for warning in caught:
        text = str(warning.message)
        if "names are not unique" in text:
            dups = text.split("duplicates for:", 1)[-1].split(". Applying", 1)[0].strip()
            raise RecordingError(f"{where}: duplicate channel names {dups}; every channel "
                                 "must have its own name")
        if "outside data range" in text:
            raise RecordingError(f"{where}: events outside the recording: {text} "
                                 f"(the recording lasts {raw.times[-1]:.3f} s)")
        if "does not match the file size" in text:
            raise RecordingError(f"{where}: truncated or padded file: {text}")
    if ext == ".vhdr" and len(raw.annotations):
        # Free-text BrainVision markers (as written by MNE's exporter) read back as
        # "Comment/<text>": keep the text, which is what was annotated.
        desc = [d[len("Comment/"):] if d.startswith("Comment/") else d
                for d in raw.annotations.description]
        raw.annotations.description = np.asarray(desc, dtype=str)
    return raw


def read_mat(path: str | os.PathLike, *, subject: str | None = None,
             variables: list[str] | None = None) -> dict:
    """Read a MATLAB ``.mat`` file (v4 to v7 through scipy, v7.3 through h5py).

    Parameters
    ----------
    path : path-like
    subject : str | None
        Used in error messages.
    variables : list of str | None
        Variables to load (all when ``None``); a missing one is an error.

    Returns
    -------
    data : dict
        Variable name to value. Numeric arrays keep MATLAB's axis order (v7.3 arrays,
        stored transposed by MATLAB, are transposed back); structs become
        ``scipy.io.matlab.mat_struct``-like objects with attributes (v5) or dicts
        (v7.3); cell arrays become object arrays (v5) or lists (v7.3).

    Raises
    ------
    RecordingError
        Naming the file and subject when it is missing, not a MAT-file, or lacks one
        of ``variables``.
    """
    import scipy.io

    path = Path(path)
    where = _where(path, subject)
    if not path.is_file():
        raise RecordingError(f"{where}: file not found")
    with open(path, "rb") as fid:
        head = fid.read(128)
    if head[:19] == b"MATLAB 7.3 MAT-file" or head[:8] == b"\x89HDF\r\n\x1a\n":
        data = _read_mat_h5(path, where, variables)
    else:
        try:
            data = scipy.io.loadmat(path, variable_names=variables, squeeze_me=True,
                                    struct_as_record=False)
        except NotImplementedError:  # v7.3 without the usual text header
            data = _read_mat_h5(path, where, variables)
        except Exception as err:
            raise RecordingError(f"{where}: cannot be read as a MATLAB file: {err}") from err
    data = {k: v for k, v in data.items() if not k.startswith("__")}
    missing = [v for v in (variables or []) if v not in data]
    if missing:
        raise RecordingError(f"{where}: variable(s) {missing} not in the file (it has "
                             f"{sorted(data)[:10]})")
    return data


def _read_mat_h5(path: Path, where: str, variables: list[str] | None) -> dict:
    import h5py

    def convert(obj, fid):
        if isinstance(obj, h5py.Group):
            return {k: convert(obj[k], fid) for k in obj if not k.startswith("#")}
        value = obj[()]
        if obj.dtype == h5py.ref_dtype:
            return [convert(fid[ref], fid) for ref in np.asarray(value).T.ravel()]
        if obj.attrs.get("MATLAB_class", b"") == b"char":
            return "".join(map(chr, np.asarray(value).ravel()))
        return np.squeeze(np.asarray(value).T) if np.ndim(value) else value

    try:
        with h5py.File(path, "r") as fid:
            names = [k for k in fid if not k.startswith("#")]
            return {k: convert(fid[k], fid) for k in names
                    if variables is None or k in variables}
    except OSError as err:
        raise RecordingError(f"{where}: cannot be read as a MATLAB v7.3 file: {err}") from err


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
    where = _where(data_files[0].fpath, subject)
    if data_files[0].extension in (".edf", ".bdf"):
        _check_edf_size(Path(data_files[0].fpath), data_files[0].extension, where)
    try:
        raw = read_raw_bids(data_files[0], verbose="error")
        raw.load_data()
    except Exception as err:
        raise RecordingError(f"{where}: cannot be read: {err}") from err
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


#: Cell values that spreadsheet and pandas users mean as "missing", never as a text.
MISSING_TEXTS = frozenset({"", "na", "n/a", "nan", "none", "null", "<na>", "nat", "#n/a"})


def _read_stimuli(path: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """The stimuli table as strings (no value turned into NaN) and its problems."""
    where = os.path.relpath(path)
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return None, [f"{where}: key 'stimuli': the stimuli table is not UTF-8 text "
                      f"(byte at offset {err.start}); save it as UTF-8"]
    except OSError as err:
        return None, [f"{where}: key 'stimuli': cannot be read: {err.strerror or err}"]
    import io

    try:
        table = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False,
                            na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        return None, [f"{where}: key 'stimuli': not a tab-separated table: {err}"]
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("stim_id", "text") if c not in table.columns]
    if missing:
        return None, [f"{where}: key 'stimuli': the stimuli table lacks column(s) {missing} "
                      f"(it has {list(table.columns)}; columns are separated by tabs)"]
    problems = []
    ids = table["stim_id"].str.strip()
    blank = [int(i) + 2 for i in np.flatnonzero((ids == "").to_numpy())]
    if blank:
        problems.append(f"{where}: key 'stimuli': stim_id is blank on line(s) {blank[:10]}")
    dup = ids[ids.duplicated() & (ids != "")]
    if len(dup):
        lines = [int(i) + 2 for i in np.flatnonzero(ids.isin(set(dup)).to_numpy())]
        problems.append(f"{where}: key 'stimuli': duplicate stim_id {sorted(set(dup))[:5]} "
                        f"(lines {lines[:10]}); every stimulus needs its own id")
    texts = table["text"].str.strip()
    empty = texts.str.lower().isin(MISSING_TEXTS).to_numpy()
    if empty.any():
        rows = np.flatnonzero(empty)
        shown = [f"line {i + 2} ({ids.iloc[i] or '?'}: {table['text'].iloc[i]!r})"
                 for i in rows[:5]]
        problems.append(f"{where}: key 'stimuli': {len(rows)} stimuli have no text "
                        f"(blank, NA or None): {', '.join(shown)}; features would be "
                        "computed on that placeholder")
    table["stim_id"] = ids
    return table, problems


def check_stimulus_table(path: str | os.PathLike
                         ) -> tuple[list[str], tuple[int, int] | None]:
    """Problems of a stimuli table, and its numbers of stimulus ids and distinct texts.

    Checked: UTF-8, tab-separated, columns ``stim_id`` and ``text``, no blank or
    duplicate id, no blank, ``NA`` or ``None`` text. The counts are None when the
    table cannot be read; features are computed on texts, so two ids with one text are
    one stimulus to a model.
    """
    table, problems = _read_stimuli(Path(path))
    if table is None:
        return problems, None
    texts = table["text"].str.strip()
    return problems, (int(table["stim_id"].nunique()), int(texts.nunique()))


def stimulus_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a stimuli TSV with at least ``stim_id`` and ``text``, every value as text.

    Raises
    ------
    RecordingError
        Listing the problems of :func:`check_stimulus_table`.
    """
    table, problems = _read_stimuli(Path(path))
    if problems:
        raise RecordingError("\n".join(problems))
    return table


def as_str_array(values) -> np.ndarray:
    """Strings as a numpy unicode array."""
    return np.asarray([str(v) for v in values], dtype=str)
