"""The alignment report: one self-contained HTML file with a layer curve per subject.

Every curve shows the trained model next to its random-weights control; for a simulated
study the planted layer of each region is marked, so recovery can be read off the page.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pandas as pd

from .io.store import atomic_path

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>brainhead alignment report: {{ study }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.ok { color: #1a7f37; } td.bad { color: #cf222e; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 32em; }
.note { color: #555; font-size: 0.9em; }
</style></head><body>
<h1>Brain&ndash;model alignment: {{ study }}</h1>
<p class="note">{{ description }}</p>
<p class="note">Score: held-out Pearson r of a ridge encoding model (alpha per target chosen
by grouped cross-validation inside the training folds; outer folds never split a run or a
stimulus), averaged over a region's targets. Solid: trained {{ model }}; dashed: the same
architecture with random weights (control).{% if has_truth %} Vertical line: the layer
planted in the simulation.{% endif %}</p>
<h2>Best layer per subject and region</h2>
<table><tr><th>subject</th><th>modality</th><th>region</th><th>best layer</th>
<th>r (trained)</th><th>r (random, same layer)</th>{% if has_truth %}<th>planted</th>{% endif %}</tr>
{% for row in best %}<tr><td>{{ row.subject }}</td><td>{{ row.modality }}</td>
<td>{{ row.region }}</td><td>{{ row.layer }}</td><td>{{ "%.3f"|format(row.score) }}</td>
<td>{{ "%.3f"|format(row.random) }}</td>{% if has_truth %}<td class="{{ 'ok' if row.planted == row.layer else 'bad' }}">{{ row.planted }}</td>{% endif %}</tr>
{% endfor %}</table>
{% for modality, figs in figures.items() %}
<h2>{{ modality }}</h2>
{% for fig in figs %}<figure><img alt="layer curve {{ fig.subject }}" src="data:image/png;base64,{{ fig.png }}">
<figcaption>sub-{{ fig.subject }}</figcaption></figure>{% endfor %}
{% endfor %}
<p class="note">Provenance: {{ provenance }}</p>
</body></html>
"""


def best_layers(summary: pd.DataFrame, truth: dict | None = None) -> pd.DataFrame:
    """Best layer (metric r, trained model) per subject, model and region.

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


def _layer_curve_png(sub: pd.DataFrame, planted: dict[str, int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (region, grp) in enumerate(sub.groupby("region", sort=True)):
        color = colors[k % len(colors)]
        for control, style in (("trained", "-"), ("random", "--")):
            g = grp[grp["control"] == control].sort_values("layer")
            ax.plot(g["layer"], g["score"], style, color=color, marker="o", ms=3,
                    label=f"{region} ({control})")
        if region in planted:
            ax.axvline(planted[region], color=color, lw=1, alpha=0.6)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("held-out r")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def make_report(summary_path, out_path, *, study: str, description: str = "",
                truth_path=None) -> Path:
    """Write the self-contained HTML report from ``align/summary.tsv``.

    Parameters
    ----------
    summary_path : path-like
        The summary table (see :data:`brainhead.align.SUMMARY_COLUMNS`).
    out_path : path-like
        ``results/<study>/report.html``; written atomically.
    study, description : str
        Shown in the title and header.
    truth_path : path-like | None
        ``truth.json`` of a simulated study; planted layers are marked.
    """
    from jinja2 import Environment

    summary = pd.read_csv(summary_path, sep="\t", dtype={"subject": str})
    truth = json.loads(Path(truth_path).read_text()) if truth_path else None
    r = summary[(summary["metric"] == "r") & (summary["region"] != "all")]
    if r.empty:  # studies without region labels: fall back to all targets
        r = summary[summary["metric"] == "r"]
    best = best_layers(r, truth)
    figures: dict[str, list] = {}
    for (modality, subject), sub in r.groupby(["modality", "subject"], sort=True):
        planted = truth["subjects"].get(subject, {}).get("regions", {}) if truth else {}
        figures.setdefault(modality, []).append(
            {"subject": subject, "png": _layer_curve_png(sub, planted)})
    html = Environment(autoescape=True).from_string(_TEMPLATE).render(
        study=study, description=description, model=", ".join(sorted(set(summary["model"]))),
        best=best.to_dict("records"), figures=figures, has_truth=truth is not None,
        provenance=f"{len(summary)} summary rows, {summary['subject'].nunique()} subjects",
    )
    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(html)
    return Path(out_path)


def recovery_table(summary: pd.DataFrame, truth: dict) -> pd.DataFrame:
    """Per simulated subject and region: planted layer, best layer, trained and random r."""
    best = best_layers(summary[summary["region"] != "all"], truth)
    best["recovered"] = best["layer"] == best["planted"]
    best["beats_random"] = best["score"] > best["random"]
    return best


__all__ = ["make_report", "best_layers", "recovery_table"]
