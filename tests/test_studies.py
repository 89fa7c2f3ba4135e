"""Every shipped study in data_specs/ runs through `snakemake` to its report.

haxby and ieeg_sample read the real recordings of ../shared/data (skipped without them);
deap, seed, dreamer and nsd read small files generated here in their documented layout.
Each study is the shipped one (data_specs/<study>/) with its recordings' root pointed at
the data, and two overrides to keep the test short: 50 permutations and 50 bootstraps
instead of the default 1000. ieeg_sample has no stimuli (``stimuli: null``): it runs
preprocess -> report only, given as ``--config study=PATH``. eegmmidb is covered by the
degenerate-design tests (tests/test_validate_design.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import yaml

from _mini_study import copy_workflow, snakemake
from conftest import SHARED_DATA

pytestmark = pytest.mark.slow


def _prepare(tmp_path: Path, name: str, source: dict, stimuli: str | None = None) -> Path:
    """Copy the workflow; point sub-01's source at the data; shorten the statistics."""
    work = copy_workflow(tmp_path / "work")
    study_dir = work / "data_specs" / name
    study = yaml.safe_load((study_dir / "study.yaml").read_text())
    study.setdefault("align", {}).update({"n_permutations": 50, "n_bootstraps": 50})
    (study_dir / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    sub_file = study_dir / "subjects" / "sub-01.yaml"
    sub = yaml.safe_load(sub_file.read_text())
    sub["source"].update(source)
    sub_file.write_text(yaml.safe_dump(sub, sort_keys=False))
    if stimuli is not None:
        (study_dir / "stimuli.tsv").write_text(stimuli)
    return work


def _run_to_report(work: Path, name: str) -> pd.DataFrame:
    proc = snakemake(work, "--cores", "2", "--configfile", f"data_specs/{name}/study.yaml",
                     timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = work / "results" / name
    html = (results / "report.html").read_text()
    assert name in html and "<table" in html
    summary = pd.read_csv(results / "align" / "summary.tsv", sep="\t", dtype={"subject": str})
    assert set(summary["subject"]) == {"01"}
    assert {"trained", "random"} <= set(summary["control"])
    assert np.isfinite(summary["score"]).all()
    return summary


# ----------------------------------------------------------------- shared recordings
needs_haxby = pytest.mark.skipif(not (SHARED_DATA / "haxby2001").is_dir(),
                                 reason="../shared/data/haxby2001 is absent")
needs_ieeg = pytest.mark.skipif(not (SHARED_DATA / "ieeg-sample").is_dir(),
                                reason="../shared/data/ieeg-sample is absent")


@needs_haxby
def test_haxby(tmp_path):
    work = _prepare(tmp_path, "haxby", {"root": str(SHARED_DATA / "haxby2001")})
    summary = _run_to_report(work, "haxby")
    assert set(summary["modality"]) == {"fmri"}


@needs_ieeg
def test_ieeg_sample(tmp_path):
    """No stimuli: preprocess -> report, the report describing the bipolar contacts."""
    import h5py

    fif = SHARED_DATA / "ieeg-sample" / "sample_ecog_ieeg.fif"
    work = _prepare(tmp_path, "ieeg_sample", {"files": [str(fif)]})
    assert not (work / "data_specs" / "ieeg_sample" / "stimuli.tsv").exists()
    proc = snakemake(work, "--cores", "2", "--config", "study=data_specs/ieeg_sample",
                     timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = work / "results" / "ieeg_sample"
    # only preprocessing and the report ran
    assert sorted(p.name for p in results.iterdir()) == [
        "benchmarks", "figures", "report.html", "sub-01"]
    assert sorted(p.name for p in (results / "benchmarks").iterdir()) == ["preprocess", "report"]
    with h5py.File(results / "sub-01" / "responses.h5", "r") as f:
        names = [n.decode() for n in f["targets/name"][()]]
        assert list(f["views"]) == ["timeseries"]
    # 320 ECoG + 74 sEEG contacts -> 360 bipolar channels along shafts and grid rows
    assert len(names) == 360 and all("-" in n for n in names)
    html = (results / "report.html").read_text()
    assert "ieeg_sample" in html and "sub-01" in html and "stimuli: null" in html
    assert "Preprocessed subjects" in html and "<td>360</td>" in html
    assert "(bipolar pairs)" in html and "<td>bipolar</td>" in html
    assert "360 (head frame)" in html and "20 Hz" in html and "0.70 s" in html
    for pair in ("G1-G2", "OFMG1-OFMG2", "AD1-AD2", "ID9-ID10"):
        assert pair in names and pair in html
    assert "Best layer per subject and region" not in html


# ------------------------------------------------------- generated, documented layouts
def _deap(root: Path) -> Path:
    """data_preprocessed_matlab/s01.mat: 40 trials x 40 channels x 8064 samples (128 Hz),
    labels 40 x 4 (valence, arousal, dominance, liking); microvolts."""
    rng = np.random.default_rng(0)
    data = rng.normal(0, 5.0, (40, 40, 8064)).astype(np.float32)
    t = np.arange(8064) / 128.0
    gain = np.linspace(0, 20, 40)[:, None]  # each video its own alpha power on Oz
    data[:, 31, 384:] += gain * np.sin(2 * np.pi * 10 * t[384:])
    labels = np.column_stack([np.tile([2.0, 7.5], 20), np.linspace(1, 9, 40),
                              np.full(40, 5.0), np.full(40, 6.0)])
    folder = root / "data_preprocessed_matlab"
    folder.mkdir(parents=True)
    scipy.io.savemat(folder / "s01.mat", {"data": data, "labels": labels})
    return root


def _seed(root: Path) -> Path:
    """Preprocessed_EEG/: <subject>_<date>.mat with 15 trials (62 channels, 200 Hz) and
    label.mat."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for date in ("20131027", "20131030"):
        trials = {f"djc_eeg{k}": rng.normal(0.0, 1.0, (62, 800 + 100 * k))
                  for k in range(1, 16)}
        scipy.io.savemat(root / f"1_{date}.mat", trials)
    labels = np.array([1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1])
    scipy.io.savemat(root / "label.mat", {"label": labels[None, :]})
    return root


def _dreamer(root: Path) -> Path:
    """DREAMER.mat: 18 film clips per participant, 14 channels at 128 Hz, with baselines."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True)
    data = np.empty((1, 1), dtype=object)
    stimuli = np.empty((18, 1), dtype=object)
    baseline = np.empty((18, 1), dtype=object)
    for k in range(18):
        stimuli[k, 0] = 4200 + rng.normal(0, 5, (128 * (8 + k), 14))
        baseline[k, 0] = 4200 + rng.normal(0, 5, (128 * 61, 14))
    data[0, 0] = {"Age": 25, "EEG": {"stimuli": stimuli, "baseline": baseline},
                  "ScoreValence": np.arange(18)[:, None] % 5 + 1.0,
                  "ScoreArousal": np.full((18, 1), 2.0),
                  "ScoreDominance": np.full((18, 1), 4.0)}
    scipy.io.savemat(root / "DREAMER.mat", {"DREAMER": {"Data": data,
                                                        "EEG_SamplingRate": 128}})
    return root


def test_deap(tmp_path):
    work = _prepare(tmp_path, "deap", {"root": str(_deap(tmp_path / "deap"))})
    summary = _run_to_report(work, "deap")
    assert set(summary["modality"]) == {"eeg"}


def test_seed(tmp_path):
    root = _seed(tmp_path / "SEED" / "Preprocessed_EEG")
    work = _prepare(tmp_path, "seed", {"root": str(root)})
    _run_to_report(work, "seed")


def test_dreamer(tmp_path):
    work = _prepare(tmp_path, "dreamer", {"root": str(_dreamer(tmp_path / "DREAMER"))})
    _run_to_report(work, "dreamer")


def test_nsd(tmp_path):
    from _bad_inputs_fmri import write_nsd

    root = tmp_path / "nsd"
    write_nsd(root, sessions=(1, 2, 3), n_trials=24, shape=(6, 6, 4))
    # 12 images (73k ids 101..112), each shown twice per session; one caption each
    stimuli = "stim_id\ttext\n" + "".join(
        f"{101 + k}\ta photograph of object number {k} on a table\n" for k in range(12))
    work = _prepare(tmp_path, "nsd", {"root": str(root)}, stimuli=stimuli)
    summary = _run_to_report(work, "nsd")
    assert "r_ceiled" in set(summary["metric"])  # ncsnr: NSD's own noise ceiling
