"""Shared fixtures: paths of the repository, the demo study and the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _mini_study import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data_specs" / "demo"
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("BRAINHEAD_NO_PROGRESS", "1")


@pytest.fixture
def one_torch_thread():
    """One torch thread while a training test runs: many small steps on a 2-core
    machine that also runs subprocesses, where two threads wait on each other
    (measured: 13x slower per step, benchmarks/train_throughput.py --threads)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="../shared/data (real recordings) is absent"
)


@pytest.fixture(scope="session")
def demo_study():
    """The demo study spec."""
    from brainhead.specs import load_study

    return load_study(DEMO)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A reduced copy of the demo study, simulated: 48 stimuli, 1 subject per modality.

    Returns the loaded study and its results folder (with stimuli.tsv, bids/, truth.json).
    """
    import shutil

    import yaml

    from brainhead.simulate import simulate_study
    from brainhead.specs import load_study

    root = tmp_path_factory.mktemp("small_demo")
    study_dir = root / "data_specs" / "small"
    shutil.copytree(DEMO, study_dir)
    cfg = yaml.safe_load((study_dir / "study.yaml").read_text())
    cfg["name"] = "small"
    cfg["simulate"]["n_stimuli"] = 48
    # each sentence once, in 4 runs (the demo shows each twice in 2 x 2 runs): runs that
    # share no stimulus are what the preprocessing tests and time-series scoring expect
    cfg["simulate"]["n_runs"] = 4
    cfg["simulate"]["n_repeats"] = 1
    (study_dir / "study.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for sub in ("e02", "e03", "f02", "f03", "s02"):
        (study_dir / "subjects" / f"sub-{sub}.yaml").unlink()
    study = load_study(study_dir)
    results = root / "results" / "small"
    simulate_study(study, results)
    return study, results


@pytest.fixture(scope="session")
def demo_results(tmp_path_factory):
    """The full demo (`snakemake --cores 2`, about 4 minutes), run once per session.

    Returns results/demo of a copy of the workflow; shared by the workflow tests and the
    headless-browser test of the report. BRAINHEAD_DEMO_RESULTS=<results/demo of a
    finished run> reuses that run instead (for working on the report tests only).
    """
    import subprocess
    import sys

    reuse = os.environ.get("BRAINHEAD_DEMO_RESULTS")
    if reuse:
        return Path(reuse)

    work = copy_workflow(tmp_path_factory.mktemp("demo"))
    env = {**os.environ, "BRAINHEAD_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "results" / "demo"
