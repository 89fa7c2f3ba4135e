"""Tests of brainhead.report: best layers, recovery of planted layers, the HTML report."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from brainhead.align import BEST_COLUMNS, SUMMARY_COLUMNS
from brainhead.report import best_layers, external_resources, make_report, recovery_table

N_LAYERS = 4

# subject -> modality, region -> (trained curve, random curve)
CURVES = {
    "01": ("eeg", {
        "anterior": ([0.10, 0.20, 0.60, 0.30], [0.05, 0.10, 0.12, 0.08]),
        "posterior": ([0.20, 0.70, 0.40, 0.10], [0.10, 0.15, 0.05, 0.02]),
    }),
    "02": ("fmri", {
        # planted 0 but best at 3: not recovered; random wins at layer 3
        "anterior": ([0.05, 0.10, 0.20, 0.30], [0.10, 0.20, 0.30, 0.40]),
        "posterior": ([0.15, 0.50, 0.20, 0.10], [0.05, 0.10, 0.10, 0.05]),
    }),
}
TRUTH = {
    "study": "toy", "model": "m", "seed": 0,
    "subjects": {
        "01": {"modality": "eeg", "regions": {"anterior": 2, "posterior": 1}},
        "02": {"modality": "fmri", "regions": {"anterior": 0, "posterior": 1}},
    },
}


VIEWS = {"01": "stimulus", "02": "timeseries"}


def _summary(with_all: bool = True) -> pd.DataFrame:
    records = []
    for subject, (modality, regions) in CURVES.items():
        if with_all:  # an 'all' row set with the best score of all, at layer 0
            regions = {**regions, "all": ([0.9, 0.0, 0.0, 0.0], [0.0] * N_LAYERS)}
        for region, curves in regions.items():
            for control, curve in zip(("trained", "random"), curves):
                for layer, score in enumerate(curve):
                    records.append({"subject": subject, "modality": modality,
                                    "view": VIEWS[subject], "region": region, "model": "m", "control": control,
                                    "layer": layer, "metric": "r", "score": score,
                                    "n_targets": 5, "p": 0.001 * (layer + 1),
                                    "q": 0.002 * (layer + 1)})
        for region, (trained, random) in regions.items():
            for layer in range(N_LAYERS):  # paired differences: interval +-0.05
                diff = trained[layer] - random[layer]
                records.append({"subject": subject, "modality": modality,
                                "view": VIEWS[subject], "region": region,
                                "model": "m", "control": "trained-random", "layer": layer,
                                "metric": "r_diff", "score": diff, "n_targets": 5,
                                "ci_low": diff - 0.05, "ci_high": diff + 0.05})
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


# Best layers as chosen on training folds: sub-02 anterior picks layer 3 (planted 0).
BEST = {("01", "anterior"): 2, ("01", "posterior"): 1, ("02", "anterior"): 3,
        ("02", "posterior"): 1}


def _best() -> pd.DataFrame:
    records = []
    for (subject, region), layer in BEST.items():
        modality, regions = CURVES[subject]
        trained, random = regions[region]
        records.append({"subject": subject, "modality": modality, "view": VIEWS[subject],
                        "region": region, "model": "m", "best_layer": layer, "layers_per_fold": f"{layer} {layer}",
                        "score": trained[layer], "random_score": random[layer],
                        "n_layers": N_LAYERS, "relative_depth": layer / (N_LAYERS - 1),
                        "last_layer_score": trained[-1],
                        "gap_to_last": trained[layer] - trained[-1], "gap_ci_low": 0.0,
                        "gap_ci_high": 0.5})
    return pd.DataFrame.from_records(records, columns=BEST_COLUMNS)


@pytest.fixture
def files(tmp_path):
    summary_path = tmp_path / "align" / "summary.tsv"
    summary_path.parent.mkdir()
    _summary().to_csv(summary_path, sep="\t", index=False)
    _best().to_csv(tmp_path / "align" / "best_layers.tsv", sep="\t", index=False)
    truth_path = tmp_path / "truth.json"
    truth_path.write_text(json.dumps(TRUTH))
    return summary_path, truth_path


# --------------------------------------------------------------------------- tables
def test_best_layers_argmax_and_random_at_that_layer():
    best = best_layers(_summary(with_all=False))  # r_diff rows are ignored
    assert list(best.columns) == ["subject", "modality", "model", "region", "layer",
                                  "score", "random"]
    assert len(best) == 4
    for row in best.itertuples():
        trained, random = CURVES[row.subject][1][row.region]
        assert row.layer == int(np.argmax(trained))
        assert row.score == pytest.approx(max(trained))
        assert row.random == pytest.approx(random[row.layer])
        assert row.modality == CURVES[row.subject][0]


def test_best_layers_with_truth():
    best = best_layers(_summary(), TRUTH).set_index(["subject", "region"])
    assert best.loc[("01", "anterior"), "planted"] == 2
    assert best.loc[("02", "anterior"), "planted"] == 0
    # regions absent from the truth ('all') and unknown subjects get -1
    assert best.loc[("01", "all"), "planted"] == -1
    assert best.loc[("01", "all"), "layer"] == 0
    other = best_layers(_summary(), {"subjects": {}})
    assert (other["planted"] == -1).all()


def test_best_layers_ignores_other_metrics():
    summary = _summary(with_all=False)
    extra = summary.assign(metric="r2", score=summary["score"][::-1].to_numpy())
    best = best_layers(pd.concat([summary, extra], ignore_index=True))
    pd.testing.assert_frame_equal(best, best_layers(summary))


def test_recovery_table():
    best = pd.concat([_best(), _best().iloc[:1].assign(region="all")], ignore_index=True)
    table = recovery_table(best, TRUTH).set_index(["subject", "region"])
    assert "all" not in table.index.get_level_values("region")
    assert len(table) == 4
    expected = {("01", "anterior"): (2, 2, True, True),
                ("01", "posterior"): (1, 1, True, True),
                ("02", "anterior"): (3, 0, False, False),
                ("02", "posterior"): (1, 1, True, True)}
    for key, (layer, planted, recovered, beats) in expected.items():
        row = table.loc[key]
        assert (row["best_layer"], row["planted"]) == (layer, planted), key
        assert bool(row["recovered"]) is recovered, key
        assert bool(row["beats_random"]) is beats, key
    assert table.loc[("02", "anterior"), "random_score"] == pytest.approx(0.40)
    # regions or subjects without a planted layer are left out
    assert recovery_table(best, {"subjects": {}}).empty


# --------------------------------------------------------------------------- HTML
def _check_self_contained(html: str, n_figures: int) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert 'src="http' not in html and "href=\"http" not in html
    # mne.Report inlines its scripts and styles: none is loaded from anywhere
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", html)
    assert not re.search(r"<link\b[^>]*\bhref\s*=", html)
    assert external_resources(html) == []
    images = re.findall(r'<img class="figure-img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"',
                        html)
    assert len(images) == n_figures
    for png in images:
        assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")


def test_make_report_with_truth(files, tmp_path):
    summary_path, truth_path = files
    out = tmp_path / "results" / "toy" / "report.html"
    ret = make_report(summary_path, out, study="toy-study", description="A <b>test</b>",
                      truth_path=truth_path, best_path=summary_path.with_name("best_layers.tsv"))
    assert ret == out and out.is_file()
    html = out.read_text()
    _check_self_contained(html, n_figures=3)  # 2 subjects' layer curves + cross-modal
    assert "<title>brainhead alignment report: toy-study</title>" in html
    assert "A &lt;b&gt;test&lt;/b&gt;" in html  # description is escaped
    for subject in ("01", "02"):
        assert re.search(rf"<figcaption[^>]*>sub-{subject} \({VIEWS[subject]} view\): ", html)
        assert f"<td>{subject}</td>" in html
    # p and q of r at each best layer: sub-01 anterior's best is layer 2
    assert "<td>0.003 (0.006)</td>" in html
    for section in ("Overview", "Best layers", "Cross-modal", "Layer curves: eeg",
                    "Layer curves: fmri", "Provenance"):  # table of contents
        assert re.search(rf'<a class="nav-link[^>]*>{section}</a>', html), section
    assert "<th>planted</th>" in html and "Vertical lines" in html
    # one cell per region; only sub-02 anterior (best 3, planted 0) is not recovered
    assert html.count('<td class="ok">') == 3
    assert re.findall(r'<td class="bad">(\d+)</td>', html) == ["0"]
    assert "<td>0.300</td><td>0.400</td>" in html  # trained and random r, sub-02 ant
    # per-modality rows: eeg recovers 2/2, fmri 1/2; trained > random where CI > 0
    assert "<td>2/2</td>" in html and "<td>1/2</td>" in html
    # paired table: sub-02 anterior is worse than random at layers 1-3 (CI below 0)
    assert re.search(r"<td>02</td><td>anterior</td>\s*<td>0 / 4</td><td>3</td>", html)
    assert "gap to last" in html
    assert "<td>all</td>" not in html  # the 'all' rows are left out when regions exist
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temp


def test_make_report_without_truth(files, tmp_path):
    summary_path, _ = files
    out = tmp_path / "report.html"
    make_report(summary_path, out, study="plain",
                best_path=summary_path.with_name("best_layers.tsv"))
    html = out.read_text()
    _check_self_contained(html, n_figures=3)
    assert "plain" in html and "sub-01" in html and "sub-02" in html
    assert "planted" not in html and "Vertical lines" not in html
    assert 'class="ok"' not in html and 'class="bad"' not in html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["align", "report.html", "truth.json"]


def test_make_report_with_ceiling_and_model_free_metrics(files, tmp_path):
    """r_ceiled, rsa and cka get their own panels; the best-layer table shows r/ceiling."""
    summary_path, _ = files
    summary = pd.read_csv(summary_path, sep="\t", dtype={"subject": str})
    extra = []
    for metric in ("r_ceiled", "rsa", "cka"):
        rows = summary[summary["metric"] == "r"].copy()
        rows["metric"] = metric
        rows["n_clipped"] = 1
        extra.append(rows)
    pd.concat([summary, *extra]).to_csv(summary_path, sep="\t", index=False)
    out = make_report(summary_path, tmp_path / "r.html", study="x",
                      best_path=summary_path.with_name("best_layers.tsv"))
    html = out.read_text()
    _check_self_contained(html, n_figures=3)
    assert "<th>r / ceiling</th>" in html and "5 reliable, 1 clipped" in html


def test_make_report_without_regions(tmp_path):
    """A study without region labels falls back to the 'all' rows."""
    summary = _summary()
    summary = summary[summary["region"] == "all"]
    path = tmp_path / "summary.tsv"
    summary.to_csv(path, sep="\t", index=False)
    best = _best().assign(region="all").drop_duplicates("subject")
    best.to_csv(tmp_path / "best.tsv", sep="\t", index=False)
    out = make_report(path, tmp_path / "r.html", study="noreg", best_path=tmp_path / "best.tsv")
    html = out.read_text()
    _check_self_contained(html, n_figures=3)
    assert html.count("<td>all</td>") == 2


def test_make_report_failure_leaves_no_file(tmp_path):
    path = tmp_path / "summary.tsv"
    _summary().to_csv(path, sep="\t", index=False)
    out = tmp_path / "out" / "report.html"
    with pytest.raises(FileNotFoundError):
        make_report(path, out, study="x", truth_path=tmp_path / "missing.json")
    assert not out.exists()


# --------------------------------------------------------------------------- shared decoder
def _retrieval(subjects=("02", "03")) -> pd.DataFrame:
    """A decoder's retrieval.tsv: top-1 by layer per subject and control (chance 0.1)."""
    rows = []
    for i, subject in enumerate(subjects):
        for control, offset in (("trained", 0.5), ("random", 0.2), ("shuffled", 0.1)):
            for layer in range(N_LAYERS):
                rows.append({"subject": subject, "control": control, "layer": layer,
                             "top1": offset + 0.05 * layer + 0.01 * i, "top5": 0.9,
                             "chance_top1": 0.1, "chance_top5": 0.5, "p_top1": 0.01,
                             "p_top5": 0.01, "n_stimuli": 40})
    return pd.DataFrame(rows)


def test_encoding_and_decoding_layer_curves_side_by_side(tmp_path):
    """Per subject, the ridge layer curves above the decoder's, with the tables' numbers;
    planted layers marked in both panels; in the decoder section of the report."""
    import mne

    from brainhead.report.decoders import (
        adapters_section,
        encoding_curves,
        encoding_decoding_figure,
    )
    from brainhead.report.figures import FigureWriter, pyplot
    from brainhead.report.sections import ReportBuilder, ReportContext

    summary, retrieval = _summary(), _retrieval()
    encoding = encoding_curves(summary, {"02", "03"}, "m")
    assert set(encoding["subject"]) == {"02"}  # sub-03 has no encoding scores
    assert set(encoding["control"]) == {"trained", "random"}
    planted = {"02": TRUTH["subjects"]["02"]["regions"], "03": {}}
    fig = encoding_decoding_figure(encoding, retrieval, planted)
    axes = np.array(fig.axes).reshape(2, 2)  # rows: encoding, decoding; columns: subjects
    lines = {line.get_label(): line for line in axes[0, 0].lines}
    for region, (trained, random) in CURVES["02"][1].items():
        np.testing.assert_allclose(lines[f"{region} (trained)"].get_xdata(), range(N_LAYERS))
        np.testing.assert_allclose(lines[f"{region} (trained)"].get_ydata(), trained)
        np.testing.assert_allclose(lines[f"{region} (random)"].get_ydata(), random)
    assert "all (trained)" not in lines  # regions, not their union
    assert not axes[0, 1].lines  # nothing to draw for sub-03's encoding
    for j, subject in enumerate(("02", "03")):
        lines = {line.get_label(): line for line in axes[1, j].lines}
        for control in ("trained", "random"):
            expect = retrieval[(retrieval["subject"] == subject)
                               & (retrieval["control"] == control)].sort_values("layer")
            np.testing.assert_allclose(lines[control].get_xdata(), expect["layer"])
            np.testing.assert_allclose(lines[control].get_ydata(), expect["top1"])
        assert "shuffled" not in lines
        np.testing.assert_allclose(lines["chance"].get_ydata(), [0.1, 0.1])
    for ax, marks in ((axes[0, 0], {0, 1}), (axes[1, 0], {0, 1}), (axes[1, 1], set())):
        vertical = {line.get_xdata()[0] for line in ax.lines
                    if line.get_label().startswith("_") and np.ptp(line.get_xdata()) == 0}
        assert vertical == marks
    pyplot().close(fig)

    folder = tmp_path / "models" / "adapters" / "fmri"
    folder.mkdir(parents=True)
    retrieval.to_csv(folder / "retrieval.tsv", sep="\t", index=False)
    pd.DataFrame(columns=["subject", "fraction", "n_stimuli", "method", "layer", "top1",
                          "top5", "n_candidates"]).to_csv(folder / "adaptation.tsv",
                                                          sep="\t", index=False)
    (folder / "summary.json").write_text(json.dumps({
        "modality": "fmri", "model": "m", "subjects": ["02", "03"], "n_folds": 4,
        "runs": [], "seconds": 1.0, "transfer_subject": "03",
        "settings": {"adapters": {"n_permutations": 100}}}))
    writer = FigureWriter(tmp_path / "figures")
    builder = ReportBuilder(mne.Report(title="t"), writer)
    ctx = ReportContext(study="t", description="", summary=summary, best=_best(),
                        truth=TRUTH, model_dirs=[folder])
    adapters_section(builder, ctx)
    titles = [f["title"] for f in builder.added]
    assert titles == ["fmri: decoding layer curve", "fmri: encoding and decoding layer curves"]
    assert "planted layers" in builder.added[1]["caption"]
    writer.commit()
    name = "adapters_fmri_all-subjects_all-regions_r-top1_encoding-decoding"
    assert {p.name for p in (tmp_path / "figures").iterdir()} >= {f"{name}.png",
                                                                   f"{name}.svg"}


def test_report_title_names_what_the_study_does():
    from brainhead.report.build import _kind

    assert _kind("align/summary.tsv", None) == "alignment"
    assert _kind(None, {"stimuli": "stimuli.tsv", "decode": None}) == "alignment"
    assert _kind(None, {"stimuli": None, "decode": {"label": "y"}}) == "decoding"
    assert _kind("align/summary.tsv", {"stimuli": "s.tsv", "decode": {"label": "y"}}) == \
        "alignment and decoding"
    assert _kind(None, {"stimuli": None, "decode": None}) == "preprocessing"
