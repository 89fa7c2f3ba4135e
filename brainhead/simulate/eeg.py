"""Simulated EEG and sEEG subjects, written as BIDS through mne-bids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .memory import planted_memory
from .signals import (
    assign_regions,
    bandlimited_noise,
    pink_noise,
    planted_responses,
    schedule,
)

TASK = "sentences"
LINE_FREQ = 50.0
#: 32 channels of the 10-20 system, spread over the scalp.
EEG_CHANNELS = [
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC1", "FC2", "FC6", "T7", "C3",
    "Cz", "C4", "T8", "TP9", "CP5", "CP1", "CP2", "CP6", "TP10", "P7", "P3", "Pz", "P4",
    "P8", "PO9", "O1", "Oz", "O2", "PO10",
]
#: Condition -> (band in Hz, region index counted from posterior) whose power it raises.
CONDITION_BANDS = {"active": ((8.0, 12.0), 0), "intransitive": ((15.0, 25.0), -1)}
SOA = 1.6  # s between trial onsets (plus jitter)


def _trial_onsets(n: int, rng) -> np.ndarray:
    return 2.0 + np.arange(n) * SOA + rng.uniform(0, 0.2, n)


def _write_bids(raw, bids_root: Path, subject: str, run: int, datatype: str,
                space: str | None = None):
    from mne_bids import BIDSPath, write_raw_bids

    bp = BIDSPath(root=bids_root, subject=subject, task=TASK, run=run, datatype=datatype,
                  space=space)
    write_raw_bids(raw, bp, format="EDF", allow_preload=True, overwrite=True,
                   verbose="error")
    return bp


def _add_region_column(tsv: Path, regions: dict[str, str]) -> None:
    """Add a ``region`` column (BIDS allows extra columns) to channels/electrodes.tsv."""
    table = pd.read_csv(tsv, sep="\t")
    table["region"] = [regions.get(n, "n/a") for n in table["name"]]
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")


def simulate_eeg_subject(bids_root, subject, stimuli, features, planted, params, snr,
                         n_runs, rng, n_repeats=1, shared_bases=None) -> dict:
    """Write one EEG subject on the standard 10-20 montage.

    Each trial is a sentence. Channels of each region carry a response at 300-500 ms
    whose amplitude is a read-out of the region's planted layer; conditions raise alpha
    (posterior) or beta (anterior) power; 1/f background, 50 Hz line noise and blinks on
    the frontal channels are added. ``params["memory"]`` (``simulate.memory``) plants a
    memory of the previous stimuli (:func:`~brainhead.simulate.memory.planted_memory`). With ``shared_bases`` (region -> basis of shape
    (dim, rank), see :func:`~brainhead.simulate.signals.shared_bases`) every channel
    reads out its region's subspace shared across subjects.
    """
    import mne

    sfreq = 200.0
    n_ch = params["n_channels"]
    names = [EEG_CHANNELS[i] for i in np.linspace(0, len(EEG_CHANNELS) - 1, n_ch).astype(int)]
    montage = mne.channels.make_standard_montage("colin27_1020")
    pos = montage.get_positions()["ch_pos"]
    xyz = np.array([pos[n] for n in names]) * 1000.0
    regions = assign_regions(xyz[:, 1], list(planted))
    responses = planted_responses(features, regions, planted, rng, shared_bases)
    frontal = np.clip((xyz[:, 1] - 40.0) / 40.0, 0, 1)  # blink topography

    for run, order in enumerate(schedule(len(stimuli), n_runs, rng, n_repeats), start=1):
        onsets = _trial_onsets(len(order), rng)
        n_times = int((onsets[-1] + 2.0) * sfreq)
        times = np.arange(n_times) / sfreq
        data = 10.0 * pink_noise(n_times, n_ch, rng)  # microvolts
        data += 4.0 * np.sin(2 * np.pi * LINE_FREQ * times + rng.uniform(0, 2 * np.pi, (n_ch, 1)))
        for t_blink in rng.uniform(0, times[-1], int(times[-1] / 6)):
            data += 120.0 * np.outer(frontal, np.exp(-0.5 * ((times - t_blink) / 0.08) ** 2))
        erp = np.exp(-0.5 * ((np.arange(int(0.8 * sfreq)) / sfreq - 0.4) / 0.07) ** 2)
        trials = planted_memory(responses, order, params.get("memory"))  # (n_trials, n_ch)
        for k, (stim, onset) in enumerate(zip(order, onsets)):
            s0 = int(round(onset * sfreq))
            amp = 4.0 * snr * trials[k]  # (n_ch,)
            data[:, s0:s0 + erp.size] += np.outer(amp, erp)
            cond = stimuli["condition"].iloc[stim]
            if cond in CONDITION_BANDS:
                band, reg = CONDITION_BANDS[cond]
                region_name = list(planted)[reg]
                chans = regions == region_name
                burst = bandlimited_noise(int(0.8 * sfreq), int(chans.sum()), sfreq, band, rng)
                data[chans, s0:s0 + burst.shape[1]] += 8.0 * burst * np.hanning(burst.shape[1])
        info = mne.create_info(names, sfreq, "eeg")
        raw = mne.io.RawArray(data * 1e-6, info, verbose="error")
        raw.set_montage(montage, verbose="error")
        raw.info["line_freq"] = LINE_FREQ
        desc = [f"{stimuli['condition'].iloc[i]}/{stimuli['stim_id'].iloc[i]}" for i in order]
        raw.set_annotations(mne.Annotations(onsets, 1.0, desc))
        bp = _write_bids(raw, bids_root, subject, run, "eeg")
    chan_tsv = Path(str(bp.copy().update(suffix="channels", extension=".tsv").fpath))
    for tsv in sorted(chan_tsv.parent.glob(f"sub-{subject}_task-{TASK}_run-*_channels.tsv")):
        _add_region_column(tsv, dict(zip(names, regions)))
    return {"n_targets": n_ch}


def _implant(n_shafts: int, per_shaft: int, rng) -> tuple[list[str], np.ndarray]:
    """Contact names (A1, A2, ..., B1, ...) and MNI coordinates (mm) of straight shafts."""
    names, coords = [], []
    for s in range(n_shafts):
        side = 1 if s % 2 == 0 else -1
        entry = np.array([side * 60.0, rng.uniform(-85, 45), rng.uniform(-25, 45)])
        direction = np.array([-side, rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2)])
        direction /= np.linalg.norm(direction)
        for c in range(per_shaft):
            names.append(f"{chr(ord('A') + s)}{c + 1}")
            coords.append(entry + direction * 3.5 * (c + 2))
    return names, np.array(coords)


def simulate_seeg_subject(bids_root, subject, stimuli, features, planted, params, snr,
                          n_runs, rng, n_repeats=1, shared_bases=None) -> dict:
    """Write one sEEG subject with its own implant (contacts and MNI coordinates).

    Each contact's high-gamma (70-150 Hz) amplitude after a sentence is a read-out of
    the planted layer of the contact's region, on top of 1/f background and line noise.
    ``shared_bases`` as in :func:`simulate_eeg_subject`.
    """
    import mne

    sfreq = 500.0
    names, xyz = _implant(params["n_shafts"], params["contacts_per_shaft"], rng)
    n_ch = len(names)
    regions = assign_regions(xyz[:, 1], list(planted))
    responses = planted_responses(features, regions, planted, rng, shared_bases)
    montage = mne.channels.make_dig_montage(dict(zip(names, xyz / 1000.0)),
                                            coord_frame="mni_tal")
    win = np.hanning(int(0.6 * sfreq))
    for run, order in enumerate(schedule(len(stimuli), n_runs, rng, n_repeats), start=1):
        onsets = _trial_onsets(len(order), rng)
        n_times = int((onsets[-1] + 2.0) * sfreq)
        times = np.arange(n_times) / sfreq
        data = 20.0 * pink_noise(n_times, n_ch, rng)
        for h in (1, 2, 3):
            data += 3.0 * np.sin(2 * np.pi * LINE_FREQ * h * times + rng.uniform(0, 6.3, (n_ch, 1)))
        envelope = np.full((n_ch, n_times), 0.5)
        trials = planted_memory(responses, order, params.get("memory"))  # (n_trials, n_ch)
        for k, onset in enumerate(onsets):
            s0 = int(round((onset + 0.05) * sfreq))
            amp = np.clip(1.0 + 0.35 * snr * trials[k], 0.05, None)
            envelope[:, s0:s0 + win.size] += np.outer(amp, win)
        data += 6.0 * envelope * bandlimited_noise(n_times, n_ch, sfreq, (70.0, 150.0), rng)
        info = mne.create_info(names, sfreq, "seeg")
        raw = mne.io.RawArray(data * 1e-6, info, verbose="error")
        raw.set_montage(montage, verbose="error")
        raw.info["line_freq"] = LINE_FREQ
        desc = [f"{stimuli['condition'].iloc[i]}/{stimuli['stim_id'].iloc[i]}" for i in order]
        raw.set_annotations(mne.Annotations(onsets, 1.0, desc))
        _write_bids(raw, bids_root, subject, run, "ieeg")
    ieeg = Path(bids_root) / f"sub-{subject}" / "ieeg"
    for tsv in sorted(ieeg.glob(f"sub-{subject}_*electrodes.tsv")) + sorted(
            ieeg.glob(f"sub-{subject}_task-{TASK}_run-*_channels.tsv")):
        _add_region_column(tsv, dict(zip(names, regions)))
    return {"n_targets": n_ch}

