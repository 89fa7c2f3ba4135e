"""Reset-tuning against a decoder trained from scratch, over folds and held-out subjects.

The pipeline's ``adaptation.tsv`` holds one comparison: the study's transfer subject on
outer fold 0, a single draw of 32 held-out candidates. This repeats it (the same
:meth:`brainhead.train.adapters.DecoderExperiment.adaptation`, the study's own
``train.adapters`` settings) on every outer fold with every subject held out in turn,
and prints per modality the mean held-out top-1 (over layers, then cases) of the two
methods and how often reset-tuning is ahead. Options compare variants of the settings:
``--reset-init random`` (the adapter from a random start instead of its closed-form fit,
at the family's lr), ``--epochs N`` (both methods' ``max_epochs``, to check that scratch
is not merely short of steps).

On a finished demo (about 15 s of CPU per modality and variant)::

    OMP_NUM_THREADS=1 python benchmarks/reset_tuning.py results/demo
    OMP_NUM_THREADS=1 python benchmarks/reset_tuning.py results/demo --reset-init random
    OMP_NUM_THREADS=1 python benchmarks/reset_tuning.py results/demo --epochs 16
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def compare(results: Path, study_path: Path, modality: str, fraction: float,
            overrides: dict, out_dir: Path) -> pd.DataFrame:
    """Reset-tuning and scratch top-1 (mean over layers) per held-out subject and fold."""
    from brainhead.features import read_features
    from brainhead.specs import load_study
    from brainhead.train.adapters import (
        DEFAULTS,
        FAMILY,
        DecoderExperiment,
        decoder_config,
    )
    from brainhead.train.experiment import load_modality
    from brainhead.train.jobs import train_subjects
    from brainhead.train.trainer import TrainConfig

    study = load_study(study_path)
    params = study.config["train"]
    section = {**params.get(FAMILY, {}), "adapt_fractions": [fraction], **overrides}
    cfg = replace(decoder_config(TrainConfig.from_params(params, study.seed),
                                 {**DEFAULTS, **section}), progress=False)
    paths = [results / f"sub-{s}" / "responses.h5" for s in train_subjects(study, modality)]
    subjects, _ = load_modality(paths, FAMILY)
    model = next(m["name"] for m in study.config["features"]["models"])
    features, ids, _ = read_features(results / "features" / f"{model}.h5")
    exp = DecoderExperiment(subjects, features, ids, out_dir / modality, section, cfg)
    rows = []
    for subject in exp.subjects:
        for fold in range(exp.n_folds):
            table = pd.DataFrame(exp.adaptation(fold=fold, subject=subject))
            means = table.groupby("method")["top1"].mean()
            rows.append({"modality": modality, "subject": subject, "fold": fold,
                         "n_stimuli": int(table["n_stimuli"].iloc[0]),
                         "n_candidates": int(table["n_candidates"].iloc[0]),
                         "reset_tuning": means["reset_tuning"], "scratch": means["scratch"]})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a finished study's results/<study>")
    parser.add_argument("--study", type=Path, default=ROOT / "data_specs" / "demo" / "study.yaml")
    parser.add_argument("--modalities", nargs="+", default=["fmri", "seeg"])
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--reset-init", choices=["ridge", "random"], default=None)
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs of both methods")
    args = parser.parse_args(argv)
    overrides = {}
    if args.reset_init:
        overrides["reset_init"] = args.reset_init
    if args.epochs:
        overrides.update(max_epochs=args.epochs, patience=max(2, args.epochs // 4))
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    warnings.filterwarnings("ignore", message=".*(LeafSpec|srun).*")
    for modality in args.modalities:
        start = time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            table = compare(args.results, args.study, modality, args.fraction, overrides,
                            Path(tmp))
        wins = int((table["reset_tuning"] > table["scratch"]).sum())
        print(f"\n{modality}: {len(table)} cases (subjects x folds), "
              f"{table['n_stimuli'].iloc[0]} training stimuli of the new subject, "
              f"~{table['n_candidates'].mean():.0f} candidates (chance "
              f"{1 / table['n_candidates'].mean():.3f}); settings {overrides or 'as the study'}; "
              f"{time.process_time() - start:.0f} s CPU")
        print(table.round(3).to_string(index=False))
        print(f"mean top-1: reset-tuning {table['reset_tuning'].mean():.3f}, scratch "
              f"{table['scratch'].mean():.3f}; reset-tuning ahead in {wins} of {len(table)}")


if __name__ == "__main__":
    main()
