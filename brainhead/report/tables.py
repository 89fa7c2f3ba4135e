"""Tables of the report: best layers, recovery of planted layers, trained versus random.

The functions returning DataFrames are public (tests and ``brainhead summary`` use
them); the ``*_rows`` helpers shape rows for the HTML templates of
:mod:`brainhead.report.sections`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def planted_layer(truth: dict | None, subject: str, region: str) -> int:
    """The layer planted in ``region`` of ``subject`` by the simulator, or -1."""
    if truth is None:
        return -1
    return int(truth["subjects"].get(subject, {}).get("regions", {}).get(region, -1))


def best_layers(summary: pd.DataFrame, truth: dict | None = None) -> pd.DataFrame:
    """Peak of the held-out r curve (trained model) per subject, model and region.

    This is descriptive (it looks at test scores); the report's best layers come from
    the training folds (``align/best_layers.tsv``).

    Returns
    -------
    best : DataFrame
        Columns subject, modality, model, region, layer, score, random (the control's
        score at that layer) and, when ``truth`` is given, planted.
    """
    r = summary[summary["metric"] == "r"]
    trained = r[r["control"] == "trained"]
    random = r[r["control"] == "random"].set_index(["subject", "model", "region", "layer"])["score"]
    idx = trained.groupby(["subject", "model", "region"])["score"].idxmax()
    best = trained.loc[idx, ["subject", "modality", "model", "region", "layer", "score"]].copy()
    best["random"] = [random.loc[(s, m, g, layer)] for s, m, g, layer in
                      best[["subject", "model", "region", "layer"]].itertuples(index=False)]
    if truth is not None:
        best["planted"] = [truth["subjects"].get(s, {}).get("regions", {}).get(g, -1)
                           for s, g in zip(best["subject"], best["region"])]
    return best.reset_index(drop=True)


def recovery_table(best: pd.DataFrame, truth: dict) -> pd.DataFrame:
    """Per simulated subject and region: planted layer against the train-chosen best.

    Parameters
    ----------
    best : DataFrame
        ``align/best_layers.tsv`` (:data:`brainhead.align.BEST_COLUMNS`).
    truth : dict
        ``truth.json`` of the simulated study.

    Returns
    -------
    table : DataFrame
        The rows of ``best`` for planted regions, with columns planted, recovered
        (best layer equals the planted one) and beats_random (held-out r of the chosen
        layer above the random control's r at that layer).
    """
    table = best[best["region"] != "all"].copy()
    table["planted"] = [planted_layer(truth, s, g)
                        for s, g in zip(table["subject"], table["region"])]
    table = table[table["planted"] >= 0]
    table["recovered"] = table["best_layer"] == table["planted"]
    table["beats_random"] = table["score"] > table["random_score"]
    return table.reset_index(drop=True)


def regional_best(best: pd.DataFrame, summary: pd.DataFrame, truth: dict | None
                  ) -> pd.DataFrame:
    """The best-layer rows the report shows: regions (or 'all' without regions).

    Adds the columns planted, pq (``"p (q)"`` of r at the best layer) and, where the
    summary has ``r_ceiled`` rows, ceiled (text).
    """
    regional = best[best["region"] != "all"]
    best = (regional if not regional.empty else best).copy()
    best["planted"] = [planted_layer(truth, s, g) for s, g in zip(best["subject"], best["region"])]
    keys = list(zip(best["subject"], best["model"], best["region"], best["best_layer"]))
    r_rows = summary[(summary["metric"] == "r") & (summary["control"] == "trained")]
    r_lookup = r_rows.set_index(["subject", "model", "region", "layer"])
    best["pq"] = [f"{r_lookup.loc[k, 'p']:.3g} ({r_lookup.loc[k, 'q']:.3g})"
                  if k in r_lookup.index else "n/a" for k in keys]
    ceiled = summary[(summary["metric"] == "r_ceiled") & (summary["control"] == "trained")]
    if not ceiled.empty:
        lookup = ceiled.set_index(["subject", "model", "region", "layer"])
        best["ceiled"] = [
            (f"{lookup.loc[k, 'score']:.3f} ({int(lookup.loc[k, 'n_targets'])} reliable, "
             f"{int(lookup.loc[k, 'n_clipped'])} clipped)") if k in lookup.index else "n/a"
            for k in keys]
    return best.reset_index(drop=True)


def paired_rows(summary: pd.DataFrame) -> list[dict]:
    """Per subject and region: layers where trained beats random (paired bootstrap)."""
    diff = summary[(summary["metric"] == "r_diff") & (summary["region"] != "all")]
    rows = []
    for (subject, region), grp in diff.groupby(["subject", "region"], sort=True):
        grp = grp.sort_values("layer")
        k = int(np.nanargmax(grp["score"].to_numpy())) if grp["score"].notna().any() else 0
        rows.append({"subject": subject, "region": region, "n_layers": len(grp),
                     "n_better": int((grp["ci_low"] > 0).sum()),
                     "n_worse": int((grp["ci_high"] < 0).sum()),
                     "max_gap": float(grp["score"].iloc[k]),
                     "max_layer": int(grp["layer"].iloc[k])})
    return rows


def modality_rows(best: pd.DataFrame, summary: pd.DataFrame, has_truth: bool) -> list[dict]:
    """Per modality: subjects, regions, median r at the best layer, wins over random."""
    diff = summary[summary["metric"] == "r_diff"].set_index(
        ["subject", "model", "region", "layer"])
    rows = []
    for modality, grp in best.groupby("modality", sort=True):
        beats = 0
        for row in grp.itertuples(index=False):
            key = (row.subject, row.model, row.region, row.best_layer)
            beats += int(key in diff.index and diff.loc[key, "ci_low"] > 0)
        out = {"modality": modality, "n_subjects": grp["subject"].nunique(),
               "n_regions": len(grp), "score": float(grp["score"].median()),
               "random": float(grp["random_score"].median()),
               "beats": f"{beats}/{len(grp)}"}
        if has_truth:
            rec = int((grp["best_layer"] == grp["planted"]).sum())
            out["recovered"] = f"{rec}/{len(grp)}"
        rows.append(out)
    return rows
