"""Every shipped study in data_specs/ runs through `snakemake` to its report.

haxby and ieeg_sample read the real recordings of ../shared/data (skipped without them);
deap, seed, dreamer and nsd read small files generated here in their documented layout.
Each study is the shipped one (data_specs/<study>/) with its recordings' root pointed at
the data, and two overrides to keep the test short: 50 permutations and 50 bootstraps
instead of the default 1000. eegmmidb is covered by the degenerate-design tests
(tests/test_validate_design.py); a study that main refuses as degenerate is asserted to stop
before any job with that message, and to say which key to change.
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


def _degenerate_or_report(work: Path, name: str) -> None:
    """Whichever holds on main: the run ends at the report, or stops before any job
    with the degenerate-design error."""
    proc = snakemake(work, "--cores", "2", "--configfile", f"data_specs/{name}/study.yaml",
                     timeout=1200)
    if proc.returncode != 0 and "degenerate design" in proc.stderr:
        assert "align.min_stimuli" in proc.stderr
        assert not (work / "results" / name).exists()
        return
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (work / "results" / name / "report.html").is_file()


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
    fif = SHARED_DATA / "ieeg-sample" / "sample_ecog_ieeg.fif"
    work = _prepare(tmp_path, "ieeg_sample", {"files": [str(fif)]})
    _degenerate_or_report(work, "ieeg_sample")


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
