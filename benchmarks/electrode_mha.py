"""Cost and accuracy of the electrode attention model on simulated problems of demo size.

Simulated scalp EEG (3 subjects x 150 trials x 32 channels x 5 bands; the class shifts
two bands of 6 named channels) and sEEG (2 subjects x 100 trials x 24-35 contacts at
subject-specific coordinates; the class shifts one band inside a planted sphere), the
simulators of ``tests/test_electrode_mha.py``. Protocols: leave-one-subject-out and
within-subject 5-fold (contiguous blocks); validation trials (early stopping) are a
fifth of the training side. Every fit runs through ``fit_run`` as the decoding stage
runs it (checkpoints every epoch, in a temporary folder), on one torch thread.

Prints one row per fold: fit seconds, epochs trained, accuracy, chance (majority class
of the test fold), then totals per setting::

    OMP_NUM_THREADS=1 python benchmarks/electrode_mha.py                   # demo settings
    OMP_NUM_THREADS=1 python benchmarks/electrode_mha.py --settings paper --protocols loso
    OMP_NUM_THREADS=1 python benchmarks/electrode_mha.py --set max_epochs=20 lr=0.005
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: The settings that the demo can afford, and the paper's (RBTransformer's) defaults.
SETTINGS = {
    "demo": {"d_model": 32, "n_blocks": 1, "n_heads": 2, "dropout": 0.0, "lr": 5e-3,
             "max_epochs": 20, "patience": 5, "batch_size": 32},
    "paper": {"d_model": 128, "n_blocks": 4, "n_heads": 6, "dropout": 0.1, "lr": 1e-3,
              "max_epochs": 100, "patience": 10, "batch_size": 32},
}


def folds(trials, protocol: str, n_folds: int = 5):
    """(name, train rows, test rows) of one protocol."""
    subjects = list(dict.fromkeys(trials.subject))
    if protocol == "loso":
        for s in subjects:
            yield f"loso-{s}", np.flatnonzero(trials.subject != s), np.flatnonzero(
                trials.subject == s)
        return
    for s in subjects:
        rows = np.flatnonzero(trials.subject == s)
        for k, test in enumerate(np.array_split(rows, n_folds)):
            yield f"within-{s}-{k}", np.setdiff1d(rows, test), test


def run(dataset: str, settings: dict, protocols, seed: int = 0,
        device: str = "cpu") -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_electrode_mha import simulate_eeg, simulate_seeg

    from brainhead.train.electrode import ElectrodeAttentionClassifier

    if dataset == "eeg":
        trials, y = simulate_eeg(n_subjects=3, n_trials=150)
    else:
        trials, y, _ = simulate_seeg(n_subjects=2, n_trials=100)
    rows = []
    for protocol in protocols:
        for name, train, test in folds(trials, protocol):
            perm = np.random.default_rng(seed).permutation(train)
            n_val = max(2, len(train) // 5)
            val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            clf = ElectrodeAttentionClassifier(**settings, seed=seed, device=device)
            start = time.perf_counter()
            clf.fit(trials.take(fit), y[fit], val=(trials.take(val), y[val]))
            seconds = time.perf_counter() - start
            acc = float(np.mean(clf.predict(trials.take(test)) == y[test]))
            chance = float(np.unique(y[test], return_counts=True)[1].max() / len(test))
            row = {"dataset": dataset, "fold": name, "n_train": len(fit), "n_test": len(test),
                   "seconds": round(seconds, 2), "epochs": clf.run_info_["epochs"],
                   "accuracy": round(acc, 3), "chance": round(chance, 3),
                   "n_params": clf.n_params}
            print("\t".join(str(v) for v in row.values()), flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="demo")
    parser.add_argument("--protocols", nargs="+", choices=["loso", "within"],
                        default=["loso", "within"])
    parser.add_argument("--datasets", nargs="+", choices=["eeg", "seeg"],
                        default=["eeg", "seeg"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override settings, e.g. --set max_epochs=20 lr=0.005")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                        help="where the model trains (cuda: bf16-mixed, as the workflow "
                             "trains there)")
    args = parser.parse_args(argv)
    os.environ.setdefault("BRAINHEAD_NO_PROGRESS", "1")
    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*srun.*")
    torch.set_num_threads(1)
    settings = dict(SETTINGS[args.settings])
    for item in args.set:
        key, value = item.split("=", 1)
        settings[key] = type(settings[key])(value) if key in settings else float(value)
    cuda = "available" if torch.cuda.is_available() else "not available"
    print(f"settings {args.settings}: {settings}; torch threads 1; "
          f"device {args.device}, cuda {cuda}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("dataset\tfold\tn_train\tn_test\tseconds\tepochs\taccuracy\tchance\tn_params")
    rows = []
    for dataset in args.datasets:
        rows += run(dataset, settings, args.protocols, device=args.device)
    for dataset in args.datasets:
        for protocol in args.protocols:
            sel = [r for r in rows if r["dataset"] == dataset and r["fold"].startswith(protocol)]
            if sel:
                print(f"{dataset} {protocol}: {len(sel)} folds, "
                      f"{sum(r['seconds'] for r in sel):.1f} s in all "
                      f"({np.mean([r['seconds'] for r in sel]):.2f} s per fold), accuracy "
                      f"{np.mean([r['accuracy'] for r in sel]):.3f} "
                      f"(chance {np.mean([r['chance'] for r in sel]):.3f})")
    print(f"total fit time {sum(r['seconds'] for r in rows):.1f} s")


if __name__ == "__main__":
    main()
