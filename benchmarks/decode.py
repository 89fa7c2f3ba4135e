"""Fit time per fold and accuracy of every decoding model, on the demo and on eegmmidb S001.

Runs the decode stage (:func:`brainhead.decode.run_decoding`, the function the Snakemake
rule calls: same folds for every model, every split leakage-checked, validation from the
training side) and prints, per modality x protocol x model: the number of folds, the CPU
seconds of one fold's fit (mean over folds), the pooled held-out accuracy with its
chance level (majority rate), balanced accuracy with its permutation p-value, and ROC
AUC.

- ``--demo``: a finished demo's ``results/demo`` (its responses were preprocessed with
  the demo's decode section, so they hold the epochs view); the demo's decode settings.
- ``--eegmmidb``: the folder holding ``S001/S001R04.edf`` (default: the team's
  ``../shared/data/eegmmidb-S001``); S001 is preprocessed here with the shipped study
  ``data_specs/eegmmidb`` and decoded with its settings (electrode model at the paper's
  defaults) or, with ``--small``, the demo's small electrode and ConvNet settings.

::

    OMP_NUM_THREADS=1 python benchmarks/decode.py --demo results/demo
    OMP_NUM_THREADS=1 python benchmarks/decode.py --eegmmidb ../shared/data/eegmmidb-S001
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def table(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per modality x protocol x model: folds, s per fold, pooled scores."""
    rows = []
    for (modality, protocol, model), g in scores.groupby(["modality", "protocol", "model"],
                                                         sort=False):
        folds = g[g["fold"].astype(str) != "all"]
        pooled = g[(g["fold"].astype(str) == "all") & (g["subject"] == "all")]
        if pooled.empty:  # one subject: its own pooled row (or its single fold)
            pooled = g[g["fold"].astype(str) == "all"]
        if pooled.empty:
            pooled = folds
        best = pooled.iloc[0]
        rows.append({"modality": modality, "protocol": protocol, "model": model,
                     "folds": len(folds), "fit_s_per_fold": folds["fit_seconds"].mean(),
                     "accuracy": best["accuracy"], "chance": best["chance"],
                     "bal_acc": best["balanced_accuracy"], "p": best["p_value"],
                     "roc_auc": best["roc_auc"],
                     "n_test": int(best["n_test"])})
    return pd.DataFrame(rows)


def _print(title: str, scores: pd.DataFrame, summary: dict, wall: float) -> None:
    print(f"\n{title} (decode stage: {wall:.0f} s wall; p: {summary['p_value']}; "
          f"chance: {summary['chance']})")
    with pd.option_context("display.width", 140, "display.float_format", "{:.3f}".format):
        print(table(scores).to_string(index=False))
    for s in summary["skipped"]:
        print(f"  not run: {s['modality']} {s['protocol']} {s['model']}: {s['reason']}")


def bench_demo(results: Path) -> None:
    from brainhead.decode import run_decoding
    from brainhead.decode.study import read_scores
    from brainhead.specs import load_study

    study = load_study(ROOT / "data_specs" / "demo")
    paths = [results / f"sub-{s}" / "responses.h5" for s in study.subjects]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_decoding(study, paths, tmp)
        wall = time.perf_counter() - start
        scores = read_scores(Path(tmp))
    _print("demo", scores, summary, wall)


def bench_eegmmidb(root: Path, small: bool) -> None:
    from brainhead.decode import run_decoding
    from brainhead.decode.study import read_scores
    from brainhead.io import write_responses
    from brainhead.io.store import provenance
    from brainhead.preprocess import run_preprocessing
    from brainhead.specs import load_study

    with tempfile.TemporaryDirectory() as tmp:
        study_dir = Path(tmp) / "eegmmidb"
        shutil.copytree(ROOT / "data_specs" / "eegmmidb", study_dir)
        sub = study_dir / "subjects" / "sub-S001.yaml"
        cfg = yaml.safe_load(sub.read_text())
        cfg["source"]["root"] = str(root.resolve())
        sub.write_text(yaml.safe_dump(cfg))
        if small:
            demo = yaml.safe_load((ROOT / "data_specs" / "demo" / "study.yaml").read_text())
            spec = yaml.safe_load((study_dir / "study.yaml").read_text())
            for key in ("electrode_mha", "shallow_convnet"):
                spec["decode"][key] = demo["decode"][key]
            (study_dir / "study.yaml").write_text(yaml.safe_dump(spec))
        study = load_study(study_dir)
        start = time.perf_counter()
        table_ = run_preprocessing(study, "S001", Path(tmp) / "results")
        out = Path(tmp) / "results" / "sub-S001" / "responses.h5"
        write_responses(out, table_, provenance("preprocess"))
        print(f"\neegmmidb S001: preprocessed in {time.perf_counter() - start:.0f} s "
              f"({len(table_.view('bands').X)} trials)")
        start = time.perf_counter()
        summary = run_decoding(study, [out], Path(tmp) / "decode")
        wall = time.perf_counter() - start
        scores = read_scores(Path(tmp) / "decode")
    settings = "small electrode/ConvNet settings" if small else "shipped settings"
    _print(f"eegmmidb S001, runs 4, 8, 12, left vs right ({settings})", scores, summary,
           wall)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, help="results/demo of a finished demo run")
    parser.add_argument("--eegmmidb", type=Path, nargs="?",
                        const=ROOT.parent / "shared" / "data" / "eegmmidb-S001",
                        help="folder holding S001/ (default: ../shared/data/eegmmidb-S001)")
    parser.add_argument("--small", action="store_true",
                        help="eegmmidb with the demo's small electrode/ConvNet settings")
    args = parser.parse_args(argv)
    os.environ.setdefault("BRAINHEAD_NO_PROGRESS", "1")
    import torch

    torch.set_num_threads(1)
    np.seterr(all="ignore")
    if args.demo is None and args.eegmmidb is None:
        parser.error("give --demo RESULTS and/or --eegmmidb [ROOT]")
    if args.demo is not None:
        bench_demo(args.demo)
    if args.eegmmidb is not None:
        if not (args.eegmmidb / "S001").is_dir():
            raise SystemExit(f"no S001/ in {args.eegmmidb}")
        bench_eegmmidb(args.eegmmidb, args.small)


if __name__ == "__main__":
    main()
