"""The report's preprocessing section: what each subject's ``responses.h5`` holds.

Shown for a study that only preprocesses (``stimuli: null`` and no ``decode`` section,
see :func:`brainhead.specs.preprocess_only`), whose report has no scores: per subject the
targets kept (contacts, bipolar pairs, channels or voxels), how many have coordinates and
region labels, the views with their shapes, the time series' rate and duration, the runs,
the epochs, the reference and the preprocessing settings, all read from the file itself
(its arrays and provenance attributes), never recomputed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from .sections import STYLE, ReportBuilder, ReportContext, register_section, render

__all__ = ["preprocessing_section", "subject_summary"]


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _group_of(name: str, modality: str) -> str:
    """Shaft or grid of an sEEG/ECoG contact or bipolar pair (``"G3-G4"`` -> ``"G"``)."""
    if modality != "seeg":
        return ""
    from ..preprocess.seeg import parse_contact

    parsed = parse_contact(name.split("-")[0])
    return parsed[0] if parsed is not None else "(unnamed)"


def subject_summary(path) -> dict:
    """What a ``responses.h5`` says about its subject's preprocessing.

    Reads the targets, the shapes of the views and the provenance attributes; no view's
    data is loaded except the time series' time stamps.

    Parameters
    ----------
    path : path-like
        ``results/<study>/sub-<id>/responses.h5``.

    Returns
    -------
    summary : dict
        ``subject``, ``modality``, ``n_targets``, ``kinds`` (kind -> count),
        ``n_coords`` (targets with finite coordinates), ``coord_frame``, ``n_regions``
        (targets with a region label), ``views`` (name -> shape), ``ts_rate`` (Hz, the
        time series view's rate, None without one), ``ts_seconds``, ``runs``,
        ``n_epochs``, ``reference``, ``bipolar`` (whether targets are contact pairs),
        ``groups`` (shaft or grid -> target names, sEEG/ECoG), ``settings`` (the
        subject's preprocessing keys) and ``params_hash``.
    """
    import h5py

    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        names = _text(f["targets/name"][()])
        kinds = _text(f["targets/kind"][()])
        coords = np.asarray(f["targets/coords"][()], dtype=float)
        regions = _text(f["targets/region"][()])
        views = {name: tuple(int(n) for n in g["X"].shape) for name, g in f["views"].items()}
        ts_rate = ts_seconds = None
        if "timeseries" in f["views"]:
            rows = f["views/timeseries/rows"]
            time = np.asarray(rows["time"][()], dtype=float)
            group = np.asarray(_text(rows["group"][()]))
            steps = np.concatenate([np.diff(time[group == g]) for g in dict.fromkeys(group)])
            if steps.size and np.median(steps) > 0:
                ts_rate = float(1.0 / np.median(steps))
                ts_seconds = len(time) / ts_rate
    info = json.loads(attrs.get("info", "{}"))
    params = json.loads(attrs.get("params", "{}"))
    modality = str(attrs.get("modality", ""))
    groups: dict[str, list[str]] = {}
    for name in names:
        group = _group_of(name, modality)
        if group:
            groups.setdefault(group, []).append(name)
    return {
        "subject": str(attrs.get("subject", "")),
        "modality": modality,
        "n_targets": len(names),
        "kinds": dict(Counter(kinds)),
        "n_coords": int(np.isfinite(coords).all(axis=1).sum()) if coords.size else 0,
        "coord_frame": info.get("coord_frame", ""),
        "n_regions": sum(bool(r) for r in regions),
        "views": views,
        "ts_rate": ts_rate,
        "ts_seconds": ts_seconds,
        "runs": list(info.get("runs", [])),
        "n_epochs": info.get("n_epochs"),
        "reference": info.get("reference", ""),
        "bipolar": bool(names) and all("-" in n for n in names) and modality == "seeg",
        "groups": groups,
        "settings": params.get("preprocess", {}),
        "params_hash": str(attrs.get("params_hash", "")),
    }


_TABLE = STYLE + """
<p class="bh-note">Read from each subject's <code>responses.h5</code> (its arrays and
provenance attributes). Targets: the channels, contacts (or bipolar contact pairs) or
voxels kept after bad channels and references. Time series rate: the rate of the
<code>timeseries</code> view, from its time stamps.</p>
<div class="bh-wide"><table class="bh"><tr><th>subject</th><th>modality</th><th>targets</th><th>kind</th>
<th>with coordinates</th><th>with a region label</th><th>reference</th><th>views</th>
<th>time series rate</th><th>duration</th><th>runs</th><th>epochs</th><th>params hash</th></tr>
{% for s in subjects %}<tr><td>sub-{{ s.subject }}</td><td>{{ s.modality }}</td>
<td>{{ s.n_targets }}</td><td>{% for k, n in s.kinds.items() %}{{ k }}{% if s.kinds|length > 1 %}: {{ n }}{% endif %}{% if not loop.last %}, {% endif %}{% endfor %}{% if s.bipolar %} (bipolar pairs){% endif %}</td>
<td>{{ s.n_coords }}{% if s.coord_frame %} ({{ s.coord_frame }} frame){% endif %}</td>
<td>{{ s.n_regions }}</td><td>{% if s.reference %}{{ s.reference }}{% else %}&ndash;{% endif %}</td>
<td>{% for v, shape in s.views.items() %}{{ v }} {{ shape|join(" × ") }}{% if not loop.last %}; {% endif %}{% endfor %}</td>
<td>{% if s.ts_rate %}{{ "%g"|format(s.ts_rate) }} Hz{% else %}&ndash;{% endif %}</td>
<td>{% if s.ts_seconds %}{{ "%.2f"|format(s.ts_seconds) }} s{% else %}&ndash;{% endif %}</td>
<td>{{ s.runs|join(", ") }}</td><td>{% if s.n_epochs is not none %}{{ s.n_epochs }}{% else %}&ndash;{% endif %}</td>
<td>{{ s.params_hash }}</td></tr>{% endfor %}</table></div>
"""

_SUBJECT = STYLE + """
{% if s.groups %}<p class="bh-note">{{ s.n_targets }} {{ "bipolar channels (neighbouring contacts of a shaft or grid row)" if s.bipolar else "contacts" }}
on {{ s.groups|length }} shafts or grids:</p>
<table class="bh"><tr><th>shaft / grid</th><th>{{ "pairs" if s.bipolar else "contacts" }}</th><th>names</th></tr>
{% for g, names in s.groups.items() %}<tr><td>{{ g }}</td><td>{{ names|length }}</td>
<td style="text-align:left">{{ names|join(", ") }}</td></tr>{% endfor %}</table>{% endif %}
{% if s.settings %}<details><summary>preprocessing settings of sub-{{ s.subject }}</summary>
<table class="bh">{% for k, v in s.settings.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></details>{% endif %}
"""


@register_section("preprocessing", order=15)
def preprocessing_section(report: ReportBuilder, ctx: ReportContext) -> None:
    """Per subject: targets kept, coordinates, views, rates, runs, settings."""
    from ..specs import preprocess_only

    if ctx.results_dir is None or ctx.spec is None or not preprocess_only(ctx.spec):
        return
    paths = sorted(Path(ctx.results_dir).glob("sub-*/responses.h5"))
    subjects = [subject_summary(p) for p in paths]
    section = "Preprocessing"
    report.html("Preprocessed subjects", render(_TABLE, subjects=subjects),
                section=section, tags=("preprocessing", "table"))
    for s in subjects:
        report.html(f"sub-{s['subject']}: targets and settings", render(_SUBJECT, s=s),
                    section=section, tags=("preprocessing", s["modality"], f"sub-{s['subject']}"))
