"""make_report: read the alignment results, run every registered section, save one HTML."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from ..io.store import atomic_path
from . import preprocessing  # noqa: F401  (registers the preprocessing section)
from .figures import FigureWriter
from .sections import ReportBuilder, ReportContext, registered_sections
from .tables import regional_best

_URL_IN_CSS = re.compile(r"""url\(\s*["']?([^"')\s]+)|@import\s+["']([^"']+)""", re.IGNORECASE)
#: (tag, attribute) pairs that make a browser fetch something; None: any tag.
_FETCHING = {(None, "src"), (None, "srcset"), (None, "poster"), (None, "background"),
             ("link", "href"), ("object", "data"), ("image", "href"), ("use", "href"),
             ("image", "xlink:href"), ("use", "xlink:href")}


def _is_external(url: str) -> bool:
    url = url.strip()
    return bool(url) and not url.startswith(("data:", "#", "about:", "blob:"))


class _ResourceFinder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self._in_style = tag == "style"
        for name, value in attrs:
            if value is None:
                continue
            if (None, name) in _FETCHING or (tag, name) in _FETCHING:
                urls = [v.split()[0] for v in value.split(",") if v.strip()] \
                    if name == "srcset" else [value]
                self.found += [u for u in urls if _is_external(u)]
            elif name == "style":
                self._css(value)

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self._css(data)

    def _css(self, text):
        for match in _URL_IN_CSS.finditer(text):
            url = next(g for g in match.groups() if g)
            if _is_external(url):
                self.found.append(url)


def external_resources(html: str) -> list[str]:
    """URLs that the page's markup and styles make a browser fetch.

    Looks at src/srcset/poster attributes, ``<link href>``, ``<object data>``, SVG
    ``<image>``/``<use>`` references, CSS ``url()`` and ``@import`` in style blocks and
    attributes. Inline ``data:`` URIs and in-page anchors do not count; neither do
    hyperlinks (``<a href>``, loaded only when followed) nor text inside scripts (the
    headless-browser test checks what scripts actually request).
    """
    finder = _ResourceFinder()
    finder.feed(html)
    finder.close()
    return finder.found


def _offline(html: str) -> str:
    """The page without MNE's footer hyperlink (its credit stays, as text)."""
    start = html.rfind("<footer>")
    if start < 0:
        return html
    tail = re.sub(r'<a href="https?://[^"]*"[^>]*>([^<]*)</a>', r"\1", html[start:])
    return html[:start] + tail


def _kind(summary_path, spec: dict | None) -> str:
    """What the report is about, for its title: alignment when the study has stimuli
    (or, without its config, an alignment summary), decoding when it has a ``decode``
    section, both, or else preprocessing alone."""
    parts = []
    if summary_path or spec is None or spec.get("stimuli"):
        parts.append("alignment")
    if spec is not None and spec.get("decode"):
        parts.append("decoding")
    return " and ".join(parts) or "preprocessing"


def make_report(summary_path, out_path, *, study: str, description: str = "",
                truth_path=None, best_path=None, ci: float = 0.95, model_dirs=(),
                results_dir=None, figures_dir=None, spec: dict | None = None,
                benchmarks_dir=None, q_max: float = 0.05, vector: str = "svg",
                n_jobs: int = 1) -> Path:
    """Write the self-contained HTML report (an :class:`mne.Report`).

    Parameters
    ----------
    summary_path : path-like | None
        ``align/summary.tsv`` (see :data:`brainhead.align.SUMMARY_COLUMNS`); None for a
        study without stimuli (one that only decodes labels, or only preprocesses: then
        the report describes each subject's ``responses.h5``, given ``results_dir`` and
        ``spec``).
    out_path : path-like
        ``results/<study>/report.html``; written atomically.
    study, description : str
        Shown in the title and header.
    truth_path : path-like | None
        ``truth.json`` of a simulated study; planted layers are marked.
    best_path : path-like | None
        ``align/best_layers.tsv``; without it the best-layer table is empty.
    ci : float
        Level of the bootstrap intervals in the summary (for the text).
    model_dirs : sequence of path-like
        ``models/<family>/<modality>`` folders of trained models; each family's
        registered section reads its own.
    results_dir : path-like | None
        ``results/<study>``: per-target scores (``align/sub-*_<model>.h5``) and
        ``sub-*/responses.h5`` for the brain pictures; None leaves them out.
    figures_dir : path-like | None
        ``results/<study>/figures``: every figure is also written there as PNG and
        ``vector`` (svg or pdf); None writes no figure files.
    spec : dict | None
        The study config (hash, seeds and settings in the provenance section).
    benchmarks_dir : path-like | None
        ``results/<study>/benchmarks`` (Snakemake benchmark files).
    q_max : float
        Targets with q below this are drawn as significant on the brain pictures.
    vector : {"svg", "pdf"}
        Vector format of the figure files.
    n_jobs : int
        Processes that draw the per-subject figures.

    Returns
    -------
    path : Path
        ``out_path``.
    """
    import mne

    from ..align.scores import BEST_COLUMNS

    from ..align import SUMMARY_COLUMNS

    # a study that only decodes labels has no alignment summary
    summary = (pd.read_csv(summary_path, sep="\t", dtype={"subject": str}) if summary_path
               else pd.DataFrame(columns=SUMMARY_COLUMNS))
    truth = json.loads(Path(truth_path).read_text()) if truth_path else None
    best = (pd.read_csv(best_path, sep="\t", dtype={"subject": str}) if best_path
            else pd.DataFrame(columns=BEST_COLUMNS))
    ctx = ReportContext(
        study=study, description=description, summary=summary,
        best=regional_best(best, summary, truth), truth=truth, ci=ci, q_max=q_max,
        model_dirs=[Path(d) for d in model_dirs],
        results_dir=Path(results_dir) if results_dir is not None else None,
        spec=spec, benchmarks_dir=Path(benchmarks_dir) if benchmarks_dir else None)
    writer = FigureWriter(figures_dir, vector=vector, workers=n_jobs)
    try:
        report = mne.Report(title=f"brainhead {_kind(summary_path, spec)} report: {study}",
                            verbose="error")
        builder = ReportBuilder(report, writer)
        for _, section in registered_sections():
            section(builder, ctx)
        with atomic_path(out_path) as tmp:
            html_tmp = Path(tmp).with_name(Path(tmp).name + ".html")
            try:
                report.save(html_tmp, open_browser=False, overwrite=True, verbose="error")
                Path(tmp).write_text(_offline(html_tmp.read_text(encoding="utf-8")),
                                     encoding="utf-8")
            finally:
                html_tmp.unlink(missing_ok=True)
            writer.commit()
    finally:
        writer.close()
    return Path(out_path)
