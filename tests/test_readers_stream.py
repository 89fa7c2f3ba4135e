"""CSV/TSV streams (consumer devices, LSL recorders): rate from jittered stamps, markers,
units, header lines, and the whole EEG pipeline on a stream. The broken streams are
cases of ``tests/_bad_inputs_eeg.py`` (through preprocessing and Snakemake)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from _bad_inputs_eeg import NAMES_10_20, write_stream

from brainhead.io.readers import RecordingError, read_raw
from brainhead.io.streams import read_stream


def test_rate_from_jittered_stamps_and_markers(tmp_path):
    path = write_stream(tmp_path / "rec.csv", ["Fz", "Cz"], sfreq=256.0, seconds=30.0,
                        jitter=0.2, markers={512: "12", 2560: "stim/s3"})
    raw = read_stream(path)
    assert raw.info["sfreq"] == pytest.approx(256.0, abs=0.005)
    assert raw.ch_names == ["Fz", "Cz"] and raw.n_times == 30 * 256
    assert raw.get_channel_types() == ["eeg", "eeg"]
    assert list(raw.annotations.description) == ["12", "stim/s3"]
    np.testing.assert_allclose(raw.annotations.onset, [2.0, 10.0], atol=0.002)
    # microvolts in the file, volts in MNE
    first = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2), max_rows=1)
    np.testing.assert_allclose(raw.get_data()[:, 0], first * 1e-6, rtol=1e-6)


def test_tsv_semicolons_units_and_header_lines(tmp_path):
    tsv = write_stream(tmp_path / "rec.tsv", ["O1"], sfreq=128.0, sep="\t", jitter=0.0)
    assert read_stream(tsv).info["sfreq"] == pytest.approx(128.0, rel=1e-6)
    semi = write_stream(tmp_path / "rec.csv", ["O1", "O2"], sfreq=200.0, sep=";",
                        header="%OpenBCI Raw EEG Data\n%Sample Rate = 200 Hz\n")
    raw = read_stream(semi, units="mV", ch_type="seeg")
    assert raw.ch_names == ["O1", "O2"] and raw.get_channel_types() == ["seeg", "seeg"]
    assert raw.info["sfreq"] == pytest.approx(200.0, abs=0.01)
    volts = np.loadtxt(semi, delimiter=";", skiprows=3, usecols=(1,), max_rows=1)
    assert raw.get_data()[0, 0] == pytest.approx(volts * 1e-3)


def test_named_columns_and_channel_subset(tmp_path):
    path = tmp_path / "rec.csv"
    n = 500
    t = 5.0 + np.arange(n) / 100.0
    rows = ["clock,A,B,trig,aux"] + [f"{t[k]:.4f},{k},{-k},{'go' if k == 50 else '0'},{k}"
                                    for k in range(n)]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(RecordingError, match=r"rec\.csv: no timestamp column .*'source\.stream"
                                             r"\.timestamp_column'"):
        read_stream(path)
    raw = read_stream(path, timestamp_column="clock", marker_column="trig",
                      channels=["A", "B"], units="V")
    assert raw.ch_names == ["A", "B"]
    assert list(raw.annotations.description) == ["go"]
    assert raw.annotations.onset[0] == pytest.approx(0.5)
    with pytest.raises(RecordingError, match=r"key 'source\.stream\.channels': no column"):
        read_stream(path, timestamp_column="clock", channels=["A", "C"])
    with pytest.raises(RecordingError, match=r"key 'source\.stream\.marker_column': no column "
                                             r"'mark'"):
        read_stream(path, timestamp_column="clock", marker_column="mark")


def test_read_raw_dispatches_streams_with_options(tmp_path):
    path = write_stream(tmp_path / "rec.csv", ["Cz"], sfreq=100.0, jitter=0.0)
    raw = read_raw(path, subject="x1", stream={"units": "V"})
    assert raw.get_data()[0].std() > 1.0  # microvolt-sized numbers read as volts
    with pytest.raises(RecordingError, match=r"sub-x1: .*\.txt: unsupported file type '\.txt';"
                                             r" expected one of .*'\.csv', '\.tsv'"):
        read_raw(tmp_path / "rec.txt", subject="x1")


def test_jitter_tolerance_is_configurable(tmp_path):
    path = write_stream(tmp_path / "rec.csv", ["Cz"], sfreq=100.0, jitter=0.0)
    lines = path.read_text().splitlines()
    stamp = float(lines[201].split(",")[0])
    lines[201] = ",".join([f"{stamp + 0.004:.6f}"] + lines[201].split(",")[1:])  # 40% late
    path.write_text("\n".join(lines) + "\n")
    assert read_stream(path).n_times == 2000  # within the default 50 %
    with pytest.raises(RecordingError, match=r"line 202 is 0\.014 s, 40% off the period "
                                             r"0\.01 s .*more than key "
                                             r"'source\.stream\.max_jitter' \(30%\)"):
        read_stream(path, max_jitter=0.3)


def test_stream_subject_through_preprocessing(tmp_path):
    """A study whose subject is a CSV stream with markers, epoched on them."""
    from brainhead.preprocess import run_preprocessing
    from brainhead.specs import load_study

    markers = {int(s * 250): f"stim/s{k}" for k, s in enumerate(range(2, 18, 2))}
    write_stream(tmp_path / "raw" / "rec.csv", NAMES_10_20, sfreq=250.0, jitter=0.3,
                 markers=markers)
    (tmp_path / "stimuli.tsv").write_text(
        "stim_id\ttext\n" + "".join(f"s{k}\tsentence {k}\n" for k in range(8)))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(
        {"name": "s", "seed": 0, "stimuli": "stimuli.tsv"}))
    (tmp_path / "subjects").mkdir()
    (tmp_path / "subjects" / "sub-01.yaml").write_text(yaml.safe_dump(
        {"subject": "01", "modality": "eeg",
         "source": {"files": ["raw/rec.csv"], "stream": {"max_jitter": 0.5}}}))
    table = run_preprocessing(load_study(tmp_path), "01", tmp_path / "results")
    view = table.view("stimulus")
    assert view.X.shape == (8, 12)
    assert sorted(view.rows["stim_id"]) == [f"s{k}" for k in range(8)]
    assert table.info["sfreq"] == pytest.approx(250.0, abs=0.01)
    assert np.isfinite(table.targets.coords).all()  # 10-20 names found in the montage


def test_lost_samples_are_nan_for_the_pipeline(tmp_path):
    """An empty or NaN channel cell is a lost sample: the pipeline refuses the channel
    with its name, or drops it when preprocess.drop_nonfinite asks for it."""
    from brainhead.preprocess import run_preprocessing
    from brainhead.specs import load_study

    path = write_stream(tmp_path / "raw" / "rec.csv", NAMES_10_20, sfreq=100.0,
                        markers={200: "stim", 600: "stim", 1000: "stim"})
    lines = path.read_text().splitlines()
    for k in (400, 401):
        cells = lines[k].split(",")
        cells[2] = "" if k == 400 else "NaN"  # Fp2
        lines[k] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    raw = read_stream(path)
    assert np.isnan(raw.get_data()[1, 399:401]).all()
    (tmp_path / "stimuli.tsv").write_text(
        "stim_id\ttext\n" + "".join(f"s{k}\tsentence {k}\n" for k in range(8)))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(
        {"name": "s", "seed": 0, "stimuli": "stimuli.tsv"}))
    (tmp_path / "subjects").mkdir()
    sub = {"subject": "01", "modality": "eeg", "source": {"files": ["raw/rec.csv"]}}
    (tmp_path / "subjects" / "sub-01.yaml").write_text(yaml.safe_dump(sub))
    with pytest.raises(RecordingError, match=r"sub-01: .*rec\.csv: channels \['Fp2'\] contain "
                                             r"NaN .*key 'preprocess\.drop_nonfinite'"):
        run_preprocessing(load_study(tmp_path), "01", tmp_path / "results")
    sub["preprocess"] = {"drop_nonfinite": True}
    (tmp_path / "subjects" / "sub-01.yaml").write_text(yaml.safe_dump(sub))
    table = run_preprocessing(load_study(tmp_path), "01", tmp_path / "results")
    assert "Fp2" not in table.targets.name and table.info["n_nonfinite_channels"] == 1
