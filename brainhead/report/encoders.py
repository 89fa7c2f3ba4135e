"""Report section of the voxel cross-attention encoder (``models/voxel_xattn/<modality>``).

A model family adds its section the same way: a module with a function decorated with
:func:`brainhead.report.sections.register_section`, imported by
``brainhead/report/__init__.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import figure_name, profile_figure, transfer_figure
from .sections import ReportBuilder, ReportContext, register_section, render
from .tables import planted_layer

FAMILY = "voxel_xattn"

_TEMPLATE = """
<p class="bh-note">One model trained jointly on the {{ enc.n_subjects }} {{ enc.modality }}
subjects (every target owns a learned query over the layers of {{ enc.model }}), scored on
the same outer folds as ridge{% if not enc.folds_match %} (<b>not</b> fold-matched: the
subjects share no stimulus-grouped split, see summary.json){% endif %}. Encoder r: held-out
Pearson r averaged over a region's targets; random: the same encoder trained on the features
of the random-weights model. Ridge r: held-out r of ridge at its best layer (chosen on
training folds). Profile peak: the layer that contributes most to the region's held-out
predicted responses (its attention-weighted read-out's share of their variance).{% if has_truth %} Planted: the layer that drives the region in the simulation.{% endif %}
{{ enc.n_runs }} training runs on {{ enc.device }}, {{ "%.0f"|format(enc.seconds) }} s.</p>
<table class="bh"><tr><th>subject</th><th>region</th><th>encoder r</th><th>random-feature r</th>
<th>ridge r (best layer)</th><th>encoder / ridge</th><th>profile peak</th><th>ridge best layer</th>
{% if has_truth %}<th>planted</th>{% endif %}</tr>
{% for row in enc.rows %}<tr><td>{{ row.subject }}</td><td>{{ row.region }}</td>
<td>{{ "%.3f"|format(row.trained) }}</td><td>{{ "%.3f"|format(row.random) }}</td>
<td>{{ row.ridge_txt }}</td><td>{{ row.ratio_txt }}</td><td>{{ row.peak }}</td><td>{{ row.ridge_layer }}</td>
{% if has_truth %}<td class="{{ 'ok' if row.planted_ok else 'bad' }}">{{ row.planted }}</td>{% endif %}</tr>
{% endfor %}</table>
{% if enc.crowd %}<p class="bh-note">Crowd effect (fold 0): one model trained on all subjects
against one model per subject, each subject with the same random fraction of its training
stimuli; held-out r over all of the subject's targets.</p>
<table class="bh"><tr><th>subject</th><th>fraction of stimuli</th><th>stimuli</th>
<th>joint r</th><th>per-subject r</th><th>joint &minus; per-subject</th></tr>
{% for row in enc.crowd %}<tr><td>{{ row.subject }}</td><td>{{ row.fraction }}</td><td>{{ row.n_stimuli }}</td>
<td>{{ "%.3f"|format(row.joint) }}</td><td>{{ "%.3f"|format(row.per_subject) }}</td>
<td>{{ "%+.3f"|format(row.joint - row.per_subject) }}</td></tr>{% endfor %}</table>{% endif %}
"""


def encoder_sections(model_dirs, best: pd.DataFrame, truth: dict | None) -> list[dict]:
    """The data of the voxel-encoder sections, one per ``models/voxel_xattn/<modality>``.

    Each row compares, per subject and region, the encoder's held-out r (trained and
    random-weights features) with ridge's held-out r at its train-chosen best layer.

    Returns
    -------
    sections : list of dict
        Keys modality, model, n_subjects, folds_match, n_runs, device, seconds, rows,
        crowd, transfer_subject, and the tables profile, transfer (DataFrames) and
        planted (region -> layer) that the figures are drawn from.
    """
    sections = []
    for folder in model_dirs:
        folder = Path(folder)
        summary = json.loads((folder / "summary.json").read_text())
        mine = best[best["model"] == summary["model"]] if "model" in best else best
        best_idx = mine.set_index(["subject", "region"]) if not mine.empty else None
        scores = pd.read_csv(folder / "scores.tsv", sep="\t", dtype={"subject": str})
        profile = pd.read_csv(folder / "layer_profile.tsv", sep="\t", dtype={"subject": str})
        transfer = pd.read_csv(folder / "transfer.tsv", sep="\t", dtype={"subject": str})
        crowd = pd.read_csv(folder / "crowd.tsv", sep="\t", dtype={"subject": str})
        wide = scores.pivot_table(index=["subject", "region"], columns="control",
                                  values="score").reset_index()
        rows = []
        for row in wide.itertuples(index=False):
            if row.region == "all":
                continue
            prof = profile[(profile["subject"] == row.subject) & (profile["region"] == row.region)
                           & (profile["control"] == "trained")]
            measure = "contribution" if "contribution" in prof else "weight"
            peak = int(prof.loc[prof[measure].idxmax(), "layer"]) if not prof.empty else -1
            key = (row.subject, row.region)
            ridge = (float(best_idx.loc[key, "score"]) if best_idx is not None
                     and key in best_idx.index else np.nan)
            ridge_layer = (int(best_idx.loc[key, "best_layer"]) if np.isfinite(ridge) else "n/a")
            planted = planted_layer(truth, row.subject, row.region)
            rows.append({"subject": row.subject, "region": row.region,
                         "trained": float(row.trained), "random": float(row.random),
                         "ridge": ridge, "ridge_txt": f"{ridge:.3f}" if np.isfinite(ridge) else "n/a",
                         "ratio_txt": (f"{row.trained / ridge:.2f}" if np.isfinite(ridge)
                                       and ridge > 0 else "n/a"),
                         "peak": peak, "ridge_layer": ridge_layer, "planted": planted,
                         "planted_ok": abs(peak - planted) <= 1})
        crowd_rows = []
        allc = crowd[crowd["region"] == "all"]
        for (subject, fraction), grp in allc.groupby(["subject", "fraction"], sort=True):
            by = grp.set_index("method")["r"]
            if {"joint", "per_subject"} <= set(by.index):
                crowd_rows.append({"subject": subject, "fraction": fraction,
                                   "n_stimuli": int(grp["n_stimuli"].iloc[0]),
                                   "joint": float(by["joint"]),
                                   "per_subject": float(by["per_subject"])})
        planted = {}
        if truth is not None and summary["subjects"]:
            planted = truth["subjects"].get(summary["subjects"][0], {}).get("regions", {})
        sections.append({
            "modality": summary["modality"], "model": summary["model"],
            "n_subjects": len(summary["subjects"]), "folds_match": summary["folds_match_ridge"],
            "n_runs": len(summary["runs"]), "device": summary["device"],
            "seconds": summary["seconds"], "rows": rows, "crowd": crowd_rows,
            "transfer_subject": summary.get("transfer_subject"),
            "profile": profile, "transfer": transfer, "planted": planted})
    return sections


@register_section("voxel_xattn", order=60)
def voxel_xattn_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Per trained modality: the comparison table, layer profiles and transfer curve."""
    dirs = [d for d in ctx.model_dirs if Path(d).parent.name == FAMILY] or \
        [d for d in ctx.model_dirs if (Path(d) / "layer_profile.tsv").is_file()]
    for enc in encoder_sections(dirs, ctx.best, ctx.truth):
        modality = enc["modality"]
        section = f"Voxel cross-attention encoder: {modality}"
        tags = ("encoder", FAMILY, modality)
        report.html(f"{modality}: encoder against ridge", render(
            _TEMPLATE, enc=enc, has_truth=ctx.truth is not None), section=section, tags=tags)
        report.figure(
            profile_figure(enc["profile"], enc["planted"]),
            figure_name(FAMILY, modality, "all-subjects", "all-regions", "attention_layer-profile"),
            f"{modality}: layer profiles",
            f"Layer profiles of the voxel encoder ({modality}) over the layers of "
            f"{enc['model']}, per subject (thin lines) and their mean (thick), trained "
            "features. Left: each layer's share of the variance of the held-out predicted "
            "responses (its attention-weighted read-out), averaged over a region's targets. "
            "Right: the attention weight, averaged over held-out stimuli and the region's "
            "targets; neighbouring layers carry similar features, so attention can split "
            "between layers that the read-out then uses unequally"
            + ("; dotted lines: planted layers." if enc["planted"] else "."),
            section=section, tags=tags)
        if not enc["transfer"].empty:
            report.figure(
                transfer_figure(enc["transfer"]),
                figure_name(FAMILY, modality, f"sub-{enc['transfer_subject']}", "all-regions",
                            "r_transfer"),
                f"{modality}: new-subject transfer",
                f"New-subject transfer (sub-{enc['transfer_subject']}, fold 0): held-out r "
                "over all its targets when only its target embeddings and read-outs are "
                "learnt (everything else frozen), against the same architecture trained on "
                "that subject alone, by the fraction of its training stimuli.",
                section=section, tags=tags)
