"""Recovery of planted layers over simulator seeds, at a realistic signal-to-noise ratio.

For every modality and seed, one subject is simulated with the demo's planted layers
(each region driven by one MiniLM layer), preprocessed from its files, and scored
layer by layer against the trained MiniLM and its random-weights control. Reported per
modality:

- the median held-out r of the planted regions at their planted layer (the issue asks
  for a realistic 0.1-0.3; tune ``--snr`` to land there);
- the recovery rate: how often the best layer, chosen on training folds only, equals
  the planted layer (goal: >= 95% of seeds);
- how often the random control wins significantly at the best layer (r_diff interval
  below zero and q < 0.05; goal: never), and, for information, at the other layers. A
  win at another layer can be real rather than a false positive: with 480 stimuli the
  trained MiniLM's layer 6 predicts a region planted at layer 2 worse than the random
  network's layer 6 does (EEG seed 17: r 0.223 against 0.260).

Usage::

    python benchmarks/planted_layer.py                      # 20 seeds x 3 modalities
    python benchmarks/planted_layer.py --seeds 3 --modalities fmri
    python benchmarks/planted_layer.py --snr fmri=0.5 eeg=1.0 seeg=0.5
    python benchmarks/planted_layer.py --view timeseries --modalities fmri seeg

The default of 480 sentences is the size of a typical sentence-reading study (Pereira
et al. 2018 used 384 and 243); with 160, adjacent MiniLM layers, whose features are
nearly collinear, are not told apart for every region (EEG and sEEG recovered 60% of
seeds). ``--n-stimuli`` measures that dependence. It takes about 40 s per seed and
modality on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data_specs" / "demo"

# One subject per modality, sized like the smallest demo subjects.
SUBJECTS = {
    "fmri": {"simulate": {"voxel_size": 14}},
    "eeg": {"simulate": {"n_channels": 24}},
    "seeg": {"simulate": {"n_shafts": 4, "contacts_per_shaft": 8}},
}
DEFAULT_SNR = {"fmri": 0.7, "eeg": 1.0, "seeg": 0.4}


def _study(tmp: Path, modality: str, seed: int, snr: float, n_stimuli: int,
           n_perm: int, view: str = "stimulus") -> Path:
    demo = yaml.safe_load((DEMO / "study.yaml").read_text())
    study_dir = tmp / "data_specs" / f"planted_{modality}_{seed}"
    (study_dir / "subjects").mkdir(parents=True)
    cfg = {
        "name": f"planted_{modality}_{seed}",
        "seed": seed,
        "simulate": {"n_stimuli": n_stimuli, "n_runs": 4,
                     "planted_layers": {modality: demo["simulate"]["planted_layers"][modality]},
                     "snr": {modality: snr}},
        "features": demo["features"],
        "preprocess": demo["preprocess"],
        "align": {**demo.get("align", {}), "n_permutations": n_perm, "n_bootstraps": n_perm,
                  "view": view},
    }
    (study_dir / "study.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    sub = {"subject": "p01", "modality": modality, "source": "simulated",
           **SUBJECTS[modality]}
    (study_dir / "subjects" / "sub-p01.yaml").write_text(yaml.safe_dump(sub, sort_keys=False))
    return study_dir


def run_one(modality: str, seed: int, snr: float, n_stimuli: int, n_perm: int,
            view: str = "stimulus") -> pd.DataFrame:
    """Simulate, preprocess and score one subject; one row per planted region."""
    from brainhead.align import score_subject
    from brainhead.features import write_features
    from brainhead.preprocess import preprocess_subject
    from brainhead.report import recovery_table
    from brainhead.simulate import simulate_study
    from brainhead.specs import load_study

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = load_study(_study(tmp, modality, seed, snr, n_stimuli, n_perm, view))
        results = tmp / "results"
        truth = simulate_study(study, results)
        responses = preprocess_subject(study, "p01", results, results / "responses.h5")
        model = study.config["features"]["models"][0]
        features = write_features(results / "stimuli.tsv", model, results / "features.h5",
                                  seed=seed)
        summary, best, _ = score_subject(responses, features, model["name"],
                                         study.config["align"], seed=seed)
    rec = recovery_table(best, truth)
    planted_r = summary[(summary["metric"] == "r") & (summary["control"] == "trained")]
    rec["planted_r"] = [
        float(planted_r[(planted_r["region"] == g) & (planted_r["layer"] == p)]["score"].iloc[0])
        for g, p in zip(rec["region"], rec["planted"])]
    diff = summary[(summary["metric"] == "r_diff") & (summary["region"] != "all")]
    wins = diff[(diff["ci_high"] < 0) & (diff["q"] < 0.05)]
    rec["random_wins"] = [int(((wins["region"] == g) & (wins["layer"] == b)).sum())
                          for g, b in zip(rec["region"], rec["best_layer"])]
    rec["random_wins_other"] = [int(((wins["region"] == g) & (wins["layer"] != b)).sum())
                                for g, b in zip(rec["region"], rec["best_layer"])]
    rec["seed"] = seed
    return rec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--modalities", nargs="+", default=["fmri", "eeg", "seeg"])
    parser.add_argument("--snr", nargs="*", default=[],
                        help="modality=value overrides of the signal-to-noise ratio")
    parser.add_argument("--n-stimuli", type=int, default=480)
    parser.add_argument("--n-permutations", type=int, default=200)
    parser.add_argument("--view", choices=("stimulus", "timeseries"), default="stimulus",
                        help="response view to score (timeseries: sEEG and fMRI only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("BRAINHEAD_NO_PROGRESS", "1")
    snr = dict(DEFAULT_SNR)
    for item in args.snr:
        key, value = item.split("=")
        snr[key] = float(value)

    rows = []
    for modality in args.modalities:
        t0 = time.perf_counter()
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rec = run_one(modality, seed, snr[modality], args.n_stimuli, args.n_permutations,
                          args.view)
            rec["modality"] = modality
            rows.append(rec)
            print(f"{modality} seed {seed}: best {rec['best_layer'].tolist()} planted "
                  f"{rec['planted'].tolist()} r {np.round(rec['planted_r'], 3).tolist()} "
                  f"random wins at best {int(rec['random_wins'].sum())} "
                  f"elsewhere {int(rec['random_wins_other'].sum())}",
                  flush=True)
        print(f"{modality}: {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.concat(rows, ignore_index=True)
    print()
    print(f"{'modality':8} {'snr':>5} {'seeds':>5} {'median r':>9} {'recovered':>10} "
          f"{'rate':>6} {'random wins (best layer)':>25} {'(other layers)':>15}")
    ok = True
    for modality, grp in table.groupby("modality", sort=False):
        # a seed counts as recovered when every planted region of it is
        per_seed = grp.groupby("seed")["recovered"].all()
        rate = per_seed.mean()
        med = grp["planted_r"].median()
        wins = int((grp["random_wins"] > 0).sum())
        other = int((grp["random_wins_other"] > 0).sum())
        print(f"{modality:8} {snr[modality]:5.2f} {len(per_seed):5d} {med:9.3f} "
              f"{int(per_seed.sum()):>6}/{len(per_seed):<3} {rate:6.0%} {wins:>25} "
              f"{other:>15}")
        ok &= bool(rate >= 0.95 and wins == 0 and 0.1 <= med <= 0.3)
    regions = table.groupby("modality", sort=False)["recovered"].mean()
    print("\nper-region recovery:", ", ".join(f"{m} {v:.0%}" for m, v in regions.items()))
    print("goals (rate >= 95%, random never wins at the best layer, median r in "
          "[0.1, 0.3]):",
          "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
