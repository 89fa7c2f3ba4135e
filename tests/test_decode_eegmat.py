"""Rest versus mental arithmetic on real recordings (../shared/data/eegmat-dev): windows
of continuous EEG labelled by their file, a time segment per run, the decode stage on
the shipped study data_specs/eegmat (three of its subjects, fast models)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from brainhead.specs import load_study
from conftest import ROOT, SHARED_DATA

EEGMAT = SHARED_DATA / "eegmat-dev"
pytestmark = pytest.mark.skipif(not (EEGMAT / "Subject00_1.edf").is_file(),
                                reason="../shared/data/eegmat-dev (real recordings) is absent")


@pytest.fixture(scope="module")
def eegmat(tmp_path_factory):
    """The shipped study with subjects 00-02, fast models and few permutations."""
    root = tmp_path_factory.mktemp("eegmat") / "eegmat"
    shutil.copytree(ROOT / "data_specs" / "eegmat", root)
    for sub in root.glob("subjects/sub-*.yaml"):
        data = yaml.safe_load(sub.read_text())
        if data["subject"] not in ("00", "01", "02"):
            sub.unlink()
            continue
        data["source"]["files"] = [str(EEGMAT / f"Subject{data['subject']}_{r}.edf")
                                   for r in (1, 2)]
        sub.write_text(yaml.safe_dump(data))
    spec = yaml.safe_load((root / "study.yaml").read_text())
    spec["decode"].update({"models": ["logvar_lda", "tangent_lr", "csp_lda"],
                           "n_permutations": 200})
    (root / "study.yaml").write_text(yaml.safe_dump(spec))
    return load_study(root)


def test_shipped_eegmat_study_points_at_shared_data():
    study = load_study(ROOT / "data_specs" / "eegmat")
    assert len(study.subjects) == 12 and "stimuli" not in study.config
    files = study.subjects["07"].source["files"]
    assert [f.rsplit("/", 1)[-1] for f in files] == ["Subject07_1.edf", "Subject07_2.edf"]


def test_rest_and_arithmetic_windows_and_decoding(eegmat, tmp_path, one_torch_thread):
    from brainhead.decode import decode_study
    from brainhead.io import read_responses
    from brainhead.preprocess import preprocess_subject

    results = tmp_path / "results"
    for sub in eegmat.subjects:
        preprocess_subject(eegmat, sub, results, results / f"sub-{sub}" / "responses.h5")
    table = read_responses(results / "sub-00" / "responses.h5")
    rows = table.view("bands").rows
    # hand-computed: 182 s rest file, its last 62 s (120 to 182 s) in 2 s windows, then
    # the 62 s arithmetic file from 0 s: 31 windows each
    assert rows["y"].tolist() == ["rest"] * 31 + ["arithmetic"] * 31
    np.testing.assert_allclose(rows["t_start"][:31], np.arange(120, 182, 2.0))
    np.testing.assert_allclose(rows["t_start"][31:], np.arange(0, 62, 2.0))
    assert table.targets.name.tolist() == ["F3", "Fz", "F4", "P3", "Pz", "P4", "O1", "O2"]
    assert table.view("epochs").X.shape == (62, 8, 200)  # 2 s at decode.epochs_sfreq 100
    summary = decode_study(eegmat, results)
    scores = pd.read_csv(results / "decode" / "scores.tsv", sep="\t", dtype={"subject": str})
    assert summary["folds"]["eeg"] == {"WithinSession": 15, "CrossSubject": 3}
    within = scores[(scores.protocol == "WithinSession") & (scores.fold != "all")]
    # fold k tests block k (6-7 windows) of each file: both classes, never a neighbour
    assert set(within.n_test) <= {12, 13, 14} and (within.chance <= 0.54).all()
    pooled = scores[scores.fold == "all"]
    assert pooled[["accuracy", "chance", "p_value"]].notna().all().all()
    print("\n" + pooled[["protocol", "subject", "model", "accuracy", "chance",
                         "p_value"]].to_string(index=False))
