"""A reduced demo study for workflow tests that run the DAG more than once.

The demo's own spec with 3 subjects (one EEG, two fMRI so the voxel encoder still pools
subjects), 60 sentences, 20 permutations and bootstraps, and CPU training for one short epoch per
run: every stage of the demo runs, in about two minutes on 2 cores (under load).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = ("e01", "f01", "f02")


def copy_workflow(dest: Path) -> Path:
    """The repository's Snakefile, workflows/ and data_specs/ copied into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflows", "data_specs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    return dest


def write_mini_study(work: Path) -> str:
    """Write data_specs/mini/ into a copied workflow; returns its study.yaml, relative."""
    demo = work / "data_specs" / "demo"
    mini = work / "data_specs" / "mini"
    (mini / "subjects").mkdir(parents=True)
    spec = yaml.safe_load((demo / "study.yaml").read_text())
    spec["name"] = "mini"
    spec["simulate"]["n_stimuli"] = 60
    spec["simulate"]["planted_layers"] = {
        k: v for k, v in spec["simulate"]["planted_layers"].items() if k in ("eeg", "fmri")}
    spec["simulate"]["snr"] = {k: v for k, v in spec["simulate"]["snr"].items()
                               if k in ("eeg", "fmri")}
    spec["align"]["n_permutations"] = 20
    spec["align"]["n_bootstraps"] = 20
    spec["train"] = {"families": ["voxel_xattn"], "device": "cpu", "max_epochs": 1,
                     "min_steps_per_epoch": 2,
                     "voxel_xattn": {"modalities": ["fmri"], "transfer_fractions": [1.0]}}
    (mini / "study.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for subject in SUBJECTS:
        shutil.copy2(demo / "subjects" / f"sub-{subject}.yaml", mini / "subjects")
    return "data_specs/mini/study.yaml"


def snakemake(cwd: Path, *args: str, timeout: int = 900,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m snakemake ARGS`` in ``cwd``; output captured."""
    env = {**os.environ, "BRAINHEAD_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


_REFERENCE: dict[str, Path] = {}


def reference_run(tmp_path_factory) -> Path:
    """results/mini of one uninterrupted local ``--cores 2`` run, made once per session."""
    if "results" not in _REFERENCE:
        work = copy_workflow(tmp_path_factory.mktemp("mini-reference"))
        cfg = write_mini_study(work)
        proc = snakemake(work, "--cores", "2", "--configfile", cfg)
        assert proc.returncode == 0, proc.stderr[-4000:]
        _REFERENCE["results"] = work / "results" / "mini"
    return _REFERENCE["results"]
