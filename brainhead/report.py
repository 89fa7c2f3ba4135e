"""The alignment report: one self-contained HTML file.

Per subject it shows the layer curves of every metric (held-out r with its bootstrap
interval, RSA, CKA) for the trained model next to its random-weights control; per region
the best layer chosen on training folds only, the intermediate-layer advantage, the
trained-minus-random test and, where stimuli repeat, noise-ceiling-normalised scores.
For a simulated study the planted layer of each region is marked, so recovery can be
read off the page.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .io.store import atomic_path

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>brainhead alignment report: {{ study }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.ok { color: #1a7f37; } td.bad { color: #cf222e; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 46em; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
</style></head><body>
<h1>Brain&ndash;model alignment: {{ study }}</h1>
<p class="note">{{ description }}</p>
<p class="note"><b>Metrics.</b> <i>r</i>: held-out Pearson r of a ridge encoding model
(alpha per target chosen by grouped cross-validation inside the training folds; outer folds
never put a stimulus on both sides), averaged over a region's targets, with a
{{ ci_pct }}% bootstrap interval over stimuli and a permutation p-value (responses shuffled
across the test stimuli of each fold; circular shifts within runs for the time-series
view, whose onset-only response is removed first). <i>r_ceiled</i>: r over the noise
ceiling of each target, where stimuli repeat (unreliable targets left out, clipped at 1).
<i>rsa</i>: Spearman correlation of brain and layer RDMs; <i>rsa_crossnobis</i>: the same
with a crossnobis brain RDM across presentations. <i>cka</i>: linear CKA. p-values of
rsa and cka permute stimulus labels. Solid lines: trained {{ model }};
dashed: the same architecture with random weights (the control).
q: Benjamini&ndash;Hochberg across every test of a subject.{% if has_truth %}
Vertical lines: the layer planted in the simulation.{% endif %}</p>

{% if modality_rows %}<h2>Per modality</h2>
<table><tr><th>modality</th><th>subjects</th><th>regions</th><th>median r at best layer</th>
<th>median random r, same layer</th><th>trained &gt; random (CI above 0)</th>
{% if has_truth %}<th>planted layer recovered</th>{% endif %}</tr>
{% for row in modality_rows %}<tr><td>{{ row.modality }}</td><td>{{ row.n_subjects }}</td>
<td>{{ row.n_regions }}</td><td>{{ "%.3f"|format(row.score) }}</td>
<td>{{ "%.3f"|format(row.random) }}</td><td>{{ row.beats }}</td>
{% if has_truth %}<td>{{ row.recovered }}</td>{% endif %}</tr>{% endfor %}</table>{% endif %}

<h2>Best layer per subject and region</h2>
<p class="note">Chosen in each outer fold from scores of the training data only (leave-one-stimulus-out by default);
the score is the held-out r of that choice (never the maximum of the test curve).
Gap: r at the best layer minus r at the last layer (the intermediate-layer advantage),
with its bootstrap interval; depth = best layer / last layer.</p>
<table><tr><th>subject</th><th>modality</th><th>region</th><th>best layer</th>
<th>per fold</th><th>r</th><th>random r</th><th>depth</th><th>gap to last</th>
<th>gap CI</th><th>p (q) of r</th>{% if has_ceiling %}<th>r / ceiling</th>{% endif %}{% if has_truth %}<th>planted</th>{% endif %}</tr>
{% for row in best %}<tr><td>{{ row.subject }}</td><td>{{ row.modality }}</td>
<td>{{ row.region }}</td><td>{{ row.best_layer }}</td><td>{{ row.layers_per_fold }}</td>
<td>{{ "%.3f"|format(row.score) }}</td><td>{{ "%.3f"|format(row.random_score) }}</td>
<td>{{ "%.2f"|format(row.relative_depth) }}</td><td>{{ "%.3f"|format(row.gap_to_last) }}</td>
<td>[{{ "%.3f"|format(row.gap_ci_low) }}, {{ "%.3f"|format(row.gap_ci_high) }}]</td>
<td>{{ row.pq }}</td>
{% if has_ceiling %}<td>{{ row.ceiled }}</td>{% endif %}
{% if has_truth %}<td class="{{ 'ok' if row.planted == row.best_layer else 'bad' }}">{{ row.planted }}</td>{% endif %}</tr>
{% endfor %}</table>

<h2>Trained versus random weights</h2>
<p class="note">r(trained) &minus; r(random) at each layer, with a paired bootstrap over
stimuli (the same resampled stimuli for both models). A layer counts when its interval
lies above zero.</p>
<table><tr><th>subject</th><th>region</th><th>layers with trained &gt; random</th>
<th>layers with random &gt; trained</th><th>largest gap (layer)</th></tr>
{% for row in paired %}<tr><td>{{ row.subject }}</td><td>{{ row.region }}</td>
<td>{{ row.n_better }} / {{ row.n_layers }}</td><td>{{ row.n_worse }}</td>
<td>{{ "%.3f"|format(row.max_gap) }} ({{ row.max_layer }})</td></tr>{% endfor %}</table>

{% for modality, figs in figures.items() %}
<h2>{{ modality }}</h2>
{% for fig in figs %}<figure><img alt="layer curves sub-{{ fig.subject }}" src="data:image/png;base64,{{ fig.png }}">
<figcaption>sub-{{ fig.subject }} ({{ fig.view }} view)</figcaption></figure>{% endfor %}
{% endfor %}
{% for enc in encoders %}
<h2>Voxel cross-attention encoder: {{ enc.modality }}</h2>
<p class="note">One model trained jointly on the {{ enc.n_subjects }} {{ enc.modality }}
subjects (every target owns a learned query over the layers of {{ enc.model }}), scored on
the same outer folds as ridge{% if not enc.folds_match %} (<b>not</b> fold-matched: the
subjects share no stimulus-grouped split, see summary.json){% endif %}. Encoder r: held-out
Pearson r averaged over a region's targets; random: the same encoder trained on the features
of the random-weights model. Ridge r: held-out r of ridge at its best layer (chosen on
training folds). Profile peak: the layer with the largest mean attention weight in the
region.{% if has_truth %} Planted: the layer that drives the region in the simulation.{% endif %}
{{ enc.n_runs }} training runs on {{ enc.device }}, {{ "%.0f"|format(enc.seconds) }} s.</p>
<table><tr><th>subject</th><th>region</th><th>encoder r</th><th>random-feature r</th>
<th>ridge r (best layer)</th><th>encoder / ridge</th><th>profile peak</th><th>ridge best layer</th>
{% if has_truth %}<th>planted</th>{% endif %}</tr>
{% for row in enc.rows %}<tr><td>{{ row.subject }}</td><td>{{ row.region }}</td>
<td>{{ "%.3f"|format(row.trained) }}</td><td>{{ "%.3f"|format(row.random) }}</td>
<td>{{ row.ridge_txt }}</td><td>{{ row.ratio_txt }}</td><td>{{ row.peak }}</td><td>{{ row.ridge_layer }}</td>
{% if has_truth %}<td class="{{ 'ok' if row.planted_ok else 'bad' }}">{{ row.planted }}</td>{% endif %}</tr>
{% endfor %}</table>
<figure><img alt="encoder layer profiles {{ enc.modality }}" src="data:image/png;base64,{{ enc.profile_png }}">
<figcaption>Layer profile: attention over layers averaged over held-out stimuli and a
region's targets, per subject (thin) and their mean (thick); trained features.</figcaption></figure>
{% if enc.transfer_png %}<figure><img alt="new-subject transfer {{ enc.modality }}" src="data:image/png;base64,{{ enc.transfer_png }}">
<figcaption>New-subject transfer (sub-{{ enc.transfer_subject }}, fold 0): only its target
embeddings and read-outs learnt, everything else frozen, against the same architecture
trained on that subject alone, by the fraction of its training stimuli.</figcaption></figure>{% endif %}
{% if enc.crowd %}<table><tr><th>subject</th><th>fraction of stimuli</th><th>stimuli</th>
<th>joint r</th><th>per-subject r</th><th>joint &minus; per-subject</th></tr>
{% for row in enc.crowd %}<tr><td>{{ row.subject }}</td><td>{{ row.fraction }}</td><td>{{ row.n_stimuli }}</td>
<td>{{ "%.3f"|format(row.joint) }}</td><td>{{ "%.3f"|format(row.per_subject) }}</td>
<td>{{ "%+.3f"|format(row.joint - row.per_subject) }}</td></tr>{% endfor %}</table>
<p class="note">Crowd effect (fold 0): one model trained on all subjects against one model
per subject, each subject with the same random fraction of its training stimuli; held-out r
over all of the subject's targets.</p>{% endif %}
{% endfor %}
<p class="note">Provenance: {{ provenance }}</p>
</body></html>
"""


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


def _planted(truth: dict | None, subject: str, region: str) -> int:
    if truth is None:
        return -1
    return int(truth["subjects"].get(subject, {}).get("regions", {}).get(region, -1))


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
    table["planted"] = [_planted(truth, s, g) for s, g in zip(table["subject"], table["region"])]
    table = table[table["planted"] >= 0]
    table["recovered"] = table["best_layer"] == table["planted"]
    table["beats_random"] = table["score"] > table["random_score"]
    return table.reset_index(drop=True)


def _layer_curves_png(sub: pd.DataFrame, planted: dict[str, int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("r", "r_ceiled", "rsa", "rsa_crossnobis", "cka")
               if (sub["metric"] == m).any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0), dpi=90,
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    regions = sorted(set(sub["region"]) - {"all"}) or ["all"]
    for ax, metric in zip(axes[0], metrics):
        for k, region in enumerate(regions):
            color = colors[k % len(colors)]
            grp = sub[(sub["region"] == region) & (sub["metric"] == metric)]
            for control, style in (("trained", "-"), ("random", "--")):
                g = grp[grp["control"] == control].sort_values("layer")
                if g.empty:
                    continue
                ax.plot(g["layer"], g["score"], style, color=color, marker="o", ms=3,
                        label=f"{region} ({control})")
                if g["ci_low"].notna().any():
                    ax.fill_between(g["layer"], g["ci_low"], g["ci_high"], color=color,
                                    alpha=0.15, lw=0)
            if region in planted:
                ax.axvline(planted[region], color=color, lw=1, alpha=0.6)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("score", fontsize=8)
    axes[0][0].legend(fontsize=6, ncol=1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _paired_rows(summary: pd.DataFrame) -> list[dict]:
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


def _modality_rows(best: pd.DataFrame, summary: pd.DataFrame, has_truth: bool) -> list[dict]:
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


def _fig_png(fig) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _profile_png(profile: pd.DataFrame, planted: dict[str, int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = profile[(profile["control"] == "trained") & (profile["region"] != "all")]
    regions = sorted(set(trained["region"]))
    fig, ax = plt.subplots(figsize=(5.0, 3.0), dpi=90)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, region in enumerate(regions):
        color = colors[k % len(colors)]
        grp = trained[trained["region"] == region]
        for _, sub in grp.groupby("subject"):
            sub = sub.sort_values("layer")
            ax.plot(sub["layer"], sub["weight"], color=color, lw=0.6, alpha=0.5)
        mean = grp.groupby("layer")["weight"].mean()
        ax.plot(mean.index, mean.to_numpy(), color=color, lw=2, marker="o", ms=3, label=region)
        if region in planted:
            ax.axvline(planted[region], color=color, lw=1, ls=":")
    ax.set_xlabel("layer (0 = embeddings)", fontsize=8)
    ax.set_ylabel("attention weight", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return _fig_png(fig)


def _transfer_png(transfer: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    allr = transfer[transfer["region"] == "all"]
    fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=90)
    for method, style in (("transfer", "-o"), ("alone", "--s")):
        g = allr[allr["method"] == method].sort_values("fraction")
        ax.plot(g["fraction"], g["r"], style, ms=4, label=method)
    ax.set_xlabel("fraction of the new subject's training stimuli", fontsize=8)
    ax.set_ylabel("held-out r (all targets)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return _fig_png(fig)


def encoder_sections(model_dirs, best: pd.DataFrame, truth: dict | None) -> list[dict]:
    """The report's voxel-encoder sections, one per ``models/voxel_xattn/<modality>``.

    Each row compares, per subject and region, the encoder's held-out r (trained and
    random-weights features) with ridge's held-out r at its train-chosen best layer.
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
            peak = int(prof.loc[prof["weight"].idxmax(), "layer"]) if not prof.empty else -1
            key = (row.subject, row.region)
            ridge = (float(best_idx.loc[key, "score"]) if best_idx is not None
                     and key in best_idx.index else np.nan)
            ridge_layer = (int(best_idx.loc[key, "best_layer"]) if np.isfinite(ridge) else "n/a")
            planted = _planted(truth, row.subject, row.region)
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
            "seconds": summary["seconds"], "rows": rows,
            "profile_png": _profile_png(profile, planted),
            "transfer_png": _transfer_png(transfer) if not transfer.empty else "",
            "transfer_subject": summary.get("transfer_subject"), "crowd": crowd_rows})
    return sections


def make_report(summary_path, out_path, *, study: str, description: str = "",
                truth_path=None, best_path=None, ci: float = 0.95, model_dirs=()) -> Path:
    """Write the self-contained HTML report.

    Parameters
    ----------
    summary_path : path-like
        ``align/summary.tsv`` (see :data:`brainhead.align.SUMMARY_COLUMNS`).
    out_path : path-like
        ``results/<study>/report.html``; written atomically.
    study, description : str
        Shown in the title and header.
    truth_path : path-like | None
        ``truth.json`` of a simulated study; planted layers are marked.
    best_path : path-like | None
        ``align/best_layers.tsv``; without it the best-layer table is empty.
    model_dirs : sequence of path-like
        ``models/voxel_xattn/<modality>`` folders of trained encoders; each gets a
        section (see :func:`encoder_sections`).
    ci : float
        Level of the bootstrap intervals in the summary (for the text).
    """
    from jinja2 import Environment

    from .align.scores import BEST_COLUMNS

    summary = pd.read_csv(summary_path, sep="\t", dtype={"subject": str})
    truth = json.loads(Path(truth_path).read_text()) if truth_path else None
    best = (pd.read_csv(best_path, sep="\t", dtype={"subject": str}) if best_path
            else pd.DataFrame(columns=BEST_COLUMNS))
    regional = best[best["region"] != "all"]
    best = regional if not regional.empty else best
    best = best.copy()
    best["planted"] = [_planted(truth, s, g) for s, g in zip(best["subject"], best["region"])]
    r_rows = summary[(summary["metric"] == "r") & (summary["control"] == "trained")]
    r_lookup = r_rows.set_index(["subject", "model", "region", "layer"])
    best["pq"] = [
        f"{r_lookup.loc[k, 'p']:.3g} ({r_lookup.loc[k, 'q']:.3g})" if k in r_lookup.index
        else "n/a"
        for k in zip(best["subject"], best["model"], best["region"], best["best_layer"])]
    ceiled = summary[(summary["metric"] == "r_ceiled") & (summary["control"] == "trained")]
    has_ceiling = not ceiled.empty
    if has_ceiling:
        lookup = ceiled.set_index(["subject", "model", "region", "layer"])
        best["ceiled"] = [
            (f"{lookup.loc[k, 'score']:.3f} ({int(lookup.loc[k, 'n_targets'])} reliable, "
             f"{int(lookup.loc[k, 'n_clipped'])} clipped)") if k in lookup.index else "n/a"
            for k in zip(best["subject"], best["model"], best["region"], best["best_layer"])]
    figures: dict[str, list] = {}
    curves = summary[summary["control"].isin(["trained", "random"])]
    for (modality, subject), sub in curves.groupby(["modality", "subject"], sort=True):
        planted = truth["subjects"].get(subject, {}).get("regions", {}) if truth else {}
        view = sub["view"].iloc[0] if "view" in sub else "stimulus"
        figures.setdefault(modality, []).append(
            {"subject": subject, "view": view, "png": _layer_curves_png(sub, planted)})
    html = Environment(autoescape=True).from_string(_TEMPLATE).render(
        study=study, description=description, model=", ".join(sorted(set(summary["model"]))),
        best=best.to_dict("records"), figures=figures, has_truth=truth is not None,
        has_ceiling=has_ceiling, paired=_paired_rows(summary),
        modality_rows=_modality_rows(best, summary, truth is not None),
        ci_pct=f"{100 * ci:g}",
        encoders=encoder_sections(model_dirs, best, truth),
        provenance=f"{len(summary)} summary rows, {summary['subject'].nunique()} subjects",
    )
    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(html)
    return Path(out_path)


__all__ = ["make_report", "best_layers", "encoder_sections", "recovery_table"]
