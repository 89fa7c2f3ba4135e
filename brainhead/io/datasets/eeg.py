"""Adapters of public EEG datasets (registered on import).

Each adapter reads a dataset in the layout its authors publish and returns what
:mod:`brainhead.preprocess` consumes:

``eegmmidb``  PhysioNet EEG Motor Movement/Imagery (EDF+) -> list of ``Run``
``deap``      DEAP, preprocessed MATLAB release          -> ``mne.EpochsArray``
``seed``      SEED, preprocessed release                 -> ``mne.EpochsArray``
``dreamer``   DREAMER (``DREAMER.mat``)                  -> ``mne.EpochsArray``

Epochs carry the metadata columns ``condition`` (the label), ``stim_id`` (the
stimulus, identical across subjects: ``video07``, ``clip03``) and ``group`` (the trial,
so grouped cross-validation never splits the segments of one trial), plus the
dataset's raw ratings where it has them.

Only MATLAB files are read (:func:`brainhead.io.readers.read_mat`); the pickled
"python" release of DEAP is not supported, because unpickling runs code from the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..readers import RecordingError, read_mat, read_raw
from . import Option, register

__all__ = ["DEAP_CHANNELS", "DREAMER_CHANNELS", "EEGMMIDB_TASKS", "SEED_CHANNELS",
           "load_deap", "load_dreamer", "load_eegmmidb", "load_seed"]

#: eegmmidb run number -> (condition of T1, condition of T2); T0 is rest everywhere.
EEGMMIDB_TASKS: dict[int, tuple[str, str]] = {
    **{r: ("left", "right") for r in (3, 4, 7, 8, 11, 12)},  # real (3,7,11) / imagined fist
    **{r: ("fists", "feet") for r in (5, 6, 9, 10, 13, 14)},  # real / imagined fists or feet
}

#: DEAP preprocessed release: 32 EEG channels in the Geneva order, then 8 peripheral.
DEAP_CHANNELS = ("Fp1 AF3 F3 F7 FC5 FC1 C3 T7 CP5 CP1 P3 P7 PO3 O1 Oz Pz "
                 "Fp2 AF4 Fz F4 F8 FC6 FC2 Cz C4 T8 CP6 CP2 P4 P8 PO4 O2").split()
DEAP_PERIPHERAL = (("hEOG", "eog"), ("vEOG", "eog"), ("zEMG", "emg"), ("tEMG", "emg"),
                   ("GSR", "gsr"), ("Resp", "resp"), ("Plet", "bio"), ("Temp", "temperature"))
DEAP_LABELS = ("valence", "arousal", "dominance", "liking")

#: SEED's 62 channels, in the order of its channel list (``channel-order.xlsx``).
SEED_CHANNELS = ("FP1 FPZ FP2 AF3 AF4 F7 F5 F3 F1 FZ F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCZ FC2 "
                 "FC4 FC6 FT8 T7 C5 C3 C1 CZ C2 C4 C6 T8 TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 "
                 "TP8 P7 P5 P3 P1 PZ P2 P4 P6 P8 PO7 PO5 PO3 POZ PO4 PO6 PO8 CB1 O1 OZ O2 "
                 "CB2").split()
SEED_CONDITIONS = {-1: "negative", 0: "neutral", 1: "positive"}

#: DREAMER: the 14 Emotiv EPOC channels, in the dataset's column order.
DREAMER_CHANNELS = "AF3 F7 F3 FC5 T7 P7 O1 O2 P8 T8 FC6 F4 F8 AF4".split()
DREAMER_SCORES = {"valence": "ScoreValence", "arousal": "ScoreArousal",
                  "dominance": "ScoreDominance"}

_SEGMENT = Option((int, float, type(None)), None,
                  "cut every trial into non-overlapping windows of this many seconds "
                  "(each a row; the tail shorter than a window is dropped); null keeps "
                  "whole trials, cropped to the shortest one")


def _where(path: Path, spec) -> str:
    import os

    return f"sub-{spec.subject}: {os.path.relpath(path)}"


def _mne_names(names: list[str]) -> list[str]:
    """Channel names spelled as in MNE's 10-05 montages (``FPZ`` -> ``Fpz``)."""
    import mne

    ref = {n.lower(): n for n in mne.channels.make_standard_montage("colin27_1005").ch_names}
    return [ref.get(n.lower(), n) for n in names]


def _trials_to_epochs(trials: list[np.ndarray], *, sfreq: float, ch_names: list[str],
                      ch_types: list[str] | str, meta: pd.DataFrame, segment: float | None,
                      tmin: float, where: str, source: Path):
    """Epochs from per-trial arrays ``(n_channels, n_times)`` in volts.

    ``source`` (the file read) is kept in ``info["description"]``.

    With ``segment`` each trial is cut into windows (rows inherit the trial's metadata);
    without, trials are cropped to the shortest one.
    """
    import mne

    info = mne.create_info(ch_names, sfreq, ch_types)
    if segment is None:
        n = min(t.shape[1] for t in trials)
        data = np.stack([t[:, :n] for t in trials])
        rows = meta.reset_index(drop=True)
    else:
        size = int(round(segment * sfreq))
        if size < 2:
            raise RecordingError(f"{where}: key 'source.segment': {segment} s is shorter "
                                 f"than two samples at {sfreq} Hz")
        chunks, index = [], []
        for k, trial in enumerate(trials):
            n_win = trial.shape[1] // size
            chunks += [trial[:, w * size:(w + 1) * size] for w in range(n_win)]
            index += [k] * n_win
        if not chunks:
            raise RecordingError(f"{where}: key 'source.segment': every trial is shorter "
                                 f"than one {segment} s window")
        data = np.stack(chunks)
        rows = meta.iloc[index].reset_index(drop=True)
        rows["segment"] = np.concatenate([np.arange(index.count(k)) for k in sorted(set(index))])
        tmin = 0.0
    info["description"] = str(source)  # the file, named by preprocessing's messages
    epochs = mne.EpochsArray(data, info, tmin=tmin, metadata=rows, verbose="error")
    montage = mne.channels.make_standard_montage("colin27_1005")
    epochs.set_montage(montage, on_missing="ignore", verbose="error")
    return epochs


# --------------------------------------------------------------------------- eegmmidb
@register(
    "eegmmidb", modalities=("eeg",),
    description="PhysioNet EEG Motor Movement/Imagery: S###/S###R##.edf, EDF+ with "
                "annotations T0 (rest), T1, T2; 64 channels at 160 Hz.",
    options={
        "subject": Option((int,), required=True, description="subject number (1-109)"),
        "runs": Option((list,), [4, 8, 12],
                       "run numbers (1-14); 4, 8, 12 are imagined left/right fist"),
        "keep_rest": Option((bool,), False, "keep the T0 (rest) periods as condition 'rest'"),
    },
)
def load_eegmmidb(spec, root: Path, options: dict) -> list:
    """Read eegmmidb runs as continuous recordings with condition annotations.

    Channel names are standardised to MNE's 10-05 spelling
    (:func:`mne.datasets.eegbci.standardize`: ``Fc5.`` -> ``FC5``). Annotations become
    ``left``/``right`` (runs 3, 4, 7, 8, 11, 12) or ``fists``/``feet`` (runs 5, 6, 9,
    10, 13, 14), and ``rest`` for T0 when ``keep_rest`` (otherwise T0 is removed). The
    cue is the stimulus: each annotation reads ``<condition>/<condition>``, so the
    condition is also the trial's ``stim_id``.

    Returns
    -------
    runs : list of brainhead.preprocess._common.Run
        One per run, labelled by its run number.
    """
    import mne

    from ...preprocess._common import Run

    name = f"S{options['subject']:03d}"
    runs = []
    for number in options["runs"]:
        if not isinstance(number, int) or not 1 <= number <= 14:
            raise RecordingError(f"{_where(spec.path, spec)}: key 'source.runs': "
                                 f"run {number!r} is not a run number 1-14")
        path = root / name / f"{name}R{number:02d}.edf"
        raw = read_raw(path, subject=spec.subject)
        mne.datasets.eegbci.standardize(raw)
        t1, t2 = EEGMMIDB_TASKS.get(number, ("T1", "T2"))
        mapping = {"T0": "rest", "T1": t1, "T2": t2}
        unknown = sorted(set(raw.annotations.description) - set(mapping))
        if unknown:
            raise RecordingError(f"{_where(path, spec)}: unexpected annotations {unknown}; "
                                 "eegmmidb runs have only T0, T1 and T2")
        ann = raw.annotations
        keep = [d != "T0" or options["keep_rest"] for d in ann.description]
        raw.set_annotations(mne.Annotations(
            ann.onset[keep], ann.duration[keep],
            [f"{mapping[d]}/{mapping[d]}" for d in ann.description[keep]],
            orig_time=ann.orig_time))
        runs.append(Run(str(number), raw, path, None))
    return runs


# --------------------------------------------------------------------------- deap
@register(
    "deap", modalities=("eeg",),
    description="DEAP preprocessed MATLAB release: data_preprocessed_matlab/sXX.mat with "
                "data (40 trials x 40 channels x 8064 samples, 128 Hz, 3 s baseline + 60 s) "
                "and labels (40 x 4 ratings 1-9).",
    options={
        "subject": Option((int,), required=True, description="participant number (1-32)"),
        "label": Option((str,), "valence", "rating that gives the condition",
                        choices=DEAP_LABELS),
        "threshold": Option((int, float), 5.0,
                            "a rating above it is 'high', otherwise 'low'"),
        "baseline": Option((str,), "keep",
                           "keep: the 3 s pre-trial baseline stays at negative times "
                           "(for preprocess.de_baseline); drop: epochs start at the video "
                           "onset; remove: the mean 1-s baseline waveform is subtracted from "
                           "every 1-s segment of the trial, then dropped",
                           choices=("keep", "drop", "remove")),
        "peripheral": Option((bool,), False,
                             "keep the 8 peripheral channels (EOG, EMG, GSR, respiration, "
                             "plethysmograph, temperature)"),
        "segment": _SEGMENT,
    },
)
def load_deap(spec, root: Path, options: dict):
    """Read one DEAP participant from the preprocessed MATLAB release.

    The file is ``<root>/data_preprocessed_matlab/sXX.mat`` (or ``<root>/sXX.mat``).
    Trials are in video order, so ``stim_id`` is ``video01`` ... ``video40`` for every
    participant; ``group`` is the trial. Amplitudes are microvolts in the file and volts
    in the epochs. The pickled "python" release is refused (see the module docstring).

    Returns
    -------
    epochs : mne.EpochsArray
        40 epochs (or segments) with metadata ``condition`` (``high``/``low``),
        ``stim_id``, ``group`` and the four ratings.
    """
    name = f"s{options['subject']:02d}"
    candidates = [root / "data_preprocessed_matlab" / f"{name}.mat", root / f"{name}.mat"]
    path = next((p for p in candidates if p.is_file()), candidates[0])
    if not path.is_file() and path.with_suffix(".dat").is_file():
        raise RecordingError(f"{_where(path, spec)}: only the pickled python release "
                             f"({name}.dat) is here; brainhead reads the MATLAB release "
                             "(data_preprocessed_matlab), because unpickling can run code")
    mat = read_mat(path, subject=spec.subject, variables=["data", "labels"])
    data, labels = np.asarray(mat["data"], dtype=float), np.asarray(mat["labels"], dtype=float)
    if data.shape != (40, 40, 8064):
        raise RecordingError(f"{_where(path, spec)}: variable 'data' has shape {data.shape}, "
                             "expected (40, 40, 8064) = trials x channels x samples")
    if labels.shape != (40, 4):
        raise RecordingError(f"{_where(path, spec)}: variable 'labels' has shape "
                             f"{labels.shape}, expected (40, 4) = trials x ratings")
    sfreq, n_base = 128.0, 3 * 128
    n_ch = 40 if options["peripheral"] else 32
    trials = data[:, :n_ch] * 1e-6
    tmin = -3.0
    if options["baseline"] == "remove":
        base = trials[:, :, :n_base].reshape(40, n_ch, 3, 128).mean(2)  # mean 1-s baseline
        body = trials[:, :, n_base:].reshape(40, n_ch, 60, 128) - base[:, :, None]
        trials, tmin = body.reshape(40, n_ch, -1), 0.0
    elif options["baseline"] == "drop":
        trials, tmin = trials[:, :, n_base:], 0.0
    score = labels[:, DEAP_LABELS.index(options["label"])]
    meta = pd.DataFrame({
        "condition": np.where(score > options["threshold"], "high", "low"),
        "stim_id": [f"video{k + 1:02d}" for k in range(40)],
        "group": [f"trial{k + 1:02d}" for k in range(40)],
        **{lab: labels[:, i] for i, lab in enumerate(DEAP_LABELS)},
    })
    names = list(DEAP_CHANNELS) + [n for n, _ in DEAP_PERIPHERAL][: n_ch - 32]
    types = ["eeg"] * 32 + [t for _, t in DEAP_PERIPHERAL][: n_ch - 32]
    return _trials_to_epochs(list(trials), sfreq=sfreq, ch_names=names, ch_types=types,
                             meta=meta, segment=options["segment"], tmin=tmin,
                             where=_where(path, spec), source=path)


# --------------------------------------------------------------------------- seed
@register(
    "seed", modalities=("eeg",),
    description="SEED preprocessed release: <subject>_<date>.mat per session, 15 trials "
                "'<prefix>_eeg1..15' (62 channels x samples, 200 Hz) and label.mat.",
    options={
        "subject": Option((int,), required=True, description="subject number (1-15)"),
        "session": Option((int,), 1, "session (1-3), the files of a subject by date"),
        "file": Option((str, type(None)), None,
                       "the session's .mat file, relative to study.yaml (overrides "
                       "subject/session lookup)", path=True),
        "labels": Option((str, type(None)), None,
                         "label.mat, relative to study.yaml (default: <root>/label.mat)",
                         path=True),
        "segment": Option((int, float, type(None)), 4.0, _SEGMENT.description),
    },
)
def load_seed(spec, root: Path, options: dict):
    """Read one SEED session (15 film clips, labels negative/neutral/positive).

    ``stim_id`` is ``clip01`` ... ``clip15`` (the same clips for every subject and
    session); ``group`` is the trial. Amplitudes are microvolts in the files.
    Channels are renamed to MNE's spelling (``FPZ`` -> ``Fpz``); CB1 and CB2 are not in
    the 10-05 system and keep no position.

    Returns
    -------
    epochs : mne.EpochsArray
    """
    if options["file"] is not None:
        path = Path(options["file"])
    else:
        files = sorted(root.glob(f"{options['subject']}_*.mat"),
                       key=lambda p: p.stem.split("_", 1)[1])
        if len(files) < options["session"]:
            raise RecordingError(
                f"sub-{spec.subject}: {root}: key 'source.session': session "
                f"{options['session']} asked, but {len(files)} file(s) "
                f"'{options['subject']}_<date>.mat' found")
        path = files[options["session"] - 1]
    label_path = Path(options["labels"]) if options["labels"] else root / "label.mat"
    labels = np.asarray(read_mat(label_path, subject=spec.subject,
                                 variables=["label"])["label"]).ravel()
    if labels.shape != (15,) or not set(labels.tolist()) <= set(SEED_CONDITIONS):
        raise RecordingError(f"{_where(label_path, spec)}: variable 'label' has "
                             f"{labels.size} values {labels.tolist()[:20]}, expected 15 "
                             "values in {-1, 0, 1}")
    mat = read_mat(path, subject=spec.subject)
    trials: dict[int, np.ndarray] = {}
    for key, value in mat.items():
        match = re.fullmatch(r"(.+)_eeg(\d+)", key)
        if match:
            trials[int(match.group(2))] = np.asarray(value, dtype=float)
    if sorted(trials) != list(range(1, 16)):
        raise RecordingError(f"{_where(path, spec)}: expected 15 trials '<prefix>_eeg1' .. "
                             f"'<prefix>_eeg15', found {sorted(trials) or 'none'}")
    for k, trial in trials.items():
        if trial.ndim != 2 or trial.shape[0] != 62:
            raise RecordingError(f"{_where(path, spec)}: trial {k} has shape {trial.shape}, "
                                 "expected (62, n_samples) = channels x samples")
    meta = pd.DataFrame({
        "condition": [SEED_CONDITIONS[int(v)] for v in labels],
        "stim_id": [f"clip{k:02d}" for k in range(1, 16)],
        "group": [f"trial{k:02d}" for k in range(1, 16)],
        "session": options["session"],
    })
    return _trials_to_epochs([trials[k] * 1e-6 for k in range(1, 16)], sfreq=200.0,
                             ch_names=_mne_names(SEED_CHANNELS), ch_types="eeg", meta=meta,
                             segment=options["segment"], tmin=0.0, where=_where(path, spec),
                             source=path)


# --------------------------------------------------------------------------- dreamer
@register(
    "dreamer", modalities=("eeg",),
    description="DREAMER: DREAMER.mat, struct DREAMER.Data{subject}.EEG.stimuli{18} "
                "(samples x 14 Emotiv channels, 128 Hz) with ScoreValence/Arousal/"
                "Dominance (1-5).",
    options={
        "subject": Option((int,), required=True, description="participant number (1-23)"),
        "label": Option((str,), "valence", "score that gives the condition",
                        choices=tuple(DREAMER_SCORES)),
        "threshold": Option((int, float), 3.0, "a score above it is 'high', otherwise 'low'"),
        "file": Option((str,), "DREAMER.mat", "the .mat file, relative to the root"),
        "segment": Option((int, float, type(None)), 4.0, _SEGMENT.description),
    },
)
def load_dreamer(spec, root: Path, options: dict):
    """Read one DREAMER participant's 18 film-clip recordings.

    ``stim_id`` is ``clip01`` ... ``clip18``; ``group`` is the trial. The neutral
    baseline recordings before each clip are not used. Samples are taken as microvolts
    (the Emotiv EPOC's unit, with its DC offset, removed by the high-pass filter).

    Returns
    -------
    epochs : mne.EpochsArray
        Metadata ``condition`` (``high``/``low``), ``stim_id``, ``group`` and the three
        scores.
    """
    path = root / options["file"]
    where = _where(path, spec)
    top = read_mat(path, subject=spec.subject, variables=["DREAMER"])["DREAMER"]
    data = _field(top, "Data", where, "DREAMER")
    data = np.atleast_1d(np.asarray(data, dtype=object))
    n = options["subject"]
    if not 1 <= n <= len(data):
        raise RecordingError(f"{where}: key 'source.subject': participant {n} asked, the "
                             f"file holds {len(data)}")
    person = data[n - 1]
    eeg = _field(person, "EEG", where, f"DREAMER.Data{{{n}}}")
    stimuli = list(np.atleast_1d(np.asarray(
        _field(eeg, "stimuli", where, f"DREAMER.Data{{{n}}}.EEG"), dtype=object)))
    if len(stimuli) != 18:
        raise RecordingError(f"{where}: DREAMER.Data{{{n}}}.EEG.stimuli has {len(stimuli)} "
                             "cells, expected 18 (one per film clip)")
    trials = []
    for k, clip in enumerate(stimuli, start=1):
        clip = np.asarray(clip, dtype=float)
        if clip.ndim != 2 or clip.shape[1] != 14:
            raise RecordingError(f"{where}: DREAMER.Data{{{n}}}.EEG.stimuli{{{k}}} has shape "
                                 f"{clip.shape}, expected (n_samples, 14) = samples x "
                                 "channels")
        trials.append(clip.T * 1e-6)
    scores = {}
    for key, fname in DREAMER_SCORES.items():
        values = np.asarray(_field(person, fname, where, f"DREAMER.Data{{{n}}}"),
                            dtype=float).ravel()
        if values.shape != (18,):
            raise RecordingError(f"{where}: DREAMER.Data{{{n}}}.{fname} has {values.size} "
                                 "values, expected 18")
        scores[key] = values
    meta = pd.DataFrame({
        "condition": np.where(scores[options["label"]] > options["threshold"], "high", "low"),
        "stim_id": [f"clip{k:02d}" for k in range(1, 19)],
        "group": [f"trial{k:02d}" for k in range(1, 19)],
        **scores,
    })
    return _trials_to_epochs(trials, sfreq=128.0, ch_names=DREAMER_CHANNELS, ch_types="eeg",
                             meta=meta, segment=options["segment"], tmin=0.0, where=where,
                             source=path)


def _field(struct, name: str, where: str, owner: str):
    """Field ``name`` of a MATLAB struct read by scipy (object) or h5py (dict)."""
    if isinstance(struct, dict):
        if name in struct:
            return struct[name]
    elif hasattr(struct, name):
        return getattr(struct, name)
    have = sorted(struct) if isinstance(struct, dict) else sorted(
        getattr(struct, "_fieldnames", []) or [])
    raise RecordingError(f"{where}: {owner} has no field '{name}' (it has {have})")
