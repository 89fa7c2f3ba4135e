"""``brainhead summary results/<study>``: a finished run's results in the terminal.

The best-layer table and the modality summary from ``align/best_layers.tsv`` and
``align/summary.tsv`` (studies with stimuli), and the decoding table from
``decode/scores.tsv`` (studies with a ``decode`` section). A study with neither is
preprocessed only, and the summary says so.
"""

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


def decoding_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per modality, protocol and model: balanced accuracy, its chance level and the
    permutation p of the test predictions pooled over every fold and subject (the rows
    ``subject == fold == "all"``), and how many subjects decode above chance on their
    own (p < 0.05 on their pooled folds, or on their one fold)."""
    rows = []
    for (modality, protocol, model), g in scores.groupby(["modality", "protocol", "model"],
                                                         sort=True):
        fold = g["fold"].astype(str)
        per_subject = []
        for _, h in g[g["subject"] != "all"].groupby("subject"):
            pooled = h[h["fold"].astype(str) == "all"]
            per_subject.append((pooled if len(pooled) else h).iloc[0])
        overall = g[(g["subject"] == "all") & (fold == "all")]
        # without a pooled row (an older or hand-made table): the subjects' mean, no p
        top = overall.iloc[0] if len(overall) else pd.DataFrame(per_subject).mean(
            numeric_only=True)
        rows.append({"modality": modality, "protocol": protocol, "model": model,
                     "balanced acc": top["balanced_accuracy"],
                     "chance": top["chance_balanced"],
                     "p": f"{top['p_value']:.3g}" if len(overall) else "-",
                     "subjects p < 0.05": f"{sum(r['p_value'] < 0.05 for r in per_subject)}"
                                          f"/{len(per_subject)}"})
    return pd.DataFrame(rows)


def _decoding_lines(results: Path) -> list[str]:
    path = results / "decode" / "scores.tsv"
    scores = pd.read_csv(path, sep="\t", dtype={"subject": str})
    missing = [c for c in ("modality", "protocol", "model", "subject", "fold",
                           "balanced_accuracy",
                           "chance_balanced", "p_value") if c not in scores.columns]
    if missing:
        raise SummaryError(f"{os.path.relpath(path)}: missing columns {missing}")
    fmt = {"balanced acc": "{:.3f}".format, "chance": "{:.3f}".format}
    return [(f"Decoding ({path}; test predictions pooled over folds and subjects, p from "
             "label permutations):"),
            decoding_table(scores).to_string(index=False, formatters=fmt)]


def format_summary(results_dir) -> str:
    """The text that ``brainhead summary`` prints.

    Raises
    ------
    SummaryError
        When the results folder is missing, holds nothing to summarise, or lacks a file
        that its alignment or decoding results need.
    """
    results = Path(results_dir)
    if not results.is_dir():
        raise SummaryError(f"{os.path.relpath(results)}: results folder not found "
                           "(run `snakemake --cores N` first)")
    has_align = (results / "align").is_dir()
    has_decode = (results / "decode" / "scores.tsv").is_file()
    if not has_align and not has_decode:
        tables = sorted(results.glob("sub-*/responses.h5"))
        if not tables:
            raise SummaryError(f"{os.path.relpath(results)}: no alignment (align/), "
                               "decoding (decode/scores.tsv) or response tables "
                               "(sub-*/responses.h5) yet (run `snakemake --cores N`)")
        return (f"{results}: {len(tables)} response tables (sub-*/responses.h5); no "
                "alignment or decoding results: the study has no stimuli and no decode "
                "section, so it is preprocessed only (see report.html)")
    lines = _alignment_lines(results) if has_align else [
        f"{results}: decoding only (the study has no stimuli)"]
    if has_decode:
        lines += ["", *_decoding_lines(results)]
    return "\n".join(lines)


def _alignment_lines(results: Path) -> list[str]:
    summary, best, truth = load_results(results)
    fmt = {"r": "{:.3f}".format, "random r": "{:.3f}".format, "depth": "{:.2f}".format,
           "gap to last": "{:+.3f}".format, "median r": "{:.3f}".format,
           "median random r": "{:.3f}".format}
    models = ", ".join(sorted(set(summary["model"]))) if "model" in summary else "?"
    lines = [f"{results}: {summary['subject'].nunique()} subjects, model {models}",
             "",
             "Per modality (best layers chosen on training folds; r = held-out Pearson r):",
             modality_table(best, summary, truth).to_string(index=False, formatters=fmt),
             "",
             "Best layer per subject and region:",
             best_layer_table(best, truth).to_string(index=False, formatters=fmt)]
    return lines
