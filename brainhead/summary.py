"""``brainhead summary results/<study>``: the best-layer table and the modality summary
in the terminal, from ``align/best_layers.tsv`` and ``align/summary.tsv``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .report.tables import modality_rows, regional_best


class SummaryError(FileNotFoundError):
    """The results folder lacks what the summary reads."""


def load_results(results_dir) -> tuple[pd.DataFrame, pd.DataFrame, dict | None]:
    """(summary, regional best layers, truth or None) of ``results/<study>``.

    Raises
    ------
    SummaryError
        Naming the missing folder or file and the step that writes it.
    """
    results = Path(results_dir)
    if not results.is_dir():
        raise SummaryError(f"{os.path.relpath(results)}: results folder not found "
                           "(run `snakemake --cores N` first)")
    paths = {"summary": results / "align" / "summary.tsv",
             "best": results / "align" / "best_layers.tsv"}
    for path in paths.values():
        if not path.is_file():
            raise SummaryError(f"{os.path.relpath(path)}: not found; the workflow's "
                               "'summary' rule writes it (snakemake --cores N)")
    summary = pd.read_csv(paths["summary"], sep="\t", dtype={"subject": str})
    best = pd.read_csv(paths["best"], sep="\t", dtype={"subject": str})
    missing = [c for c in ("subject", "modality", "region", "best_layer", "score",
                           "random_score") if c not in best.columns]
    if missing:
        raise SummaryError(f"{os.path.relpath(paths['best'])}: missing columns {missing}")
    truth_path = results / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
    return summary, regional_best(best, summary, truth), truth


def best_layer_table(best: pd.DataFrame, truth: dict | None) -> pd.DataFrame:
    """Per subject and region: best layer (training folds), r, random r, depth, q."""
    cols = {"subject": "subject", "modality": "modality", "region": "region",
            "best_layer": "best layer", "score": "r", "random_score": "random r",
            "relative_depth": "depth", "gap_to_last": "gap to last", "pq": "p (q)"}
    table = best[[c for c in cols if c in best]].rename(columns=cols)
    if truth is not None:
        table["planted"] = best["planted"]
        table["recovered"] = (best["planted"] == best["best_layer"]).map(
            {True: "yes", False: "no"})
    return table.sort_values(["modality", "subject", "region"]).reset_index(drop=True)


def modality_table(best: pd.DataFrame, summary: pd.DataFrame, truth: dict | None
                   ) -> pd.DataFrame:
    """Per modality: subjects, regions, median r and random r, wins, recoveries."""
    rows = modality_rows(best, summary, truth is not None)
    table = pd.DataFrame(rows).rename(columns={
        "n_subjects": "subjects", "n_regions": "regions", "score": "median r",
        "random": "median random r", "beats": "trained > random", "recovered": "recovered"})
    return table


def format_summary(results_dir) -> str:
    """The text that ``brainhead summary`` prints."""
    summary, best, truth = load_results(results_dir)
    fmt = {"r": "{:.3f}".format, "random r": "{:.3f}".format, "depth": "{:.2f}".format,
           "gap to last": "{:+.3f}".format, "median r": "{:.3f}".format,
           "median random r": "{:.3f}".format}
    models = ", ".join(sorted(set(summary["model"]))) if "model" in summary else "?"
    lines = [f"{Path(results_dir)}: {summary['subject'].nunique()} subjects, model {models}",
             "",
             "Per modality (best layers chosen on training folds; r = held-out Pearson r):",
             modality_table(best, summary, truth).to_string(index=False, formatters=fmt),
             "",
             "Best layer per subject and region:",
             best_layer_table(best, truth).to_string(index=False, formatters=fmt)]
    return "\n".join(lines)
