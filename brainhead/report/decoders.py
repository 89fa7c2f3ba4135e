"""Report section of the subject-adapter decoder (``models/adapters/<modality>``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .figures import figure_name, fraction_figure, pyplot
from .sections import ReportBuilder, ReportContext, register_section, render

FAMILY = "adapters"

_TEMPLATE = """
<p class="bh-note">One decoder shared by the {{ n_subjects }} {{ modality }} subjects (a
linear or MLP adapter per subject into a shared space, one residual MLP to the features of
every layer of {{ model }}), scored on the same outer folds as ridge. Retrieval: each
held-out stimulus's decoded features against the true features of all held-out stimuli of
its fold (about {{ n_candidates }} candidates), top-1 accuracy; chance is one over the
number of candidates; p: permutation of the candidates' labels ({{ n_perm }} draws).
Controls: random-weights features, and stimulus labels permuted within the training data
(<i>shuffled</i>, which must sit at chance). {{ n_runs }} training runs, {{ seconds }} s.</p>
<table class="bh"><tr><th>subject</th><th>best layer (trained)</th><th>top-1</th><th>top-5</th>
<th>chance top-1</th><th>p (top-1)</th><th>random top-1</th><th>shuffled top-1</th></tr>
{% for row in rows %}<tr><td>{{ row.subject }}</td><td>{{ row.layer }}</td>
<td>{{ "%.3f"|format(row.top1) }}</td><td>{{ "%.3f"|format(row.top5) }}</td>
<td>{{ "%.3f"|format(row.chance) }}</td><td>{{ "%.3g"|format(row.p) }}</td>
<td>{{ "%.3f"|format(row.random) }}</td><td>{{ "%.3f"|format(row.shuffled) }}</td></tr>
{% endfor %}</table>
{% if crowd %}<p class="bh-note">Joint against per-subject decoders (fold 0): each subject
keeps its own subset of its training stimuli (the joint decoder sees their union through
the subjects that kept them); top-1 among the fold's held-out stimuli, mean over layers.</p>
<table class="bh"><tr><th>subject</th><th>fraction</th><th>stimuli</th><th>joint top-1</th>
<th>per-subject top-1</th><th>chance</th></tr>
{% for row in crowd %}<tr><td>{{ row.subject }}</td><td>{{ row.fraction }}</td>
<td>{{ row.n_stimuli }}</td><td>{{ "%.3f"|format(row.joint) }}</td>
<td>{{ "%.3f"|format(row.per_subject) }}</td><td>{{ "%.3f"|format(row.chance) }}</td></tr>
{% endfor %}</table>{% endif %}
"""


def crowd_rows(crowd: pd.DataFrame) -> list[dict]:
    """Per subject and fraction: joint and per-subject top-1 (mean over layers), chance."""
    if crowd.empty:
        return []
    wide = crowd.pivot_table(index=["subject", "fraction", "n_stimuli", "n_candidates"],
                             columns="method", values="top1", aggfunc="mean").reset_index()
    return [{"subject": r["subject"], "fraction": r["fraction"], "n_stimuli": int(r["n_stimuli"]),
             "joint": r.get("joint", float("nan")),
             "per_subject": r.get("per_subject", float("nan")),
             "chance": 1.0 / r["n_candidates"]} for _, r in wide.iterrows()]


def decoder_rows(retrieval: pd.DataFrame) -> list[dict]:
    """Per subject: the trained layer of best top-1 with its controls at that layer."""
    rows = []
    for subject, g in retrieval.groupby("subject", sort=True):
        trained = g[g["control"] == "trained"].set_index("layer")
        layer = int(trained["top1"].idxmax())
        at = g[g["layer"] == layer].set_index("control")["top1"]
        rows.append({"subject": subject, "layer": layer, "top1": trained.loc[layer, "top1"],
                     "top5": trained.loc[layer, "top5"],
                     "chance": trained.loc[layer, "chance_top1"],
                     "p": trained.loc[layer, "p_top1"], "random": at.get("random", float("nan")),
                     "shuffled": at.get("shuffled", float("nan"))})
    return rows


def retrieval_figure(retrieval: pd.DataFrame):
    """Top-1 retrieval by layer, per subject, for every control, with the chance level."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    styles = {"trained": "-", "random": "--", "shuffled": ":"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (subject, g) in enumerate(retrieval.groupby("subject", sort=True)):
        for control, style in styles.items():
            c = g[g["control"] == control].sort_values("layer")
            if not c.empty:
                ax.plot(c["layer"], c["top1"], style, color=colors[i % len(colors)], lw=1.2,
                        label=f"sub-{subject} {control}")
    ax.axhline(retrieval["chance_top1"].mean(), color="0.4", lw=0.8)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_ylabel("held-out top-1 retrieval", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def adaptation_figure(adaptation: pd.DataFrame):
    """Reset-tuning against a from-scratch decoder, by fraction of stimuli (best layer)."""
    best = adaptation.groupby(["method", "fraction"])["top1"].max().reset_index()
    return fraction_figure(best, "top1", ("reset_tuning", "scratch"),
                           "held-out top-1 (best layer)")


@register_section("adapters", order=65)
def adapters_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Per trained modality: retrieval table, layer curves and reset-tuning curve."""
    for folder in sorted(Path(d) for d in ctx.model_dirs if Path(d).parent.name == FAMILY):
        summary = json.loads((folder / "summary.json").read_text())
        retrieval = pd.read_csv(folder / "retrieval.tsv", sep="\t", dtype={"subject": str})
        adaptation = pd.read_csv(folder / "adaptation.tsv", sep="\t", dtype={"subject": str})
        crowd_path = folder / "crowd.tsv"
        crowd = (pd.read_csv(crowd_path, sep="\t", dtype={"subject": str})
                 if crowd_path.is_file() else pd.DataFrame())
        modality = summary["modality"]
        section = f"Subject adapters and shared decoder: {modality}"
        tags = ("decoder", FAMILY, modality)
        n_cand = (retrieval["n_stimuli"] / summary["n_folds"]).mean() if len(retrieval) else 0
        report.html(f"{modality}: retrieval", render(
            _TEMPLATE, n_subjects=len(summary["subjects"]), modality=modality,
            model=summary["model"], n_candidates=int(round(n_cand)),
            n_perm=summary["settings"][FAMILY]["n_permutations"], n_runs=len(summary["runs"]),
            seconds=int(summary["seconds"]), rows=decoder_rows(retrieval),
            crowd=crowd_rows(crowd)),
            section=section, tags=tags)
        report.figure(
            retrieval_figure(retrieval),
            figure_name(FAMILY, modality, "all-subjects", "all-targets", "top1_layer-curve"),
            f"{modality}: decoding layer curve",
            f"Held-out top-1 retrieval of each layer's features decoded from the {modality} "
            "responses, per subject (colours): trained features (solid), random-weights "
            "features (dashed) and shuffled pairing (dotted); grey line: chance.",
            section=section, tags=tags)
        if not adaptation.empty:
            report.figure(
                adaptation_figure(adaptation),
                figure_name(FAMILY, modality, f"sub-{summary['transfer_subject']}",
                            "all-targets", "top1_reset-tuning"),
                f"{modality}: reset-tuning",
                f"Reset-tuning (sub-{summary['transfer_subject']}, fold 0): a new adapter on "
                "the frozen shared decoder against a decoder trained from scratch on that "
                "subject, by the fraction of its training stimuli; top-1 at the best layer.",
                section=section, tags=tags)
