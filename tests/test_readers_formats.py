"""Every raw format that :func:`brainhead.io.readers.read_raw` accepts, on tiny files.

The files are written here: EDF, BrainVision, EEGLAB and FIF through MNE's writers,
BDF through edfio, GDF 1.25 byte by byte after the format's specification (no Python
writer exists). Each is read back and compared with the data that went in.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from brainhead.io.readers import RecordingError, read_mat, read_raw

CH_NAMES = ["Fz", "Cz", "Pz", "Oz"]
SFREQ = 100.0
N_TIMES = 300


def _signals() -> np.ndarray:
    """Smooth test signals in volts (tens of microvolts), one per channel."""
    t = np.arange(N_TIMES) / SFREQ
    return np.stack([20e-6 * np.sin(2 * np.pi * (3 + k) * t + k) for k in range(len(CH_NAMES))])


def _raw():
    import mne

    raw = mne.io.RawArray(_signals(), mne.create_info(CH_NAMES, SFREQ, "eeg"), verbose="error")
    raw.set_annotations(mne.Annotations([0.5, 1.5], [0.0, 0.0], ["left", "right"]))
    return raw


def _write_gdf(path: Path, data_uv: np.ndarray, events: list[tuple[int, int]]) -> None:
    """Write a GDF 1.25 file: float32 samples in microvolts, 1-s records, an event table.

    ``events`` are (sample, type code) pairs.
    """
    n_ch, n_times = data_uv.shape
    n_per_rec = int(SFREQ)
    n_rec = n_times // n_per_rec
    head = b"GDF 1.25" + b"X X".ljust(80) + b"tiny".ljust(80) + b"2024010112000000"
    head += struct.pack("<q", 256 * (n_ch + 1)) + bytes(24) + bytes(20)
    head += struct.pack("<q", n_rec) + struct.pack("<II", 1, 1) + struct.pack("<I", n_ch)
    assert len(head) == 256
    chans = b"".join(n.encode().ljust(16) for n in CH_NAMES[:n_ch])
    chans += b" " * 80 * n_ch + b"".join(b"uV".ljust(8) for _ in range(n_ch))
    chans += struct.pack(f"<{n_ch}d", *[-1000.0] * n_ch)
    chans += struct.pack(f"<{n_ch}d", *[1000.0] * n_ch)
    chans += struct.pack(f"<{n_ch}q", *[-1000] * n_ch)
    chans += struct.pack(f"<{n_ch}q", *[1000] * n_ch)
    chans += b" " * 80 * n_ch
    chans += struct.pack(f"<{n_ch}i", *[n_per_rec] * n_ch)
    chans += struct.pack(f"<{n_ch}i", *[16] * n_ch)  # 16 = float32
    chans += bytes(32 * n_ch)
    body = b"".join(
        data_uv[:, r * n_per_rec:(r + 1) * n_per_rec].astype("<f4").tobytes()
        for r in range(n_rec)
    )
    sr = int(SFREQ)
    table = bytes([1]) + bytes([sr & 255, (sr >> 8) & 255, (sr >> 16) & 255])
    table += struct.pack("<I", len(events))
    table += struct.pack(f"<{len(events)}I", *[s + 1 for s, _ in events])
    table += struct.pack(f"<{len(events)}H", *[c for _, c in events])
    path.write_bytes(head + chans + body + table)


def _write(fmt: str, folder: Path) -> Path:
    import mne

    raw = _raw()
    if fmt == "edf":
        path = folder / "rec.edf"
        mne.export.export_raw(path, raw, fmt="edf", verbose="error")
    elif fmt == "brainvision":
        path = folder / "rec.vhdr"
        mne.export.export_raw(path, raw, fmt="brainvision", verbose="error")
    elif fmt == "eeglab":
        path = folder / "rec.set"
        mne.export.export_raw(path, raw, fmt="eeglab", verbose="error")
    elif fmt == "fif":
        path = folder / "rec_raw.fif"
        raw.save(path, verbose="error")
    elif fmt == "bdf":
        import edfio

        path = folder / "rec.bdf"
        signals = [edfio.BdfSignal(x * 1e6, sampling_frequency=SFREQ, label=name,
                                   physical_dimension="uV", physical_range=(-1000, 1000))
                   for name, x in zip(CH_NAMES, _signals())]
        bdf = edfio.Bdf(signals, annotations=[edfio.EdfAnnotation(0.5, None, "left"),
                                              edfio.EdfAnnotation(1.5, None, "right")])
        bdf.write(path)
    elif fmt == "gdf":
        path = folder / "rec.gdf"
        _write_gdf(path, _signals() * 1e6, [(50, 769), (150, 770)])
    else:  # pragma: no cover - test table typo
        raise ValueError(fmt)
    return path


FORMATS = ["edf", "bdf", "brainvision", "fif", "eeglab", "gdf"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_each_format(fmt, tmp_path):
    path = _write(fmt, tmp_path)
    raw = read_raw(path, subject="t01")
    names = [n for n in raw.ch_names if n in CH_NAMES]
    assert names == CH_NAMES
    assert raw.info["sfreq"] == SFREQ
    data = raw.get_data(picks=CH_NAMES)
    assert data.shape == (4, N_TIMES)
    # EDF stores 16-bit integers over the exported range: allow its quantisation step.
    atol = 0.5e-6 if fmt == "edf" else 1e-8
    np.testing.assert_allclose(data, _signals(), atol=atol)
    onsets = np.round(raw.annotations.onset, 3).tolist()
    assert onsets == [0.5, 1.5]
    if fmt != "gdf":  # GDF stores event type codes, MNE reads them as their numbers
        assert list(raw.annotations.description) == ["left", "right"]
    else:
        assert list(raw.annotations.description) == ["769", "770"]


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_truncated_edf_bdf_named(fmt, tmp_path):
    path = _write(fmt, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(RecordingError,
                       match=r"sub-t01: .*rec\.[eb]df: cannot be read: truncated") as err:
        read_raw(path, subject="t01")
    assert "data records" in str(err.value)


def test_header_only_edf(tmp_path):
    path = tmp_path / "rec.edf"
    path.write_bytes(b"0" * 100)
    with pytest.raises(RecordingError,
                       match="rec.edf: cannot be read: not a valid EDF file: .*256-byte"):
        read_raw(path, subject="t01")


def test_garbage_files_named(tmp_path):
    for name in ("rec.gdf", "rec.set", "rec_raw.fif"):
        path = tmp_path / name
        path.write_bytes(b"\x00\x01garbage" * 10)
        with pytest.raises(RecordingError, match=rf"sub-t01: .*{name.replace('.', '[.]')}: "
                                                 "cannot be read"):
            read_raw(path, subject="t01")


def test_brainvision_missing_data_file(tmp_path):
    path = _write("brainvision", tmp_path)
    path.with_suffix(".eeg").unlink()
    with pytest.raises(RecordingError, match="DataFile 'rec.eeg' is not beside it"):
        read_raw(path, subject="t01")


def test_events_outside_recording(tmp_path):
    import edfio

    path = tmp_path / "late.edf"
    signals = [edfio.EdfSignal(np.zeros(300), sampling_frequency=SFREQ, label=name,
                               physical_range=(-1, 1)) for name in ("Cz", "Pz")]
    edfio.Edf(signals, annotations=[edfio.EdfAnnotation(1.0, None, "left"),
                                    edfio.EdfAnnotation(50.0, None, "right")]).write(path)
    with pytest.raises(RecordingError, match=r"sub-t01: .*late\.edf: events outside the "
                                             r"recording: Omitted 1 annotation"):
        read_raw(path, subject="t01")


def test_duplicate_channel_names(tmp_path):
    import edfio

    path = tmp_path / "dup.edf"
    signals = [edfio.EdfSignal(np.zeros(200), sampling_frequency=SFREQ, label=name,
                               physical_range=(-1, 1)) for name in ("Cz", "Cz", "Pz")]
    edfio.Edf(signals).write(path)
    with pytest.raises(RecordingError, match=r"sub-t01: .*dup\.edf: duplicate channel "
                                             r"names \{'Cz'\}"):
        read_raw(path, subject="t01")


def test_unsupported_and_missing(tmp_path):
    with pytest.raises(RecordingError, match=r"unsupported file type '\.txt'"):
        read_raw(tmp_path / "a.txt", subject="t01")
    with pytest.raises(RecordingError, match=r"sub-t01: .*nope\.edf: file not found"):
        read_raw(tmp_path / "nope.edf", subject="t01")


def test_read_mat_v5_and_v73(tmp_path):
    import h5py
    import scipy.io

    arr = np.arange(24, dtype=float).reshape(2, 3, 4)
    scipy.io.savemat(tmp_path / "v5.mat", {"data": arr, "labels": np.array([1, 2])})
    out = read_mat(tmp_path / "v5.mat", subject="t01")
    np.testing.assert_array_equal(out["data"], arr)
    assert sorted(out) == ["data", "labels"]
    # v7.3: HDF5 with a 512-byte header; MATLAB stores arrays in column-major order.
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as fid:
        fid.create_dataset("data", data=arr.T)
        fid["data"].attrs["MATLAB_class"] = b"double"
    with open(path, "r+b") as fid:
        fid.write(b"MATLAB 7.3 MAT-file".ljust(116))
    np.testing.assert_array_equal(read_mat(path, subject="t01")["data"], arr)
    with pytest.raises(RecordingError, match=r"v5\.mat: variable\(s\) \['x'\] not in"):
        read_mat(tmp_path / "v5.mat", subject="t01", variables=["x"])
    (tmp_path / "bad.mat").write_bytes(b"nonsense" * 20)
    with pytest.raises(RecordingError, match=r"sub-t01: .*bad\.mat: cannot be read"):
        read_mat(tmp_path / "bad.mat", subject="t01")
