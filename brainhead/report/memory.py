"""Report section of the memory RNN decoder (``models/memory_rnn/<modality>``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import figure_name, pyplot
from .sections import ReportBuilder, ReportContext, register_section, render

FAMILY = "memory_rnn"

_TEMPLATE = """
<p class="bh-note">A memory RNN with a learnable timescale per unit, one per {{ modality }}
subject, outer fold and curriculum, reads each trial's signal ({{ view }}) from a zero state
and decodes the features (first {{ n_components }} principal components of layer {{ layer }}
of {{ model }}) of the stimulus presented 0 to {{ n_lags - 1 }} trials back, one head per
lag: <i>single</i>-head curriculum (one head, retrained lag after lag) against
<i>multi</i>-head (a head added per lag, all kept training). Score: held-out Pearson r
averaged over components; folds leave out whole runs and test each stimulus once. Null:
the true features circularly shifted among the test trials of each run (at least
{{ n_lags }} trials, {{ n_perm }} shifts). Memory depth: the largest lag such that every
lag up to it has p &lt; {{ alpha }} (-1: not even the current stimulus).
{% if planted is not none %}Planted memory of the simulation: {{ planted }} stimuli back.{% endif %}
{{ n_runs }} training runs, {{ seconds }} s.</p>
<table class="bh"><tr><th>subject</th><th>view</th><th>trials</th><th>depth single-head</th>
<th>depth multi-head</th><th>mean tau single</th><th>mean tau multi</th></tr>
{% for row in rows %}<tr><td>{{ row.subject }}</td><td>{{ row.view }}</td>
<td>{{ row.n_trials }}</td><td>{{ row.single }}</td><td>{{ row.multi }}</td>
<td>{{ row.tau_single }}</td><td>{{ row.tau_multi }}</td></tr>
{% endfor %}</table>
"""


def depth_rows(depth: pd.DataFrame) -> list[dict]:
    """One row per subject: memory depth and mean tau of each curriculum."""
    rows = []
    for subject, g in depth.groupby("subject", sort=True):
        by = g.set_index("curriculum")
        row = {"subject": subject, "view": g["view"].iloc[0], "n_trials": int(g["n_trials"].iloc[0])}
        for kind in ("single", "multi"):
            row[kind] = int(by.loc[kind, "depth"]) if kind in by.index else "-"
            row[f"tau_{kind}"] = (f"{by.loc[kind, 'tau_mean']:.2f}" if kind in by.index
                                  else "-")
        rows.append(row)
    return rows


def depth_figure(curve: pd.DataFrame):
    """Held-out r per lag, one panel per subject: curricula as lines, the null as a band."""
    plt = pyplot()
    subjects = sorted(curve["subject"].unique())
    fig, axes = plt.subplots(1, len(subjects), figsize=(2.6 * len(subjects) + 0.6, 2.8),
                             sharey=True, squeeze=False)
    styles = {"multi": ("-o", "C0"), "single": ("--s", "C1")}
    for ax, subject in zip(axes[0], subjects):
        g = curve[curve["subject"] == subject]
        for kind, (style, color) in styles.items():
            c = g[g["curriculum"] == kind].sort_values("lag")
            if c.empty:
                continue
            ax.fill_between(c["lag"], c["null_low"], c["null_high"], color=color, alpha=0.15,
                            lw=0)
            ax.plot(c["lag"], c["r"], style, color=color, ms=4, lw=1.2, label=f"{kind}-head")
            sig = c[c["p"] < 0.05]
            ax.plot(sig["lag"], sig["r"], "*", color="k", ms=5)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_title(f"sub-{subject}", fontsize=8)
        ax.set_xlabel("stimuli back (lag)", fontsize=8)
        ax.set_xticks(np.sort(g["lag"].unique()))
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("held-out r", fontsize=8)
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    return fig


@register_section(FAMILY, order=67)
def memory_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Per decoded modality: depth table and memory-depth curves with the null band."""
    for folder in sorted(Path(d) for d in ctx.model_dirs if Path(d).parent.name == FAMILY):
        summary = json.loads((folder / "summary.json").read_text())
        curve = pd.read_csv(folder / "memory_depth.tsv", sep="\t", dtype={"subject": str})
        depth = pd.read_csv(folder / "depth.tsv", sep="\t", dtype={"subject": str})
        if curve.empty:
            continue
        modality = summary["modality"]
        settings = summary["settings"][FAMILY]
        planted = None
        if ctx.truth is not None:
            planted = (ctx.truth.get("memory") or {}).get("depth", 0)
        section = f"Memory RNN decoder: {modality}"
        tags = ("decoder", FAMILY, modality)
        views = sorted(set(depth["view"]))
        report.html(f"{modality}: memory depth", render(
            _TEMPLATE, modality=modality, model=summary["model"],
            view=" / ".join(f"{v} view" for v in views), n_lags=int(settings["n_lags"]),
            n_components=settings["n_components"],
            layer=settings["layer"] if settings["layer"] is not None else "middle",
            n_perm=settings["n_permutations"], alpha=settings["alpha"], planted=planted,
            n_runs=len(summary["runs"]), seconds=int(summary["seconds"]),
            rows=depth_rows(depth)), section=section, tags=tags)
        report.figure(
            depth_figure(curve),
            figure_name(FAMILY, modality, "all-subjects", "all-targets", "r_memory-depth"),
            f"{modality}: memory-depth curves",
            "Held-out r of the features of the stimulus 0, 1, ... trials back, decoded from "
            "the current trial's signal, per subject: multi-head (solid) and single-head "
            "(dashed) curricula; shaded: the 2.5-97.5 percentiles of the circular-shift "
            "null; stars: p < 0.05.", section=section, tags=tags)
