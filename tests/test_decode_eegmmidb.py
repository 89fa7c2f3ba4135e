"""eegmmidb S001 (runs 4, 8, 12: imagined left vs right fist) through the decode stage of
the shipped decoding study, on the team's real recordings (skipped without them).

The accuracies are printed, not asserted against a target: with 45 trials they are
noisy (MOABB reports CSP + LDA around 0.66 +/- 0.17 across eegmmidb subjects). What is
asserted is the bookkeeping: every model on the same five folds, every trial tested once,
chance and a permutation p beside every score.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from brainhead.specs import load_study
from conftest import ROOT, SHARED_DATA

S001 = SHARED_DATA / "eegmmidb-S001"
pytestmark = pytest.mark.skipif(not (S001 / "S001").is_dir(),
                                reason="../shared/data/eegmmidb-S001 (real recordings) is absent")


def test_eegmmidb_s001_decoding(tmp_path, one_torch_thread):
    from brainhead.decode import decode_study
    from brainhead.io import read_arrays
    from brainhead.preprocess import preprocess_subject

    root = tmp_path / "eegmmidb"
    shutil.copytree(ROOT / "data_specs" / "eegmmidb", root)
    sub = root / "subjects" / "sub-S001.yaml"
    data = yaml.safe_load(sub.read_text())
    data["source"]["root"] = str(S001)
    sub.write_text(yaml.safe_dump(data))
    spec = yaml.safe_load((root / "study.yaml").read_text())
    # the demo's small electrode and ConvNet settings keep the test short
    demo = yaml.safe_load((ROOT / "data_specs" / "demo" / "study.yaml").read_text())["decode"]
    spec["decode"].update({"electrode_mha": demo["electrode_mha"],
                           "shallow_convnet": demo["shallow_convnet"], "n_permutations": 500})
    (root / "study.yaml").write_text(yaml.safe_dump(spec))
    study = load_study(root)
    results = tmp_path / "results"
    preprocess_subject(study, "S001", results, results / "sub-S001" / "responses.h5")
    summary = decode_study(study, results)
    scores = pd.read_csv(results / "decode" / "scores.tsv", sep="\t", dtype={"subject": str})
    models = ["electrode_mha", "csp_lda", "tangent_lr", "logvar_lda", "shallow_convnet"]
    assert summary["folds"]["eeg"] == {"WithinSession": 5, "CrossSession": 0, "CrossSubject": 0}
    pooled = scores[scores["fold"] == "all"].set_index("model").loc[models]
    assert (pooled["n_test"] == 45).all()
    assert np.allclose(pooled["chance"], 23 / 45)  # 23 left, 22 right
    assert ((pooled["p_value"] >= 1 / 501) & (pooled["p_value"] <= 1)).all()
    predictions, _ = read_arrays(results / "decode" / "predictions.h5")
    for model in models:  # the same folds: every trial tested exactly once, same fold
        trials = predictions[f"eeg/WithinSession/{model}/trial"]
        assert len(trials) == 45 and len(set(trials)) == 45
        folds = dict(zip(trials, predictions[f"eeg/WithinSession/{model}/fold"]))
        assert folds == dict(zip(predictions["eeg/WithinSession/csp_lda/trial"],
                                 predictions["eeg/WithinSession/csp_lda/fold"]))
    print("\neegmmidb S001, left vs right, 5 folds within the session:\n"
          + pooled[["accuracy", "balanced_accuracy", "roc_auc", "chance",
                    "p_value"]].to_string())
