"""The sections of the report and the registry that orders them.

A section is a function ``(report, ctx) -> None`` that adds HTML blocks and figures
through a :class:`ReportBuilder`, reading what it needs from a :class:`ReportContext`.
Register one with :func:`register_section`; :func:`brainhead.report.make_report` calls
every registered section in ``order``. A section with nothing to show adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures as F
from .tables import modality_rows, paired_rows

#: name -> (order, function); filled by :func:`register_section`.
SECTIONS: dict[str, tuple[int, Callable]] = {}

#: Styles of the tables and notes inside the MNE report.
STYLE = """<style>
table.bh { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
table.bh th, table.bh td { border: 1px solid #ddd; padding: 0.2em 0.55em; text-align: right; }
div.bh-wide { overflow-x: auto; }
table.bh th { background: #f3f3f3; } td.ok { color: #1a7f37; } td.bad { color: #cf222e; }
.bh-note { color: #444; font-size: 0.9em; max-width: 70em; }
</style>"""


def register_section(name: str, order: int):
    """Decorator: add ``func(report, ctx)`` to the report as section ``name``.

    ``order`` places it among the others (overview 10, best layers 20, cross-modal 30,
    brain maps 40, layer curves 50, model families 60-89, provenance 90).
    """
    def wrap(func):
        SECTIONS[name] = (order, func)
        return func
    return wrap


def registered_sections() -> list[tuple[str, Callable]]:
    """Registered sections in report order."""
    return [(name, func) for name, (order, func) in
            sorted(SECTIONS.items(), key=lambda kv: (kv[1][0], kv[0]))]


def render(template: str, **values) -> str:
    """Render a Jinja2 template string with autoescaping."""
    from jinja2 import Environment

    return Environment(autoescape=True).from_string(template).render(**values)


@dataclass
class ReportContext:
    """What the sections read. Paths may be None when a study lacks them."""

    study: str
    description: str
    summary: pd.DataFrame
    best: pd.DataFrame                 # regional best-layer rows (tables.regional_best)
    truth: dict | None
    ci: float = 0.95
    q_max: float = 0.05
    model_dirs: list = field(default_factory=list)
    results_dir: Path | None = None    # results/<study>: align/*.h5, sub-*/responses.h5
    spec: dict | None = None           # the study config (with defaults)
    benchmarks_dir: Path | None = None
    notes: dict = field(default_factory=dict)

    @property
    def has_truth(self) -> bool:
        return self.truth is not None

    @property
    def preprocess_only(self) -> bool:
        """A study without stimuli or decoding (``stimuli: null``): no scores to show.

        Judged from the spec and the scores together: a report given alignment scores
        shows them, whatever a partial spec (one without a ``stimuli`` key) implies.
        """
        from ..specs import preprocess_only

        return (self.spec is not None and preprocess_only(self.spec)
                and self.summary.empty and not self.model_dirs)

    def planted(self, subject: str) -> dict:
        if self.truth is None:
            return {}
        return self.truth["subjects"].get(subject, {}).get("regions", {})


class ReportBuilder:
    """Adds HTML blocks and saved figures to an :class:`mne.Report`."""

    def __init__(self, report, writer: F.FigureWriter):
        self.report = report
        self.writer = writer
        self.added: list[dict] = []   # every figure: title, section, png, caption

    def html(self, title: str, html: str, *, section: str | None = None, tags=()) -> None:
        self.report.add_html(html, title=title, section=section, tags=_tags(tags))

    def image(self, png, title: str, caption: str, *, section: str | None = None,
              tags=()) -> None:
        self.report.add_image(png, title=title, caption=caption, section=section,
                              tags=_tags(tags))
        self.added.append({"title": title, "section": section, "png": Path(png),
                             "caption": caption})

    def figures(self, jobs) -> list[tuple[Path, str | None]]:
        """Draw and save figures (in parallel where the writer has workers).

        ``jobs``: list of (function, args, name), see
        :meth:`brainhead.report.figures.FigureWriter.render`; add the returned PNGs
        with :meth:`image`.
        """
        return self.writer.render(jobs)

    def figure(self, fig, name: str, title: str, caption: str, *,
               section: str | None = None, tags=()) -> Path:
        """Save ``fig`` (PNG + vector, see FigureWriter) and add its PNG to the report."""
        png = self.writer.save(fig, name)
        self.image(png, title, caption, section=section, tags=tags)
        return png


def _tags(tags) -> tuple[str, ...]:
    return tuple(str(t).replace(" ", "-") for t in tags) or ("brainhead",)


# --------------------------------------------------------------------------- overview
_OVERVIEW = STYLE + """
<p class="bh-note">{{ description }}</p>
<p class="bh-note"><b>Metrics.</b> <i>r</i>: held-out Pearson r of a ridge encoding model
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
{% if rows %}<table class="bh"><tr><th>modality</th><th>subjects</th><th>regions</th>
<th>median r at best layer</th><th>median random r, same layer</th>
<th>trained &gt; random (CI above 0)</th>{% if has_truth %}<th>planted layer recovered</th>{% endif %}</tr>
{% for row in rows %}<tr><td>{{ row.modality }}</td><td>{{ row.n_subjects }}</td>
<td>{{ row.n_regions }}</td><td>{{ "%.3f"|format(row.score) }}</td>
<td>{{ "%.3f"|format(row.random) }}</td><td>{{ row.beats }}</td>
{% if has_truth %}<td>{{ row.recovered }}</td>{% endif %}</tr>{% endfor %}</table>{% endif %}
"""


_PREPROCESS_ONLY = STYLE + """
<p class="bh-note">{{ description }}</p>
<p class="bh-note">This study has no stimuli (<code>stimuli: null</code> in its study.yaml) and
no decode section: each subject's recordings were preprocessed into its response table
(<code>sub-&lt;id&gt;/responses.h5</code>, described under Preprocessing), and nothing else
ran: no features, alignment, decoding or training, hence no scores.</p>
"""


@register_section("overview", order=10)
def overview_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Study description, what the metrics mean, and the per-modality summary."""
    if ctx.preprocess_only:
        report.html("Overview", render(_PREPROCESS_ONLY, description=ctx.description),
                    tags=("summary",))
        return
    report.html("Overview", render(
        _OVERVIEW, description=ctx.description, ci_pct=f"{100 * ctx.ci:g}",
        model=", ".join(sorted(set(ctx.summary["model"]))), has_truth=ctx.has_truth,
        rows=modality_rows(ctx.best, ctx.summary, ctx.has_truth)),
        tags=("summary",))


# --------------------------------------------------------------------------- best layers
_BEST = STYLE + """
<p class="bh-note">Chosen in each outer fold from scores of the training data only
(leave-one-stimulus-out by default); the score is the held-out r of that choice (never the
maximum of the test curve). Gap: r at the best layer minus r at the last layer (the
intermediate-layer advantage), with its bootstrap interval; depth = best layer / last layer.</p>
<div class="bh-wide"><table class="bh"><tr><th>subject</th><th>modality</th><th>region</th><th>best layer</th>
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
{% endfor %}</table></div>
"""

_PAIRED = STYLE + """
<p class="bh-note">r(trained) &minus; r(random) at each layer, with a paired bootstrap over
stimuli (the same resampled stimuli for both models). A layer counts when its interval
lies above zero.</p>
<table class="bh"><tr><th>subject</th><th>region</th><th>layers with trained &gt; random</th>
<th>layers with random &gt; trained</th><th>largest gap (layer)</th></tr>
{% for row in paired %}<tr><td>{{ row.subject }}</td><td>{{ row.region }}</td>
<td>{{ row.n_better }} / {{ row.n_layers }}</td><td>{{ row.n_worse }}</td>
<td>{{ "%.3f"|format(row.max_gap) }} ({{ row.max_layer }})</td></tr>{% endfor %}</table>
"""


@register_section("best_layers", order=20)
def best_layers_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Best layer per subject and region (training folds), and trained versus random."""
    if ctx.preprocess_only:
        return
    section = "Best layers"
    report.html("Best layer per subject and region", render(
        _BEST, best=ctx.best.to_dict("records"), has_truth=ctx.has_truth,
        has_ceiling="ceiled" in ctx.best), section=section, tags=("summary", "table"))
    report.html("Trained versus random weights", render(
        _PAIRED, paired=paired_rows(ctx.summary)), section=section, tags=("table",))


# --------------------------------------------------------------------------- figures
@register_section("cross_modal", order=30)
def cross_modal_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """One layer curve per modality on relative depth, trained versus random."""
    curves = F.subject_curves(ctx.summary, "r")
    if curves.empty:
        return
    counts = curves.groupby("modality")["subject"].nunique()
    report.figure(
        F.cross_modal(curves, "r"), F.figure_name("all-modalities", "all-subjects",
                                                   "all-targets", "r_cross-modal"),
        "Cross-modal layer curves",
        "Held-out r of all targets of a subject (the mean over its regions where no "
        "whole-brain score exists) against relative depth (layer / last layer; "
        "0 = embeddings), one colour per modality (" + ", ".join(
            f"{m}: {n} subjects" for m, n in counts.items()) + "). Lines: median over "
        "subjects; bands: 25th to 75th percentile over subjects (the range for 2 "
        "subjects). Solid: trained model; dashed: the same architecture with random "
        "weights.", section="Cross-modal", tags=("figure", "cross-modal", *counts.index))


@register_section("layer_curves", order=50)
def layer_curves_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Per modality and subject: layer curves of every metric, trained and random."""
    curves = ctx.summary[ctx.summary["control"].isin(["trained", "random"])]
    jobs, items = [], []
    for (modality, subject), sub in curves.groupby(["modality", "subject"], sort=True):
        view = sub["view"].iloc[0] if "view" in sub else "stimulus"
        metrics = [m for m in F.CURVE_METRICS if (sub["metric"] == m).any()]
        regions = sorted(set(sub["region"]) - {"all"}) or ["all"]
        planted = ctx.planted(subject)
        caption = (
            f"sub-{subject} ({view} view): scores of {', '.join(metrics)} per layer "
            f"(0 = embeddings) for each region ({', '.join(regions)}; one colour each); "
            "solid: trained model, dashed: random-weights control; bands: "
            f"{100 * ctx.ci:g}% bootstrap interval over stimuli where computed"
            + ("; vertical lines: planted layers." if planted else "."))
        jobs.append((F.layer_curves, (sub, planted),
                     F.figure_name(modality, f"sub-{subject}", "all-regions",
                                   "-".join(metrics), "layer-curves")))
        items.append((subject, modality, caption))
    for (png, _), (subject, modality, caption) in zip(report.figures(jobs), items):
        report.image(png, f"sub-{subject}", caption, section=f"Layer curves: {modality}",
                     tags=("figure", "layer-curves", modality, f"sub-{subject}"))


@register_section("brain_maps", order=40)
def brain_maps_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Glass brains and stat maps (fMRI), topomaps (EEG), contacts (sEEG)."""
    from .brain import (
        BRAIN_FIGURES,
        brain_figure,
        brain_figure_name,
        contacts_without_coordinates,
        load_target_maps,
    )

    if ctx.results_dir is None or ctx.summary.empty:
        return
    results = Path(ctx.results_dir)
    model = min(set(ctx.summary["model"]))
    subjects = ctx.summary.drop_duplicates("subject")[["subject", "modality"]]
    jobs, items = [], []
    for row in subjects.sort_values(["modality", "subject"]).itertuples(index=False):
        if row.modality not in BRAIN_FIGURES:
            continue
        align_h5 = results / "align" / f"sub-{row.subject}_{model}.h5"
        responses = results / f"sub-{row.subject}" / "responses.h5"
        if not (align_h5.is_file() and responses.is_file()):
            continue
        maps = load_target_maps(align_h5, responses)
        if np.isfinite(maps.coords).all(axis=1).any():
            jobs.append((brain_figure, (align_h5, responses, ctx.q_max),
                         brain_figure_name(maps)))
        items.append((row.subject, row.modality, maps))
    if any(modality in ("fmri", "seeg") for _, modality, _ in items):
        # imported once here (2-3 s of CPU), before the figure workers fork, instead of
        # once in each worker
        import nilearn.plotting  # noqa: F401
    rendered = iter(report.figures(jobs))
    for subject, modality, maps in items:
        section = f"Brain maps: {modality}"
        tags = ("figure", "brain", modality, f"sub-{subject}")
        if np.isfinite(maps.coords).all(axis=1).any():
            png, caption = next(rendered)
            report.image(png, f"sub-{subject} ({model})", f"{caption} Model: {model}.",
                         section=section, tags=tags)
        missing = contacts_without_coordinates(maps)
        if missing:
            report.html(f"sub-{subject}: targets without coordinates", render(
                STYLE + """<p class="bh-note">{{ n }} of {{ total }} targets of sub-{{ s }}
have no coordinates and are not drawn above; their scores:</p>
<table class="bh"><tr><th>target</th><th>region</th><th>best layer</th><th>r</th><th>q</th></tr>
{% for m in missing %}<tr><td>{{ m.name }}</td><td>{{ m.region }}</td><td>{{ m.best_layer }}</td>
<td>{{ "%.3f"|format(m.r) }}</td><td>{{ "%.3g"|format(m.q) }}</td></tr>{% endfor %}</table>""",
                n=len(missing), total=len(maps.names), s=subject, missing=missing),
                section=section, tags=(*tags, "table"))


# --------------------------------------------------------------------------- provenance
_PROVENANCE = STYLE + """
<table class="bh">
<tr><th>study</th><td>{{ study }}</td></tr>
<tr><th>study spec hash</th><td>{{ p.spec_hash }}</td></tr>
<tr><th>git revision</th><td>{{ p.git_rev }}</td></tr>
{% for k, v in p.seeds.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}
<tr><th>summary</th><td>{{ n_rows }} rows, {{ n_subjects }} subjects</td></tr>
</table>
{% if p.settings %}<p class="bh-note"><b>Alignment settings</b></p>
<table class="bh">{% for k, v in p.settings.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
{% if bench %}<p class="bh-note"><b>Run time and peak memory per job</b> (Snakemake
benchmark files; wall-clock seconds, peak resident memory). Total: {{ "%.0f"|format(total_s) }} s
of job time.</p>
<table class="bh"><tr><th>rule</th><th>job</th><th>seconds</th><th>peak RSS (MB)</th><th>CPU seconds</th></tr>
{% for b in bench %}<tr><td>{{ b.rule }}</td><td>{{ b.job }}</td><td>{{ "%.1f"|format(b.seconds) }}</td>
<td>{{ "%.0f"|format(b.max_rss_mb) }}</td><td>{{ "%.1f"|format(b.cpu_seconds) }}</td></tr>{% endfor %}</table>
{% else %}<p class="bh-note">No benchmark files found.</p>{% endif %}
{% if p.artifacts %}<p class="bh-note"><b>Artifacts</b> (provenance attributes)</p>
<table class="bh"><tr><th>file</th><th>step</th><th>params hash</th><th>git rev</th></tr>
{% for a in p.artifacts %}<tr><td>{{ a.file }}</td><td>{{ a.step }}</td><td>{{ a.params_hash }}</td><td>{{ a.git_rev }}</td></tr>{% endfor %}</table>{% endif %}
<p class="bh-note"><b>Package versions</b> (key packages first, then every installed distribution)</p>
<table class="bh"><tr><th>package</th><th>version</th></tr>
{% for k in p.key_packages %}{% if k in p.versions %}<tr><th>{{ k }}</th><td>{{ p.versions[k] }}</td></tr>{% endif %}{% endfor %}</table>
<details><summary>all {{ p.versions|length }} installed distributions</summary>
<table class="bh">{% for k, v in p.versions.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table></details>
"""


@register_section("provenance", order=90)
def provenance_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Spec hash, git revision, seeds, settings, versions, per-job time and memory."""
    from .provenance import collect

    artifacts = []
    if ctx.results_dir is not None:
        artifacts = sorted(Path(ctx.results_dir).glob(
            "sub-*/responses.h5" if ctx.preprocess_only else "align/sub-*.h5"))
    settings = {} if ctx.preprocess_only else (ctx.spec or {}).get("align") or {}
    prov = collect(ctx.spec, settings=settings, benchmarks=ctx.benchmarks_dir,
                   artifacts=artifacts)
    bench = prov["benchmarks"]
    report.html("Provenance", render(
        _PROVENANCE, p=prov, study=ctx.study, n_rows=len(ctx.summary),
        n_subjects=ctx.summary["subject"].nunique(), bench=bench.to_dict("records"),
        total_s=float(bench["seconds"].sum()) if not bench.empty else 0.0),
        tags=("provenance",))
