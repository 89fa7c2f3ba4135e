"""The Snakemake DAG end to end: dry run, lint, bad specs, and the full demo with recovery.

The full demo run takes about 3.5 minutes on 2 cores; it runs once per session and every
test of the demo's output reads the same run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT


def _copy_workflow(dest: Path) -> Path:
    for name in ("Snakefile", "workflows", "data_specs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    return dest


def _snakemake(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "BRAINHEAD_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_lists_the_dag(tmp_path):
    work = _copy_workflow(tmp_path)
    proc = _snakemake(work, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stderr
    for rule, count in (("simulate", 1), ("preprocess", 8), ("features", 1), ("align", 8),
                        ("summary", 1), ("report", 1)):
        assert any(line.split() == [rule, str(count)] for line in proc.stdout.splitlines()), rule


def test_lint_is_clean(tmp_path):
    work = _copy_workflow(tmp_path)
    proc = _snakemake(work, "--lint")
    assert proc.returncode == 0
    assert "good condition" in proc.stdout + proc.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda d: (d / "subjects" / "sub-e01.yaml").write_text(
        "subject: e01\nmodality: eeg\nsource: simulated\ncolour: red\n"),
     "sub-e01.yaml: subject 'e01': unknown key 'colour'"),
    (lambda d: (d / "subjects" / "sub-e02.yaml").write_text(
        "subject: e02\nmodality: meg\nsource: simulated\n"),
     "sub-e02.yaml: subject 'e02': key 'modality'"),
])
def test_bad_spec_stops_before_any_job(tmp_path, edit, message):
    work = _copy_workflow(tmp_path)
    edit(work / "data_specs" / "demo")
    proc = _snakemake(work, "--cores", "1")
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (work / "results").exists()


def test_configfile_selects_another_study(tmp_path):
    work = _copy_workflow(tmp_path)
    other = work / "data_specs" / "other"
    shutil.copytree(work / "data_specs" / "demo", other)
    text = (other / "study.yaml").read_text().replace("name: demo", "name: other")
    (other / "study.yaml").write_text(text)
    (other / "subjects" / "sub-e03.yaml").unlink()
    proc = _snakemake(work, "-n", "--cores", "1", "--configfile", "data_specs/other/study.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "results/other/report.html" in proc.stdout
    assert any(line.split() == ["preprocess", "7"] for line in proc.stdout.splitlines())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = _copy_workflow(tmp_path_factory.mktemp("demo"))
    proc = _snakemake(work, "--cores", "2", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "results" / "demo"


def test_demo_outputs(demo_run):
    assert (demo_run / "report.html").is_file()
    summary = pd.read_csv(demo_run / "align" / "summary.tsv", sep="\t", dtype={"subject": str})
    assert {"subject", "modality", "region", "model", "control", "layer", "metric",
            "score"} <= set(summary.columns)
    assert set(summary["control"]) == {"trained", "random", "trained-random"}
    # every sentence is shown twice: noise ceilings and crossnobis RSA for every subject
    metrics = {"r", "r_ceiled", "rsa", "rsa_crossnobis", "cka", "cka_debiased", "r_diff"}
    assert metrics == set(summary["metric"])
    per_subject = summary.groupby("subject")["metric"].agg(set)
    assert (per_subject.map(lambda m: metrics <= m)).all(), per_subject
    assert summary["subject"].nunique() == 8
    assert set(summary["modality"]) == {"eeg", "seeg", "fmri"}
    html = (demo_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 8
    assert "<th>r / ceiling</th>" in html
    assert "http://" not in html and "https://" not in html


def test_demo_recovers_every_planted_layer(demo_run):
    """Best layer (chosen on training folds) equals the planted one; trained beats random."""
    from brainhead.report import recovery_table

    best = pd.read_csv(demo_run / "align" / "best_layers.tsv", sep="\t", dtype={"subject": str})
    truth = json.loads((demo_run / "truth.json").read_text())
    rec = recovery_table(best, truth)
    expected = sum(len(s["regions"]) for s in truth["subjects"].values())
    assert len(rec) == expected == 19
    failures = rec[~rec["recovered"] | ~rec["beats_random"]]
    assert failures.empty, failures.to_string()


def test_demo_rerun_is_a_no_op_and_outputs_are_reproducible(demo_run, tmp_path):
    work = demo_run.parent.parent
    proc = _snakemake(work, "-n", "--cores", "2")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr
