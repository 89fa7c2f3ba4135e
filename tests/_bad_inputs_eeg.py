"""Bad EEG inputs: each case writes broken files and names the error it must raise.

``CASES`` is a list of ``(case_id, make)``. ``make(study_dir)`` writes the files it
needs under ``study_dir`` and returns ``(subject_mapping, expected)``: the mapping of a
``subjects/sub-<case_id>.yaml`` file (paths relative to ``study_dir``; the subject id is
``case_id``) and a substring of the error message. The study around it is plain:
``name``, ``seed``, ``stimuli`` and default preprocessing. Every error must name the
subject and the file and be raised before ``responses.h5`` exists.

Used by ``tests/test_preprocess_eeg.py`` (through ``preprocess_subject``) and by the
workflow test (through snakemake).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

NAMES_10_20 = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Cz", "Pz"]
SFREQ = 100.0


def _signals(n_ch: int, n_times: int, seed: int = 0) -> np.ndarray:
    """Noise in microvolts (std 10)."""
    return np.random.default_rng(seed).normal(0.0, 10.0, (n_ch, n_times))


def _edf(path: Path, names: list[str], *, seconds: float = 20.0, sfreq: float = SFREQ,
         events: tuple[tuple[float, str], ...] = ((2.0, "stim"), (6.0, "stim"),
                                                   (10.0, "stim")),
         data_uv: np.ndarray | None = None) -> Path:
    """Write an EDF+ file (microvolts) with annotations, through edfio."""
    import edfio

    n = int(seconds * sfreq)
    data = _signals(len(names), n) if data_uv is None else data_uv
    signals = [edfio.EdfSignal(x, sampling_frequency=sfreq, label=name,
                               physical_dimension="uV", physical_range=(-5000, 5000))
               for name, x in zip(names, data)]
    annotations = [edfio.EdfAnnotation(onset, None, text) for onset, text in events]
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals, annotations=annotations).write(path)
    return path


def _subject(case: str, source: dict, **extra) -> dict:
    return {"subject": case, "modality": "eeg", "source": source, **extra}


def edf_truncated(study_dir: Path):
    path = _edf(study_dir / "raw" / "trunc.edf", NAMES_10_20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return _subject("edftruncated", {"files": ["raw/trunc.edf"]}), "truncated EDF file"


def nan_channel(study_dir: Path):
    import mne

    data = _signals(len(NAMES_10_20), 2000) * 1e-6
    data[3, 500:600] = np.nan
    raw = mne.io.RawArray(data, mne.create_info(NAMES_10_20, SFREQ, "eeg"), verbose="error")
    raw.set_annotations(mne.Annotations([2.0, 6.0], [0.0, 0.0], ["stim", "stim"]))
    path = study_dir / "raw" / "nan_raw.fif"
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, verbose="error")
    return (_subject("nanchannel", {"files": ["raw/nan_raw.fif"]}),
            "channels ['F4'] contain NaN or infinite values")


def flat_channels(study_dir: Path):
    data = _signals(len(NAMES_10_20), 2000)
    data[:4] = 0.0  # 4 of 12 channels flat: more than a quarter
    _edf(study_dir / "raw" / "flat.edf", NAMES_10_20, data_uv=data)
    return (_subject("flatchannels", {"files": ["raw/flat.edf"]},
                     preprocess={"detect_bads": True}),
            "4 of 12 EEG channels are bad")


def duplicate_channels(study_dir: Path):
    _edf(study_dir / "raw" / "dup.edf", ["Cz", "Pz", "Cz", "Oz"])
    return _subject("dupchannels", {"files": ["raw/dup.edf"]}), "duplicate channel names"


def unknown_montage_channels(study_dir: Path):
    _edf(study_dir / "raw" / "names.edf", ["Cz", "Pz", "Chan3", "Chan4"])
    return (_subject("unknownmontage", {"files": ["raw/names.edf"]}),
            "channels ['Chan3', 'Chan4'] are not in montage 'colin27_1020'")


def events_outside(study_dir: Path):
    _edf(study_dir / "raw" / "late.edf", NAMES_10_20, events=((2.0, "stim"), (55.0, "stim")))
    return (_subject("eventsoutside", {"files": ["raw/late.edf"]}),
            "events outside the recording")


def no_events_of_type(study_dir: Path):
    _edf(study_dir / "raw" / "noT1.edf", NAMES_10_20, events=((2.0, "T0"), (6.0, "T0")))
    return (_subject("noeventsoftype", {"files": ["raw/noT1.edf"]},
                     preprocess={"event_id": {"T1": "left", "T2": "right"}}),
            "no events of the type(s) ['T1', 'T2']")


def sfreq_mismatch(study_dir: Path):
    _edf(study_dir / "raw" / "run1.edf", NAMES_10_20, sfreq=100.0)
    _edf(study_dir / "raw" / "run2.edf", NAMES_10_20, sfreq=200.0)
    return (_subject("sfreqmismatch", {"files": ["raw/run1.edf", "raw/run2.edf"]}),
            "sampling rate 200.0 Hz differs from the first run's 100.0 Hz")


def missing_reference_channels(study_dir: Path):
    _edf(study_dir / "raw" / "ref.edf", NAMES_10_20)
    return (_subject("missingref", {"files": ["raw/ref.edf"]},
                     preprocess={"reference": ["M1", "M2"]}),
            "reference channels ['M1', 'M2'] are not in the recording")


def deap_wrong_shape(study_dir: Path):
    import scipy.io

    folder = study_dir / "deap" / "data_preprocessed_matlab"
    folder.mkdir(parents=True)
    scipy.io.savemat(folder / "s01.mat", {"data": np.zeros((40, 32, 100), np.float32),
                                         "labels": np.full((40, 4), 5.0)})
    return (_subject("deapshape", {"dataset": "deap", "root": "deap", "subject": 1}),
            "variable 'data' has shape (40, 32, 100), expected (40, 40, 8064)")


def seed_label_count(study_dir: Path):
    import scipy.io

    folder = study_dir / "seed"
    folder.mkdir(parents=True)
    trials = {f"ab_eeg{k}": np.zeros((62, 400), np.float32) for k in range(1, 16)}
    scipy.io.savemat(folder / "1_20130101.mat", trials)
    scipy.io.savemat(folder / "label.mat", {"label": np.array([[1, 0, -1] * 4 + [1, 0]])})
    return (_subject("seedlabels", {"dataset": "seed", "root": "seed", "subject": 1}),
            "variable 'label' has 14 values")


def dreamer_wrong_clip(study_dir: Path):
    import scipy.io

    folder = study_dir / "dreamer"
    folder.mkdir(parents=True)
    stimuli = np.empty((18, 1), dtype=object)
    for k in range(18):
        stimuli[k, 0] = np.zeros((256, 13))  # 13 channels instead of 14
    scores = np.full((18, 1), 3.0)
    person = {"EEG": {"stimuli": stimuli, "baseline": stimuli},
              "ScoreValence": scores, "ScoreArousal": scores, "ScoreDominance": scores}
    data = np.empty((1, 1), dtype=object)
    data[0, 0] = person
    scipy.io.savemat(folder / "DREAMER.mat", {"DREAMER": {"Data": data}})
    return (_subject("dreamershape", {"dataset": "dreamer", "root": "dreamer",
                                      "subject": 1}),
            "EEG.stimuli{1} has shape (256, 13), expected (n_samples, 14)")


def eegmmidb_missing_run(study_dir: Path):
    names = [f"{n}." if len(n) == 3 else f"{n}.." for n in ("Fc5", "Cz", "Pz", "Oz")]
    _edf(study_dir / "mmi" / "S001" / "S001R04.edf", names,
         events=((1.0, "T0"), (5.0, "T1"), (9.0, "T2")))
    return (_subject("mmimissingrun", {"dataset": "eegmmidb", "root": "mmi", "subject": 1,
                                       "runs": [4, 8]}),
            "S001R08.edf: file not found")


def missing_file(study_dir: Path):
    (study_dir / "raw").mkdir(parents=True, exist_ok=True)
    return (_subject("missingfile", {"files": ["raw/absent.edf"]}),
            "file not found")


def write_stream(path: Path, names: list[str], *, sfreq: float = 250.0, seconds: float = 20.0,
                 jitter: float = 0.1, sep: str = ",", markers: dict[int, str] | None = None,
                 t0: float = 10234.5, seed: int = 0, header: str = "") -> Path:
    """A stream as an LSL recorder writes it: stamps with jitter, microvolts, markers.

    ``jitter`` is the standard deviation of each stamp's error as a fraction of the
    period; ``markers`` maps sample index -> marker text (every other row is empty).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    stamps = t0 + np.arange(n) / sfreq + rng.normal(0, jitter / sfreq / 4, n)
    data = _signals(len(names), n, seed)
    markers = markers or {}
    lines = [sep.join(["timestamp", *names, "marker"])]
    for k in range(n):
        lines.append(sep.join([f"{stamps[k]:.6f}", *(f"{x:.4f}" for x in data[:, k]),
                               markers.get(k, "")]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def stream_backwards(study_dir: Path):
    path = write_stream(study_dir / "raw" / "back.csv", NAMES_10_20, markers={500: "stim"})
    lines = path.read_text().splitlines()
    lines[1001], lines[1002] = lines[1002], lines[1001]  # two rows swapped
    path.write_text("\n".join(lines) + "\n")
    return (_subject("streamback", {"files": ["raw/back.csv"]}),
            "timestamps in column 'timestamp' are not increasing at 1 row(s) (first on line 1003")


def stream_gap(study_dir: Path):
    path = write_stream(study_dir / "raw" / "gap.tsv", NAMES_10_20, sep="\t",
                        markers={500: "stim"})
    lines = path.read_text().splitlines()
    del lines[2000:2100]  # 100 samples lost
    path.write_text("\n".join(lines) + "\n")
    return (_subject("streamgap", {"files": ["raw/gap.tsv"]}),
            "a gap or a burst in the stream")


def stream_no_timestamp(study_dir: Path):
    path = write_stream(study_dir / "raw" / "nostamp.csv", NAMES_10_20)
    text = path.read_text().replace("timestamp,", "clock,", 1)
    path.write_text(text)
    return (_subject("streamnostamp", {"files": ["raw/nostamp.csv"]}),
            "no timestamp column")


def stream_text_value(study_dir: Path):
    path = write_stream(study_dir / "raw" / "text.csv", NAMES_10_20, markers={500: "stim"})
    lines = path.read_text().splitlines()
    cells = lines[301].split(",")
    cells[3] = "overflow"
    lines[301] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return (_subject("streamtext", {"files": ["raw/text.csv"]}),
            "column 'F3' has 1 value(s) that are not finite numbers (first on line 302")


def rename_clash(study_dir: Path):
    _edf(study_dir / "raw" / "clash.edf", ["EEG Cz", "Cz", "EEG Pz", "EEG Oz"])
    return (_subject("renameclash", {"files": ["raw/clash.edf"]},
                     preprocess={"strip_prefix": "EEG "}),
            "renaming gives two channels one name ('EEG Cz' and 'Cz' -> 'Cz')")


def rename_unknown(study_dir: Path):
    _edf(study_dir / "raw" / "ren.edf", NAMES_10_20)
    return (_subject("renameunknown", {"files": ["raw/ren.edf"]},
                     preprocess={"rename_channels": {"T7": "T3"}}),
            "key 'preprocess.rename_channels': ['T7'] are not channels of this recording")


def sfreq_drift_too_large(study_dir: Path):
    write_stream(study_dir / "raw" / "d1.csv", NAMES_10_20, sfreq=256.0, jitter=0.0,
                 markers={500: "stim"})
    write_stream(study_dir / "raw" / "d2.csv", NAMES_10_20, sfreq=256.5, jitter=0.0,
                 markers={500: "stim"})
    return (_subject("sfreqdrift", {"files": ["raw/d1.csv", "raw/d2.csv"]}),
            "more than key 'preprocess.sfreq_tolerance_hz' (0.01 Hz) allows")


#: (case_id, make) pairs; case ids double as subject ids.
CASES: list[tuple[str, Callable[[Path], tuple[dict, str]]]] = [
    ("edftruncated", edf_truncated),
    ("nanchannel", nan_channel),
    ("flatchannels", flat_channels),
    ("dupchannels", duplicate_channels),
    ("unknownmontage", unknown_montage_channels),
    ("eventsoutside", events_outside),
    ("noeventsoftype", no_events_of_type),
    ("sfreqmismatch", sfreq_mismatch),
    ("missingref", missing_reference_channels),
    ("deapshape", deap_wrong_shape),
    ("seedlabels", seed_label_count),
    ("dreamershape", dreamer_wrong_clip),
    ("mmimissingrun", eegmmidb_missing_run),
    ("missingfile", missing_file),
    ("streamback", stream_backwards),
    ("streamgap", stream_gap),
    ("streamnostamp", stream_no_timestamp),
    ("streamtext", stream_text_value),
    ("renameclash", rename_clash),
    ("renameunknown", rename_unknown),
    ("sfreqdrift", sfreq_drift_too_large),
]
