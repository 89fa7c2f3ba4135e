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


def encoding_curves(summary: pd.DataFrame, subjects, model: str | None = None
                    ) -> pd.DataFrame:
    """The ridge encoding layer curves of ``subjects`` from the alignment summary.

    Held-out r (metric ``r``) of the trained model and of its random-weights control, per
    subject, region and layer; of ``model`` where the summary has it, and of the
    ``stimulus`` view where a subject has it (what the decoder reads), else of the
    subject's first view.

    Returns
    -------
    curves : DataFrame
        Columns subject, region, control, layer, score.
    """
    columns = ["subject", "region", "control", "layer", "score"]
    if summary is None or summary.empty:
        return pd.DataFrame(columns=columns)
    rows = summary[(summary["metric"] == "r") & summary["control"].isin(["trained", "random"])
                   & summary["subject"].astype(str).isin([str(s) for s in subjects])]
    if model is not None and "model" in rows and (rows["model"] == model).any():
        rows = rows[rows["model"] == model]
    if "view" in rows:
        parts = []
        for _, g in rows.groupby("subject", sort=True):
            views = list(dict.fromkeys(g["view"]))
            parts.append(g[g["view"] == ("stimulus" if "stimulus" in views else views[0])])
        rows = pd.concat(parts) if parts else rows
    out = rows[columns].copy()
    out["subject"] = out["subject"].astype(str)
    return out.reset_index(drop=True)


def encoding_decoding_figure(encoding: pd.DataFrame, retrieval: pd.DataFrame,
                             planted: dict[str, dict[str, int]] | None = None, *,
                             max_columns: int = 5):
    """Each subject's encoding and decoding layer curves, one column per subject.

    Top: ridge held-out r by layer per region (one colour each; solid: trained model,
    dashed: random-weights control). Bottom, on the same layer axis: the shared
    decoder's held-out top-1 retrieval by layer (solid: trained features, dashed:
    random-weights features; dotted grey: chance). Vertical lines in the region colours:
    planted layers (simulated studies), in both panels.

    Parameters
    ----------
    encoding : DataFrame
        :func:`encoding_curves` rows.
    retrieval : DataFrame
        ``retrieval.tsv`` of the decoder (subject, control, layer, top1, chance_top1).
    planted : dict, optional
        Subject -> region -> planted layer.
    max_columns : int
        Subjects per row of the grid; more subjects wrap onto further pairs of rows.
    """
    from matplotlib.lines import Line2D

    plt = pyplot()
    planted = planted or {}
    subjects = sorted(set(retrieval["subject"].astype(str)))
    n_cols = min(len(subjects), max_columns)
    n_blocks = -(-len(subjects) // n_cols)  # a block: encoding row above decoding row
    height = 0.5 + 4.1 * n_blocks
    fig, axes = plt.subplots(2 * n_blocks, n_cols, figsize=(1.7 + 2.5 * n_cols, height),
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    legend = {}  # region -> colour
    for j, ax in enumerate(axes.flat):
        row, col = divmod(j, n_cols)
        ax.sharex(axes[0][0])
        ax.sharey(axes[row % 2][0])  # encoding rows share r, decoding rows share top-1
        ax.tick_params(labelsize=7, labelleft=col == 0, labelbottom=row % 2 == 1)
        if (row // 2) * n_cols + col >= len(subjects):
            ax.set_visible(False)
    for i, subject in enumerate(subjects):
        block, col = divmod(i, n_cols)
        top, bottom = axes[2 * block][col], axes[2 * block + 1][col]
        enc = encoding[encoding["subject"] == subject]
        regions = sorted(set(enc["region"]) - {"all"}) or ["all"]
        for k, region in enumerate(regions):
            color = legend.setdefault(region, colors[k % len(colors)])
            for control, style in (("trained", "-"), ("random", "--")):
                g = enc[(enc["region"] == region) & (enc["control"] == control)]
                g = g.sort_values("layer")
                if not g.empty:
                    top.plot(g["layer"], g["score"], style, color=color, marker="o", ms=2.5,
                             lw=1.1, label=f"{region} ({control})")
            if region in planted.get(subject, {}):
                for ax in (top, bottom):
                    ax.axvline(planted[subject][region], color=color, lw=1, alpha=0.6)
        if enc.empty:
            top.text(0.5, 0.5, "no encoding scores", transform=top.transAxes, ha="center",
                     fontsize=7, color="0.4")
        dec = retrieval[retrieval["subject"].astype(str) == subject]
        for control, style in (("trained", "-"), ("random", "--")):
            g = dec[dec["control"] == control].sort_values("layer")
            if not g.empty:
                bottom.plot(g["layer"], g["top1"], style, color="0.15", marker="o", ms=2.5,
                            lw=1.1, label=control)
        bottom.axhline(dec["chance_top1"].mean(), color="0.5", lw=0.8, ls=":", label="chance")
        top.set_title(f"sub-{subject}", fontsize=9)
        if i + n_cols >= len(subjects):  # the last row of its column
            bottom.set_xlabel("layer (0 = embeddings)", fontsize=8)
    for block in range(n_blocks):
        axes[2 * block][0].set_ylabel("encoding: held-out r", fontsize=8)
        axes[2 * block + 1][0].set_ylabel("decoding: held-out top-1", fontsize=8)
    axes[1][0].set_ylim(bottom=0)
    handles = [Line2D([], [], color=c, lw=1.5, label=r) for r, c in legend.items()]
    handles += [Line2D([], [], color="0.15", ls=ls, lw=1.1, label=label) for ls, label in
                (("-", "trained"), ("--", "random weights"), (":", "chance (decoding)"))]
    fig.legend(handles=handles, loc="center right", fontsize=6.5, frameon=False)
    # fixed margins in inches (tight_layout measures every tick label of every panel)
    width = fig.get_figwidth()
    fig.subplots_adjust(left=0.6 / width, right=1 - 1.2 / width, bottom=0.5 / height,
                        top=1 - 0.3 / height, wspace=0.12,
                        hspace=0.25 if n_blocks == 1 else 0.4)
    return fig


def adaptation_figure(adaptation: pd.DataFrame):
    """Reset-tuning against a from-scratch decoder, by fraction of stimuli (best layer)."""
    best = adaptation.groupby(["method", "fraction"])["top1"].max().reset_index()
    return fraction_figure(best, "top1", ("reset_tuning", "scratch"),
                           "held-out top-1 (best layer)")


@register_section("adapters", order=65)
def adapters_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Per trained modality: retrieval table, layer curves (decoding, and encoding beside
    it per subject) and reset-tuning curve."""
    blocks, jobs = [], []  # blocks: ("html", title, html) or ("figure", title, caption)
    for folder in sorted(Path(d) for d in ctx.model_dirs if Path(d).parent.name == FAMILY):
        summary = json.loads((folder / "summary.json").read_text())
        retrieval = pd.read_csv(folder / "retrieval.tsv", sep="\t", dtype={"subject": str})
        adaptation = pd.read_csv(folder / "adaptation.tsv", sep="\t", dtype={"subject": str})
        crowd_path = folder / "crowd.tsv"
        crowd = (pd.read_csv(crowd_path, sep="\t", dtype={"subject": str})
                 if crowd_path.is_file() else pd.DataFrame())
        modality = summary["modality"]
        where = (f"Subject adapters and shared decoder: {modality}", ("decoder", FAMILY,
                                                                       modality))
        n_cand = (retrieval["n_stimuli"] / summary["n_folds"]).mean() if len(retrieval) else 0
        blocks.append(("html", f"{modality}: retrieval", render(
            _TEMPLATE, n_subjects=len(summary["subjects"]), modality=modality,
            model=summary["model"], n_candidates=int(round(n_cand)),
            n_perm=summary["settings"][FAMILY]["n_permutations"], n_runs=len(summary["runs"]),
            seconds=int(summary["seconds"]), rows=decoder_rows(retrieval),
            crowd=crowd_rows(crowd)), where))
        jobs.append((retrieval_figure, (retrieval,), figure_name(
            FAMILY, modality, "all-subjects", "all-targets", "top1_layer-curve")))
        blocks.append((
            "figure", f"{modality}: decoding layer curve",
            (f"Held-out top-1 retrieval of each layer's features decoded from the {modality} "
             "responses, per subject (colours): trained features (solid), random-weights "
             "features (dashed) and shuffled pairing (dotted); grey line: chance."), where))
        encoding = encoding_curves(ctx.summary, set(retrieval["subject"]), summary["model"])
        if not encoding.empty:
            planted = {s: ctx.planted(s) for s in sorted(set(retrieval["subject"]))}
            jobs.append((encoding_decoding_figure, (encoding, retrieval, planted), figure_name(
                FAMILY, modality, "all-subjects", "all-regions", "r-top1_encoding-decoding")))
            blocks.append((
                "figure", f"{modality}: encoding and decoding layer curves",
                (f"Per {modality} subject, on one layer axis (0 = embeddings): above, the "
                 "ridge encoding model's held-out r by layer for each region (one colour "
                 "each; solid: trained model, dashed: random-weights control); below, the "
                 "shared decoder's held-out top-1 retrieval of that layer's features "
                 "(solid: trained, dashed: random-weights features; dotted: chance)"
                 + ("; vertical lines: planted layers, in the region colours."
                    if any(planted.values()) else ".")), where))
        if not adaptation.empty:
            jobs.append((adaptation_figure, (adaptation,), figure_name(
                FAMILY, modality, f"sub-{summary['transfer_subject']}", "all-targets",
                "top1_reset-tuning")))
            blocks.append((
                "figure", f"{modality}: reset-tuning",
                (f"Reset-tuning (sub-{summary['transfer_subject']}, fold 0): a new adapter "
                 "on the frozen shared decoder against a decoder trained from scratch on that "
                 "subject, by the fraction of its training stimuli; top-1 at the best layer."),
                where))
    # every figure drawn at once (in the writer's worker processes), then added in order
    pngs = iter(png for png, _ in report.figures(jobs))
    for kind, title, content, (section, tags) in blocks:
        if kind == "html":
            report.html(title, content, section=section, tags=tags)
        else:
            report.image(next(pngs), title, content, section=section, tags=tags)
