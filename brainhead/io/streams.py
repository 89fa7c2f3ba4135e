"""CSV/TSV streams as consumer EEG devices and LSL recorders write them.

One row per sample: a timestamp column (seconds), one column per channel, and an
optional marker column whose non-empty, non-zero values are events. There is no
header with a sampling rate: it is estimated from the timestamps, which jitter a little
(a recorder stamps samples as they arrive). Timestamps that go backwards, repeat, or
leave a gap are reported with their line, never smoothed over.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .readers import RecordingError

__all__ = ["MARKER_NAMES", "STREAM_EXTENSIONS", "TIMESTAMP_NAMES", "read_stream"]

#: File extensions read by :func:`read_stream`.
STREAM_EXTENSIONS = (".csv", ".tsv")
#: Column names (any case) taken as the timestamp when none is named.
TIMESTAMP_NAMES = ("timestamp", "timestamps", "time", "lsl_timestamp", "t", "time_s")
#: Column names (any case) taken as the markers when none is named.
MARKER_NAMES = ("marker", "markers", "event", "events", "trigger", "triggers")
_UNITS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "nV": 1e-9}
_NO_MARKER = {"", "0", "0.0", "nan", "n/a", "na", "none"}


def _find(columns: list[str], wanted: str | None, names: tuple[str, ...], what: str,
          where: str, key: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise RecordingError(f"{where}: key 'source.stream.{key}': no column {wanted!r} "
                                 f"(the file has {columns[:12]})")
        return wanted
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def _header_lines(path: Path) -> int:
    """Leading comment lines (``%`` as OpenBCI writes them, or ``#``)."""
    n = 0
    with open(path, encoding="utf-8", errors="replace") as fid:
        for line in fid:
            if not line.startswith(("%", "#")):
                break
            n += 1
    return n


def read_stream(path: str | os.PathLike, *, subject: str | None = None,
                ch_type: str = "eeg", timestamp_column: str | None = None,
                marker_column: str | None = None, channels: list[str] | None = None,
                units: str = "uV", max_jitter: float = 0.5):
    """Read a CSV/TSV stream into an MNE Raw with its markers as annotations.

    Parameters
    ----------
    path : path-like
        ``.tsv`` (tab-separated) or ``.csv`` (comma- or semicolon-separated), with a
        header row; leading lines starting with ``%`` or ``#`` are skipped.
    subject : str | None
        Used in error messages.
    ch_type : str
        MNE channel type of the channel columns (``eeg`` or ``seeg``).
    timestamp_column, marker_column : str | None
        Column names; None finds one of :data:`TIMESTAMP_NAMES` (required) and
        :data:`MARKER_NAMES` (optional), in any case.
    channels : list of str | None
        Channel columns; None takes every other column.
    units : {"V", "mV", "uV", "nV"}
        Unit of the channel values.
    max_jitter : float
        Largest deviation of one sample interval from the estimated period, as a
        fraction of the period (0.5: an interval between 0.5 and 1.5 periods passes).

    Returns
    -------
    raw : mne.io.RawArray
        Volts, ``sfreq`` = (n_samples - 1) / (last - first timestamp); annotations at
        each marker's time from the first sample, described by the marker's text.
        ``raw.info["description"]`` names the file.

    Raises
    ------
    RecordingError
        Naming the file (and subject) and the line: no timestamp column, a non-numeric
        value (an empty or NaN channel value is read as NaN, which the EEG pipeline
        refuses or drops as ``preprocess.drop_nonfinite`` says), timestamps that do not
        increase, an interval outside the jitter
        tolerance (a gap or a burst), fewer than two samples.
    """
    import mne
    import pandas as pd

    path = Path(path)
    where = f"{'sub-' + subject + ': ' if subject else ''}{os.path.relpath(path)}"
    if not path.is_file():
        raise RecordingError(f"{where}: file not found")
    skip = _header_lines(path)
    if path.suffix.lower() == ".tsv":
        sep = "\t"
    else:
        with open(path, encoding="utf-8", errors="replace") as fid:
            for _ in range(skip):
                fid.readline()
            head = fid.readline()
        sep = ";" if head.count(";") > head.count(",") else ","
    try:
        table = pd.read_csv(path, sep=sep, skiprows=skip, dtype=str, keep_default_na=False,
                            skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RecordingError(f"{where}: cannot be read as a {sep!r}-separated table: "
                             f"{err}") from err
    table.columns = [str(c).strip() for c in table.columns]
    columns = list(table.columns)
    t_col = _find(columns, timestamp_column, TIMESTAMP_NAMES, "timestamp", where,
                  "timestamp_column")
    if t_col is None:
        raise RecordingError(
            f"{where}: no timestamp column (looked for {', '.join(TIMESTAMP_NAMES)}; the file "
            f"has {columns[:12]}); name it in key 'source.stream.timestamp_column'")
    m_col = _find(columns, marker_column, MARKER_NAMES, "marker", where, "marker_column")
    if channels is None:
        channels = [c for c in columns if c not in (t_col, m_col)]
    missing = [c for c in channels if c not in columns]
    if missing:
        raise RecordingError(f"{where}: key 'source.stream.channels': no column(s) {missing} "
                             f"(the file has {columns[:12]})")
    if not channels:
        raise RecordingError(f"{where}: no channel columns besides {t_col!r}")
    if len(table) < 2:
        raise RecordingError(f"{where}: {len(table)} samples; a stream needs at least 2")
    first_line = skip + 2  # line of the first data row (1-based, after the header)

    def numeric(col: str, missing_ok: bool = False) -> np.ndarray:
        """A column as floats; with ``missing_ok`` an empty or NaN cell is NaN (a lost
        sample, left to the pipeline: an error, or the channel dropped on request)."""
        text = table[col].str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(float)
        missing = text.str.lower().isin(("", "nan", "na", "n/a")).to_numpy()
        bad = np.flatnonzero(~np.isfinite(values) & ~(missing & missing_ok))
        if len(bad):
            raise RecordingError(
                f"{where}: column {col!r} has {len(bad)} value(s) that are not finite "
                f"numbers (first on line {first_line + bad[0]}: "
                f"{table[col].iloc[bad[0]]!r})")
        return values

    stamps = numeric(t_col)
    steps = np.diff(stamps)
    back = np.flatnonzero(steps <= 0)
    if len(back):
        i = back[0]
        raise RecordingError(
            f"{where}: timestamps in column {t_col!r} are not increasing at {len(back)} "
            f"row(s) (first on line {first_line + i + 1}: {stamps[i + 1]:.6f} after "
            f"{stamps[i]:.6f}); the recorder restarted or rows were reordered")
    sfreq = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    period = 1.0 / sfreq
    off = np.abs(steps - period) / period
    worst = int(np.argmax(off))
    if off[worst] > max_jitter:
        raise RecordingError(
            f"{where}: sample interval on line {first_line + worst + 1} is "
            f"{steps[worst]:.6g} s, {off[worst]:.0%} off the period {period:.6g} s "
            f"({sfreq:.6g} Hz estimated from the timestamps), more than key "
            f"'source.stream.max_jitter' ({max_jitter:.0%}): a gap or a burst in the stream")
    data = np.stack([numeric(c, missing_ok=True) for c in channels]) * _UNITS[units]
    info = mne.create_info(list(channels), sfreq, ch_type)
    raw = mne.io.RawArray(data, info, verbose="error")
    if m_col is not None:
        marks = table[m_col].str.strip()
        keep = ~marks.str.lower().isin(_NO_MARKER).to_numpy()
        if keep.any():
            desc = [m[:-2] if m.endswith(".0") and m[:-2].lstrip("-").isdigit() else m
                    for m in marks[keep]]
            raw.set_annotations(mne.Annotations(stamps[keep] - stamps[0], 0.0, desc))
    raw.info["description"] = str(path)
    return raw
