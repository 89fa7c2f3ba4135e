"""The report's brain pictures, figure files, provenance and section registry, on a tiny
synthetic study: one fMRI, one EEG and one sEEG subject written as real artifacts."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from brainhead.align import SUMMARY_COLUMNS
from brainhead.io.store import spec_hash, write_arrays, write_responses
from brainhead.io.table import ResponseTable, Targets, View
from brainhead.report import make_report, register_section
from brainhead.report.brain import load_target_maps
from brainhead.report.sections import SECTIONS

N_LAYERS = 4
SPEC = {"name": "tiny", "seed": 7, "align": {"n_permutations": 100, "ci": 0.9}}


def _targets(modality: str, rng) -> Targets:
    if modality == "fmri":
        grid = np.array([(x, y, z) for x in range(-40, 41, 10) for y in range(-60, 31, 10)
                         for z in range(0, 41, 10)], dtype=float)
        region = np.where(grid[:, 1] < -20, "posterior", "anterior")
        names = [f"v{k}" for k in range(len(grid))]
        return Targets(names, ["voxel"] * len(grid), grid, region)
    if modality == "eeg":
        import mne

        montage = mne.channels.make_standard_montage("colin27_1020")
        pos = montage.get_positions()["ch_pos"]
        names = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Fz", "Cz",
                 "Pz", "T7", "T8", "Oz"]
        coords = np.array([pos[n] for n in names]) * 1000.0
        region = np.where(coords[:, 1] > 0, "anterior", "posterior")
        return Targets(names, ["channel"] * len(names), coords, region)
    names = [f"A{k}" for k in range(1, 5)] + ["B1", "B2"]
    coords = np.array([[30, -20, 0], [35, -20, 0], [40, -20, 0], [45, -20, 0],
                       [np.nan] * 3, [np.nan] * 3], dtype=float)
    region = ["posterior"] * 4 + ["anterior", ""]
    return Targets(names, ["electrode"] * 6, coords, region)


SUBJECTS = {"f1": "fmri", "e1": "eeg", "s1": "seeg"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """results/<study> with responses.h5, align h5 + summary, benchmarks; and the paths."""
    rng = np.random.default_rng(0)
    results = tmp_path_factory.mktemp("tiny") / "results" / "tiny"
    rows = []
    for subject, modality in SUBJECTS.items():
        targets = _targets(modality, rng)
        n = len(targets)
        X = rng.standard_normal((12, n)).astype(np.float32)
        view = View(X=X, rows={"stim_id": np.arange(12).astype(str),
                               "group": np.repeat([0, 1], 6)})
        table = ResponseTable(subject, modality, targets, {"stimulus": view})
        write_responses(results / f"sub-{subject}" / "responses.h5", table, {"step": "test"})
        # r peaks at layer 1 in anterior targets, at layer 2 in posterior ones
        peak = np.where(targets.region == "anterior", 1, 2)
        r = np.stack([0.5 - 0.15 * np.abs(layer - peak) for layer in range(N_LAYERS)])
        r = (r + 0.01 * rng.standard_normal(r.shape)).astype(np.float32)
        q = np.where(r > 0.3, 0.01, 0.5).astype(np.float32)
        write_arrays(results / "align" / f"sub-{subject}_m.h5",
                     {"r_trained": r, "q_trained": q, "p_trained": q,
                      "target_name": targets.name, "target_region": targets.region},
                     {"brainhead_step": "align", "params_hash": "abc", "git_rev": "0" * 40})
        for region in ("anterior", "posterior", "all"):
            for control in ("trained", "random"):
                for layer in range(N_LAYERS):
                    score = float(r[layer].mean()) * (1.0 if control == "trained" else 0.5)
                    rows.append({"subject": subject, "modality": modality, "view": "stimulus",
                                 "region": region, "model": "m", "control": control,
                                 "layer": layer, "metric": "r", "score": score,
                                 "n_targets": n, "ci_low": score - 0.05,
                                 "ci_high": score + 0.05, "p": 0.01, "q": 0.02})
    summary = results / "align" / "summary.tsv"
    pd.DataFrame(rows, columns=SUMMARY_COLUMNS).to_csv(summary, sep="\t", index=False)
    bench = results / "benchmarks" / "preprocess"
    bench.mkdir(parents=True)
    (bench / "sub-f1.tsv").write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "12.5\t0:00:12\t456.7\t1000\t300\t350\t0\t0\t90\t11.0\n")
    return results, summary


def _report(results, summary, out, **kwargs):
    return make_report(summary, out, study="tiny", results_dir=results,
                       figures_dir=results / "figures", spec=SPEC,
                       benchmarks_dir=results / "benchmarks", **kwargs)


def test_brain_maps_figures_and_provenance(study, tmp_path):
    results, summary = study
    (results / "figures").mkdir(exist_ok=True)
    (results / "figures" / "stale.png").write_bytes(b"old")  # replaced as a whole
    out = _report(results, summary, results / "report.html", n_jobs=2)
    html = out.read_text()
    toc = re.findall(r'<a class="nav-link[^>]*>([^<]+)</a>', html)
    for modality in ("eeg", "fmri", "seeg"):
        assert f"Brain maps: {modality}" in toc
        assert f"Layer curves: {modality}" in toc
    # one brain figure per subject, with a caption that says what and over what
    captions = re.findall(r"<figcaption[^>]*>([^<]*)</figcaption>", html)
    assert any(c.startswith("sub-f1 (fMRI, 450 voxels, ") and "MNI152" in c for c in captions)
    assert any(c.startswith("sub-e1 (EEG, 16 channels, ") and "topomap" not in c
               and "montage" in c for c in captions)
    assert any(c.startswith("sub-s1 (sEEG, 4 contacts with MNI coordinates") for c in captions)
    assert any("relative depth" in c and "median over subjects" in c for c in captions)
    # contacts without coordinates are listed, not dropped
    assert "2 of 6 targets of sub-s1" in html
    assert "<td>B1</td><td>anterior</td>" in html and "<td>B2</td><td>n/a</td>" in html
    # every figure as PNG + SVG, named by modality, subject, region and metric
    names = sorted(p.name for p in (results / "figures").iterdir())
    assert "stale.png" not in names
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 3 + 3 + 1 and len(names) == 2 * len(pngs)
    for subject, modality in SUBJECTS.items():
        assert sum(n.startswith(f"{modality}_sub-{subject}_") for n in pngs) == 2
    assert "fmri_sub-f1_all-regions_r-bestlayer-regions_glassbrain-statmap.png" in pngs
    for name in names:
        data = (results / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG" if name.endswith(".png") else b"<?xml")
    assert not [p for p in results.iterdir() if p.name.startswith(".")]  # no staging left
    # provenance: spec hash, seeds, settings, per-job time and memory, artifacts
    prov = html[html.index(">Provenance<"):]
    assert f"<td>{spec_hash(SPEC)}</td>" in prov
    assert "<th>study seed</th><td>7</td>" in prov
    assert "<th>n_permutations</th><td>100</td>" in prov
    assert re.search(r"<td>preprocess</td><td>sub-f1</td><td>12.5</td>\s*<td>457</td>", prov)
    assert "<td>sub-f1_m.h5</td><td>align</td><td>abc</td>" in prov
    assert re.search(r"<th>numpy</th><td>[0-9.]+</td>", prov)


def test_mismatched_alignment_is_an_error_before_any_output(study, tmp_path):
    results, summary = study
    bad = tmp_path / "results" / "tiny"
    bad.mkdir(parents=True)
    for sub in ("align", "sub-f1", "sub-e1", "sub-s1"):
        src = results / sub
        (bad / sub).mkdir()
        for f in src.iterdir():
            (bad / sub / f.name).write_bytes(f.read_bytes())
    # the EEG subject's alignment has one target fewer than its responses
    import h5py

    with h5py.File(bad / "align" / "sub-e1_m.h5", "a") as f:
        r = f["r_trained"][()][:, :-1]
        del f["r_trained"]
        f["r_trained"] = r
    with pytest.raises(ValueError, match=r"sub-e1_m\.h5: sub-e1: key 'r_trained' has shape "
                                         r"\(4, 15\)"):
        make_report(bad / "align" / "summary.tsv", bad / "report.html", study="tiny",
                    results_dir=bad, figures_dir=bad / "figures")
    assert not (bad / "report.html").exists() and not (bad / "figures").exists()
    assert not [p for p in bad.iterdir() if p.name.startswith(".")]


def test_load_target_maps_best_layer(study):
    results, _ = study
    maps = load_target_maps(results / "align" / "sub-s1_m.h5",
                            results / "sub-s1" / "responses.h5")
    assert maps.modality == "seeg" and maps.n_layers == N_LAYERS
    expected = np.where(maps.regions == "anterior", 1, 2)
    np.testing.assert_array_equal(maps.best_layer, expected)
    assert maps.significant(0.05).all()


def test_a_registered_section_joins_the_report(study, tmp_path):
    """A model family adds its section with register_section, placed by its order."""
    results, summary = study

    @register_section("toy_family", order=70)
    def toy(report, ctx):
        report.html("Toy family", f"<p>{len(ctx.summary)} rows of {ctx.study}</p>",
                    section="Toy family", tags=("toy",))

    try:
        out = make_report(summary, tmp_path / "r.html", study="tiny")
    finally:
        SECTIONS.pop("toy_family")
    html = out.read_text()
    toc = re.findall(r'<a class="nav-link[^>]*>([^<]+)</a>', html)
    assert toc.index("Toy family") == toc.index("Provenance") - 1
    assert f"<p>{len(pd.read_csv(summary, sep=chr(9)))} rows of tiny</p>" in html
    assert "Brain maps: eeg" not in toc  # no results_dir: no brain pictures
