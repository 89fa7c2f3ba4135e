"""Report section of a decoding study (``results/<study>/decode/``, issue 10).

One table of every model on the same folds with its chance level and permutation p, a
bar chart per modality, and the electrode attention model's class-averaged attention:
for each class, the attention each electrode receives (the mean of its column of the
electrode x electrode matrix), drawn as a topomap on the montage (EEG) or as contacts on
a glass brain (sEEG), beside the matrix itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import figure_name, pyplot
from .sections import ReportBuilder, ReportContext, register_section, render

_TEMPLATE = """
<p class="bh-note">Labels <b>{{ label }}</b> ({{ classes }}) decoded from the {{ modality }}
responses of {{ n_subjects }} subject(s) by every model on the same folds. Protocols (MOABB's
names): WithinSession, {{ n_folds }} folds inside each session, grouped by trial (repeated
presentations together) or, for windows of continuous recordings, by contiguous blocks;
CrossSession, leave one session out; CrossSubject, leave one subject out. Every split was
checked where it was made: no trial, subject or overlapping time span on both sides, and
early stopping used a validation split of the training side only. Chance of accuracy: the
majority rate of the test labels; of balanced accuracy: one over the number of classes.
<i>p</i>: {{ p_text }} ({{ n_perm }} permutations; pooled rows permute within each fold). Rows "all": test predictions of every fold (and subject) pooled.
{% if skipped %}Not run: {% for s in skipped %}{{ s.protocol }}{% if s.model != "*" %}
{{ s.model }}{% endif %} ({{ s.reason }}){% if not loop.last %}; {% endif %}{% endfor %}.{% endif %}</p>
<table class="bh"><tr><th>protocol</th><th>subject</th><th>model</th><th>accuracy</th>
<th>chance (majority)</th><th>balanced acc.</th><th>chance (1/classes)</th><th>p</th>
<th>ROC AUC</th><th>kappa</th><th>test rows</th><th>fit CPU s (all folds)</th></tr>
{% for r in rows %}<tr><td>{{ r.protocol }}</td><td>{{ r.subject }}</td><td>{{ r.model }}</td>
<td>{{ "%.3f"|format(r.accuracy) }}</td><td>{{ "%.3f"|format(r.chance) }}</td>
<td>{{ "%.3f"|format(r.balanced_accuracy) }}</td><td>{{ "%.3f"|format(r.chance_balanced) }}</td>
<td>{{ "%.3g"|format(r.p_value) }}</td><td>{{ r.roc_auc }}</td><td>{{ r.kappa }}</td>
<td>{{ r.n_test }}</td><td>{{ r.seconds }}</td></tr>
{% endfor %}</table>
"""


def decoding_rows(scores: pd.DataFrame) -> list[dict]:
    """Pooled rows (fold ``all``; single-fold subjects as they are) for the table."""
    out = []
    for (protocol, subject, model), g in scores.groupby(["protocol", "subject", "model"],
                                                        sort=False):
        pooled = g[g["fold"].astype(str) == "all"]
        row = (pooled if len(pooled) else g).iloc[0].to_dict()
        if subject == "all":
            seconds = scores[(scores.protocol == protocol) & (scores.model == model)
                             & (scores.fold.astype(str) != "all")]["fit_seconds"].sum()
        else:
            seconds = g[g["fold"].astype(str) != "all"]["fit_seconds"].sum()
        row["seconds"] = f"{seconds:.1f}"
        for key in ("roc_auc", "kappa"):
            row[key] = "n/a" if pd.isna(row[key]) else f"{row[key]:.3f}"
        row["n_test"] = int(row["n_test"])
        out.append(row)
    order = {"WithinSession": 0, "CrossSession": 1, "CrossSubject": 2}
    return sorted(out, key=lambda r: (order.get(r["protocol"], 9), r["subject"] == "all",
                                      str(r["subject"]), str(r["model"])))


def accuracy_figure(scores: pd.DataFrame, modality: str):
    """Pooled accuracy of each model per protocol, with the chance level of each."""
    plt = pyplot()
    pooled = scores[(scores.fold.astype(str) == "all") | (scores.protocol == "CrossSubject")]
    pooled = pooled[(pooled.subject != "all") | (pooled.protocol == "CrossSubject")]
    protocols = [p for p in ("WithinSession", "CrossSession", "CrossSubject")
                 if p in set(pooled.protocol)]
    models = list(dict.fromkeys(scores.model))
    fig, ax = plt.subplots(figsize=(2.8 + 1.4 * len(protocols) * max(1, len(models)) / 3, 3.2))
    width = 0.8 / max(1, len(models))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, model in enumerate(models):
        for i, protocol in enumerate(protocols):
            g = pooled[(pooled.protocol == protocol) & (pooled.model == model)]
            if protocol == "CrossSubject":
                g = g[g.fold.astype(str) != "all"]
            if g.empty:
                continue
            x = i + (j - (len(models) - 1) / 2) * width
            ax.bar(x, g.accuracy.mean(), width * 0.9, color=colors[j % len(colors)],
                   label=model if i == 0 else None)
            ax.scatter(np.full(len(g), x), g.accuracy, s=6, color="k", zorder=3)
            ax.hlines(g.chance.mean(), x - width / 2, x + width / 2, color="0.3", lw=1.2,
                      linestyles="--")
    ax.set_xticks(range(len(protocols)), protocols, fontsize=8)
    ax.set_ylabel("held-out accuracy", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(f"{modality}: bars = mean over subjects, dots = subjects, dashes = chance",
                 fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def load_attention(path) -> dict:
    """``attention.h5`` as {modality/protocol: {subject: dict(maps, names, classes, coords)}}."""
    from ..io.store import read_arrays

    arrays, _ = read_arrays(path)
    out: dict = {}
    for key, arr in arrays.items():
        modality, protocol, subject, field = key.split("/")
        out.setdefault(f"{modality}/{protocol}", {}).setdefault(subject, {})[field] = arr
    return out


def received(maps: np.ndarray) -> np.ndarray:
    """Attention each electrode receives: the mean over queries of its key column,
    (n_classes, n, n) -> (n_classes, n)."""
    return np.nanmean(maps, axis=1)


def eeg_attention_figure(per_subject: dict):
    """Per class: attention received on the montage (averaged over subjects), and the
    class-averaged matrix."""
    import mne

    plt = pyplot()
    names = None
    for d in per_subject.values():
        names = list(d["names"]) if names is None else [n for n in names if n in d["names"]]
    stack, coords, classes = [], None, None
    for d in per_subject.values():
        pos = [list(d["names"]).index(n) for n in names]
        stack.append(np.asarray(d["maps"])[:, pos][:, :, pos])
        classes = list(d["classes"])
        if coords is None and "coords" in d:
            coords = np.asarray(d["coords"])[pos]
    maps = np.nanmean(np.stack(stack), axis=0)
    got = received(maps)
    n_cls = len(classes)
    fig, axes = plt.subplots(2, n_cls, figsize=(3.0 * n_cls, 5.6), squeeze=False)
    info = None
    if coords is not None and np.isfinite(coords).all():
        info = mne.create_info([str(n) for n in names], 100.0, "eeg")
        scale = 1.0 if np.abs(coords).max() < 1 else 1e-3  # metres for MNE
        info.set_montage(mne.channels.make_dig_montage(
            {str(n): c * scale for n, c in zip(names, coords)}, coord_frame="head"))
    vmin, vmax = float(np.nanmin(got)), float(np.nanmax(got))
    for c, cls in enumerate(classes):
        if info is not None:
            im, _ = mne.viz.plot_topomap(got[c], info, axes=axes[0, c], show=False,
                                         cmap="viridis", vlim=(vmin, vmax), sensors=True,
                                         contours=0, names=[str(n) for n in names])
            fig.colorbar(im, ax=axes[0, c], shrink=0.7)
        else:
            im = axes[0, c].bar(range(len(names)), got[c])
        axes[0, c].set_title(f"{cls}: attention received", fontsize=8)
        m = axes[1, c].imshow(maps[c], cmap="magma", aspect="auto")
        axes[1, c].set_title(f"{cls}: query (rows) x key", fontsize=8)
        axes[1, c].set_xticks([])
        axes[1, c].set_yticks([])
        fig.colorbar(m, ax=axes[1, c], shrink=0.7)
    fig.tight_layout()
    return fig


def seeg_attention_figure(per_subject: dict):
    """Per class: every subject's contacts on a glass brain, coloured by the attention
    they receive (relative to their subject's mean, so implants of different sizes
    compare)."""
    from nilearn import plotting

    plt = pyplot()
    classes = list(next(iter(per_subject.values()))["classes"])
    fig = plt.figure(figsize=(8.0, 2.8 * len(classes)))
    for c, cls in enumerate(classes):
        values, coords = [], []
        for d in per_subject.values():
            if "coords" not in d:
                continue
            got = received(np.asarray(d["maps"]))[c]
            ok = np.isfinite(np.asarray(d["coords"])).all(1) & np.isfinite(got)
            values.append(got[ok] * ok.sum())  # x n: 1 = a uniform share
            xyz = np.asarray(d["coords"])[ok]
            coords.append(xyz * (1000.0 if np.abs(xyz).max() < 1 else 1.0))  # mm
        if not values:
            continue
        ax = fig.add_axes([0.0, 1 - (c + 1) / len(classes), 1.0, 1 / len(classes)])
        plotting.plot_markers(np.concatenate(values), np.concatenate(coords), axes=ax,
                              node_cmap="viridis", display_mode="lzr", colorbar=True,
                              title=f"{cls}: attention received (1 = uniform)",
                              node_size=18)
    return fig


@register_section("decoding", order=62)
def decoding_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Scores table, accuracy bars and attention maps of ``results/<study>/decode``."""
    if ctx.results_dir is None:
        return
    folder = Path(ctx.results_dir) / "decode"
    if not (folder / "scores.tsv").is_file():
        return
    from ..decode.study import read_scores

    scores = read_scores(folder)
    summary = json.loads((folder / "summary.json").read_text())
    settings = summary["settings"]
    attention = load_attention(folder / "attention.h5") if (folder / "attention.h5").is_file() else {}
    for modality in sorted(set(scores.modality)):
        mine = scores[scores.modality == modality]
        section = f"Decoding: {modality}"
        tags = ("decoding", modality)
        report.html(f"{modality}: decoding scores", render(
            _TEMPLATE, label=settings["label"], classes=", ".join(summary["classes"][modality]),
            modality=modality, n_subjects=len(set(mine.subject) - {"all"}),
            n_folds=settings["n_folds"], p_text=summary["p_value"],
            n_perm=settings["n_permutations"],
            skipped=[s for s in summary["skipped"] if s["modality"] == modality],
            rows=decoding_rows(mine)), section=section, tags=tags)
        report.figure(accuracy_figure(mine, modality),
                      figure_name("decoding", modality, "all-subjects", "accuracy_bars"),
                      f"{modality}: accuracy by model and protocol",
                      "Held-out accuracy of every model on the same folds: bars are the mean "
                      "over subjects (CrossSubject: over left-out subjects), dots the subjects, "
                      "dashed lines the chance level (majority rate).", section=section,
                      tags=tags)
        for key in sorted(k for k in attention if k.startswith(f"{modality}/")):
            protocol = key.split("/")[1]
            draw = eeg_attention_figure if modality == "eeg" else seeg_attention_figure
            report.figure(
                draw(attention[key]),
                figure_name("decoding", modality, protocol, "electrode-attention"),
                f"{modality}: electrode attention ({protocol})",
                f"Class-averaged attention of the electrode model on the test trials of each "
                f"{protocol} fold, averaged over heads, blocks and subjects: the attention "
                "each electrode receives as a key (mean over queries) per class"
                + (" on the montage, and the electrode x electrode matrices."
                   if modality == "eeg" else ", contacts of every subject on a glass brain "
                   "(x the number of contacts, so 1 is a uniform share)."),
                section=section, tags=tags)
