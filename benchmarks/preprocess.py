"""Overhead of brainhead's EEG preprocessing over the same MNE calls made directly.

    python benchmarks/preprocess.py [--repeats 5]

Preprocesses eegmmidb subject S001, runs 4, 8 and 12 (imagined left/right fist), with
the shipped study ``data_specs/eegmmidb`` through :func:`brainhead.preprocess.
run_preprocessing` (adapter, checks, cleaning, epoching, both views), and with a plain
script making the same MNE and numpy calls in one process. The two are timed in
alternation (``--repeats`` pairs, the order swapped every pair), their median wall
times compared, and their outputs checked to agree. Goal: ratio <= 1.10. Needs the
shared recordings (``../shared/data/eegmmidb-S001`` beside the repository); without
them it says so and exits 0. It prints; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "eegmmidb-S001"
RUNS = (4, 8, 12)


def load_study(work: Path):
    """The shipped eegmmidb study, its root pointed at the shared recordings."""
    import yaml

    from brainhead.specs import load_study as load

    study_dir = work / "eegmmidb"
    shutil.copytree(ROOT / "data_specs" / "eegmmidb", study_dir)
    sub = study_dir / "subjects" / "sub-S001.yaml"
    cfg = yaml.safe_load(sub.read_text())
    cfg["source"]["root"] = str(DATA)
    sub.write_text(yaml.safe_dump(cfg))
    return load(study_dir, design=False)  # preprocessing only: eegmmidb is no alignment design


def ours(study, work: Path) -> np.ndarray:
    """brainhead: the bands view of S001."""
    from brainhead.preprocess import run_preprocessing

    return run_preprocessing(study, "S001", work).view("bands").X


def direct(params: dict) -> np.ndarray:
    """The same steps written as plain MNE/numpy calls."""
    import mne

    def robust_noisy(data):
        logvar = np.log(data.var(axis=1))
        med = np.median(logvar)
        scale = max(np.median(np.abs(logvar - med)) * 1.4826, 0.5)
        return (logvar - med) / scale > params["bad_zscore"]

    parts = []
    for run in RUNS:
        raw = mne.io.read_raw_edf(DATA / "S001" / f"S001R{run:02d}.edf", preload=True,
                                  verbose="error")
        mne.datasets.eegbci.standardize(raw)
        flat = raw.get_data().std(axis=1) * 1e6 < params["flat_uv"]
        raw.set_montage(params["montage"], verbose="error")
        raw.notch_filter(params["notch"], verbose="error")
        raw.filter(params["l_freq"], params["h_freq"], verbose="error")
        bads = flat | robust_noisy(raw.get_data())
        raw.info["bads"] = [n for n, b in zip(raw.ch_names, bads) if b]
        if raw.info["bads"]:
            raw.interpolate_bads(reset_bads=True, verbose="error")
        raw.set_eeg_reference("average", projection=False, verbose="error")
        events, _ = mne.events_from_annotations(raw, event_id={"T1": 1, "T2": 2},
                                                verbose="error")
        parts.append(mne.Epochs(raw, events, tmin=params["tmin"], tmax=params["tmax"],
                                baseline=None, preload=True, verbose="error"))
    epochs = mne.concatenate_epochs(parts, verbose="error")
    t0, t1 = params["window"]
    _ = epochs.copy().crop(t0, t1).get_data().mean(-1) * 1e6  # the stimulus view
    de = np.empty((len(epochs), len(epochs.ch_names), len(params["bands"])))
    for b, (lo, hi) in enumerate(params["bands"].values()):
        x = epochs.copy().filter(lo, hi, verbose="error").crop(0.0, None).get_data() * 1e6
        de[:, :, b] = 0.5 * np.log(2 * np.pi * np.e * x.var(axis=-1))
    return de.astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} (the shared eegmmidb recordings) is absent")
        return 0
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="brainhead-bench-"))
    study = load_study(work)
    params = study.subjects["S001"].preprocess
    a, b = ours(study, work), direct(params)  # warm-up, and the outputs must agree
    if a.shape != b.shape or not np.allclose(a, b, atol=1e-4):
        print(f"outputs differ: {a.shape} vs {b.shape}, max |diff| "
              f"{np.abs(a - b).max() if a.shape == b.shape else 'n/a'}")
        return 1
    times = {"brainhead": [], "mne": []}
    for i in range(args.repeats):
        order = ("brainhead", "mne") if i % 2 == 0 else ("mne", "brainhead")
        for name in order:
            t0 = time.perf_counter()
            ours(study, work) if name == "brainhead" else direct(params)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"eegmmidb S001 runs {RUNS}: {a.shape[0]} epochs x {a.shape[1]} channels x "
          f"{a.shape[2]} bands; outputs agree (max |diff| {np.abs(a - b).max():.2e})")
    for name, values in times.items():
        print(f"  {name:9s} median {med[name]:.3f} s  (runs: "
              f"{', '.join(f'{v:.3f}' for v in values)})")
    print(f"overhead ratio brainhead / mne = {med['brainhead'] / med['mne']:.3f} "
          "(goal <= 1.10)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
