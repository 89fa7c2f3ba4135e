"""Degenerate designs: refused by validate (and the Snakefile) when the spec shows them,
by the align step, before it writes anything, when only the data or the scores do.

Issue 14: a two-condition study with a made-up stimuli table went through text
alignment and reported the same r at every layer of the trained and the random model,
and still named a best layer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from brainhead.align.scores import align_subject, check_layers_differ, score_subject
from brainhead.cli import main
from brainhead.io import (
    ResponseTable,
    Targets,
    View,
    provenance,
    write_arrays,
    write_responses,
)
from brainhead.io.readers import RecordingError
from brainhead.specs import SpecError, load_study

REPO = Path(__file__).parents[1]
EEGMMIDB = REPO / "data_specs" / "eegmmidb"
SHARED_S001 = REPO.parent / "shared" / "data" / "eegmmidb-S001"
PARAMS = {"view": "stimulus", "alphas_log10": [-1, 4, 6], "n_inner_splits": 3,
          "n_permutations": 20, "n_bootstraps": 20, "ci": 0.95, "min_ceiling": 0.3,
          "ceiling": "auto", "min_stimuli": 8}


# --------------------------------------------------------------------------- the shipped study
@pytest.mark.skipif(not (SHARED_S001 / "S001").is_dir(),
                    reason="needs ../shared/data/eegmmidb-S001 (the shared test recordings)")
def test_eegmmidb_is_a_decoding_study_that_validates(capsys):
    """Whichever holds on main: since the decoding issue (10), eegmmidb decodes its
    left/right labels with no stimuli table, and validate accepts it (as an alignment
    study with a made-up stimuli table it was refused as a degenerate design)."""
    code = main(["validate", str(EEGMMIDB)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "study 'eegmmidb' is valid: 1 subjects 1 eeg" in out.out
    assert "degenerate design" not in out.err and "Traceback" not in out.err
    assert not (EEGMMIDB / "stimuli.tsv").exists()
    study = load_study(EEGMMIDB)
    assert "stimuli" not in study.config and study.config["decode"]["classes"] == ["left", "right"]


@pytest.mark.skipif(not (SHARED_S001 / "S001").is_dir(),
                    reason="needs ../shared/data/eegmmidb-S001 (the shared test recordings)")
def test_eegmmidb_snakefile_plans_decoding_without_alignment(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy2(REPO / "Snakefile", work / "Snakefile")
    shutil.copytree(REPO / "workflows", work / "workflows")
    study = work / "data_specs" / "eegmmidb"
    shutil.copytree(EEGMMIDB, study)
    sub = study / "subjects" / "sub-S001.yaml"
    data = yaml.safe_load(sub.read_text())
    data["source"]["root"] = os.path.relpath(SHARED_S001, study)
    sub.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "-n",
                           "--configfile", "data_specs/eegmmidb/study.yaml"],
                          cwd=work, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    jobs = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert {k: jobs.get(k) for k in ("preprocess", "decode", "report")} == {
        "preprocess": "1", "decode": "1", "report": "1"}, proc.stdout
    # preprocessing -> decoding -> report: no features, alignment or training
    assert not {"features", "align", "summary"} & set(jobs), jobs
    assert "results/eegmmidb/decode/scores.tsv" in proc.stdout
    assert not (work / "results").exists()


# --------------------------------------------------------------------------- at validate
def _simulated_study(tmp_path: Path, **align) -> Path:
    root = tmp_path / "study"
    shutil.copytree(REPO / "data_specs" / "demo", root)
    data = yaml.safe_load((root / "study.yaml").read_text())
    data["simulate"]["n_repeats"] = 1
    data["align"].update(align)
    (root / "study.yaml").write_text(yaml.safe_dump(data))
    return root


def test_explicit_ceiling_without_repeats_is_refused(tmp_path):
    root = _simulated_study(tmp_path, ceiling="split_half")
    with pytest.raises(SpecError, match=r"study\.yaml: key 'align\.ceiling': degenerate "
                                        r"design: a split_half noise ceiling is asked for "
                                        r"but simulate\.n_repeats is 1"):
        load_study(root)
    # auto (the default) scores no ceiling without repeats, and is fine
    load_study(_simulated_study(tmp_path / "auto", ceiling="auto"))


def test_too_few_simulated_stimuli_is_refused(tmp_path):
    root = _simulated_study(tmp_path, min_stimuli=200)
    with pytest.raises(SpecError, match=r"key 'align\.min_stimuli': degenerate design: "
                                        r"simulate\.n_stimuli is 160, fewer than "
                                        r"align\.min_stimuli = 200"):
        load_study(root)


# --------------------------------------------------------------------------- at align time
def _two_stimulus_subject(tmp_path: Path, *, n_stimuli: int = 2, same_features=False,
                          n_repeats: int = 10):
    """EEG-like trials of ``n_stimuli`` conditions, each shown ``n_repeats`` times."""
    rng = np.random.default_rng(0)
    names = np.array([f"s{k}" for k in range(n_stimuli)])
    stim = np.tile(names, n_repeats)
    Y = rng.normal(size=(len(stim), 6)) + (stim == "s0")[:, None]
    view = View(X=Y.astype(np.float32),
                rows={"stim_id": stim,
                      "group": (np.arange(len(stim)) % 4).astype(str)})
    table = ResponseTable(subject="x", modality="eeg",
                          targets=Targets(name=[f"c{i}" for i in range(6)],
                                          kind=["channel"] * 6,
                                          coords=np.full((6, 3), np.nan), region=[""] * 6),
                          views={"stimulus": view})
    responses = write_responses(tmp_path / "sub-x" / "responses.h5", table,
                                provenance("preprocess", {}))
    if same_features:
        one = rng.normal(size=(1, n_stimuli, 8))
        trained = random = np.repeat(one, 3, axis=0)
    else:
        trained, random = rng.normal(size=(2, 3, n_stimuli, 8))
    features = write_arrays(tmp_path / "features.h5",
                            {"trained": trained.astype(np.float32),
                             "random": random.astype(np.float32), "stim_id": names},
                            provenance("features", {}))
    return responses, features


def test_align_refuses_two_stimuli_before_writing(tmp_path):
    responses, features = _two_stimulus_subject(tmp_path)
    out = tmp_path / "align"
    with pytest.raises(RecordingError, match=r"sub-x: responses\.h5: key 'align\.min_stimuli'"
                                             r": degenerate design: 2 distinct stimuli"):
        align_subject(responses, features, "toy", PARAMS, out / "a.h5", out / "a.tsv",
                      out / "b.tsv")
    assert not out.exists()


def test_align_refuses_asked_ceiling_without_repeats(tmp_path):
    responses, features = _two_stimulus_subject(tmp_path, n_stimuli=40, n_repeats=1)
    with pytest.raises(RecordingError, match=r"key 'align\.ceiling': degenerate design: a "
                                             r"split_half noise ceiling is asked for.*0 of "
                                             r"40 are"):
        score_subject(responses, features, "toy", {**PARAMS, "ceiling": "split_half"})
    # auto: no ceiling, no error
    summary, _, per_target = score_subject(responses, features, "toy", PARAMS)
    assert np.isnan(per_target["ceiling"]).all()
    assert "r_ceiled" not in set(summary["metric"])


def test_align_refuses_identical_layers_before_writing(tmp_path):
    responses, features = _two_stimulus_subject(tmp_path, n_stimuli=16, n_repeats=2,
                                                same_features=True)
    out = tmp_path / "align"
    with pytest.raises(RecordingError, match=r"sub-x: responses\.h5: .*degenerate design: "
                                             r"every layer of the trained model and of its "
                                             r"random control scores the same"):
        align_subject(responses, features, "toy", PARAMS, out / "a.h5", out / "a.tsv",
                      out / "b.tsv")
    assert not out.exists()


def test_check_layers_differ_passes_real_differences():
    r = np.array([[0.1, 0.2], [0.3, 0.2], [0.1, 0.25]])
    check_layers_differ({"r_trained": r, "r_random": r * 0.5}, "here")  # no error
    same = np.full((3, 2), 0.464)
    with pytest.raises(RecordingError, match=r"here: .*mean r = 0\.464"):
        check_layers_differ({"r_trained": same, "r_random": same.copy()}, "here")


def test_align_refuses_two_texts_under_many_ids(tmp_path):
    """The issue's forced-through case: 40 trials with ids of their own but only two
    texts (so two feature vectors): every layer, trained or random, scored the same
    (r ~ 0.46) and a best layer was named. Now the align step stops, writing nothing."""
    rng = np.random.default_rng(0)
    n = 40
    ids = np.array([f"t{k:02d}" for k in range(n)])
    cond = np.arange(n) % 2
    view = View(X=(rng.normal(size=(n, 6)) + cond[:, None]).astype(np.float32),
                rows={"stim_id": ids, "group": (np.arange(n) // 10).astype(str)})
    table = ResponseTable(subject="x", modality="eeg",
                          targets=Targets(name=[f"c{i}" for i in range(6)],
                                          kind=["channel"] * 6,
                                          coords=np.full((6, 3), np.nan), region=[""] * 6),
                          views={"stimulus": view})
    responses = write_responses(tmp_path / "responses.h5", table, provenance("preprocess", {}))
    two = rng.normal(size=(2, 3, 2, 16))  # (control, layer, text, dim)
    features = write_arrays(tmp_path / "f.h5",
                            {"trained": two[0][:, cond].astype(np.float32),
                             "random": two[1][:, cond].astype(np.float32), "stim_id": ids},
                            provenance("features", {}))
    out = tmp_path / "align"
    with pytest.raises(RecordingError, match=r"every layer of the trained model and of its "
                                             r"random control scores the same \(mean r = "
                                             r"0\.4\d\d\)"):
        align_subject(responses, features, "toy", {**PARAMS, "min_stimuli": 2},
                      out / "a.h5", out / "a.tsv", out / "b.tsv")
    assert not out.exists()
