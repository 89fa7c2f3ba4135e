"""The slurm profiles, on a real SLURM.

The test marked ``slurm`` submits a reduced demo (tests/_mini_study.py: every stage, 3
subjects, CPU training) through sbatch with workflows/profiles/slurm-noaccounting and
compares its summary.tsv with a local run of the same study. It uses a SLURM that already
answers (``sinfo``; .ci/run starts ../shared/tools/local-slurm.sh, root, no accounting,
before the suite); where none does and BRAINHEAD_START_SLURM=1, it starts that one itself
and stops it when the session ends. Otherwise it skips, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from _mini_study import ROOT, copy_workflow, reference_run, snakemake, write_mini_study

PROFILES = ROOT / "workflows" / "profiles"
LOCAL_SLURM = ROOT.parent / "shared" / "tools" / "local-slurm.sh"


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                          timeout=30)
    return proc.returncode == 0 and any(s.startswith(("idle", "mix", "alloc"))
                                        for s in proc.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster():
    """A SLURM controller that answers; started here (and stopped after) only if allowed.

    Session-scoped: a SLURM started here is stopped when the whole test session ends,
    because the slurm plugin, which Snakemake loads in every process, waits ~10 s on
    `scontrol` where SLURM's client tools are installed but no controller answers; every
    later workflow test would pay that per job.
    """
    if _slurm_answers():
        yield "running"
        return
    if os.environ.get("BRAINHEAD_START_SLURM") != "1":
        pytest.skip("no SLURM answers (sinfo); set BRAINHEAD_START_SLURM=1 to let the test "
                    "start ../shared/tools/local-slurm.sh (needs root)")
    if not LOCAL_SLURM.is_file():
        pytest.skip(f"no SLURM answers and {LOCAL_SLURM.relative_to(ROOT.parent)} is absent")
    if os.geteuid() != 0:
        pytest.skip("no SLURM answers and starting the local one needs root")
    proc = subprocess.run(["bash", str(LOCAL_SLURM), "start"], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "ACCOUNTING": "none"})
    if proc.returncode != 0 or not _slurm_answers():
        subprocess.run(["bash", str(LOCAL_SLURM), "stop"], capture_output=True, timeout=120)
        pytest.skip(f"local-slurm.sh could not start SLURM: {(proc.stderr or proc.stdout)[-500:]}")
    try:
        yield "started"
    finally:
        subprocess.run(["bash", str(LOCAL_SLURM), "stop"], capture_output=True, timeout=120)


@pytest.mark.parametrize("name", ["slurm", "slurm-noaccounting"])
def test_profiles_leave_gpus_to_the_rules(name):
    """No --gres/--gpus through slurm_extra (the plugin refuses it) and no placeholder
    account or partition that a real cluster would reject."""
    config = yaml.safe_load((PROFILES / name / "config.yaml").read_text())
    assert config["executor"] == "slurm"
    text = yaml.safe_dump(config)
    for forbidden in ("slurm_extra", "gres", "gpus", "your-account", "your-partition"):
        assert forbidden not in text, forbidden
    if name == "slurm-noaccounting":
        assert config["slurm-status-command"] == "squeue"
    else:
        assert "slurm-status-command" not in config  # sacct, the plugin's default


def test_gpu_is_requested_by_training_rules_only(tmp_path):
    """With train.device: cuda, only training jobs carry gpu=1 (features none)."""
    work = copy_workflow(tmp_path)
    study = work / "data_specs" / "demo" / "study.yaml"
    spec = yaml.safe_load(study.read_text())
    spec["train"]["device"] = "cuda"
    study.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = snakemake(work, "-n", "--cores", "2", "--forceall")
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_rule: dict[str, set[bool]] = {}
    rule = None
    for line in (proc.stdout + proc.stderr).splitlines():
        match = re.match(r"^(?:local)?rule (\w+):", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            by_rule.setdefault(rule, set()).add("gpu=1" in line.replace(" ", ""))
    assert by_rule.get("train_voxel_xattn") == {True}, by_rule
    assert by_rule.get("features") == {False}, by_rule
    gpu_rules = {rule for rule, gpu in by_rule.items() if True in gpu}
    assert gpu_rules and all(rule.startswith("train_") for rule in gpu_rules), gpu_rules


@pytest.mark.slurm
@pytest.mark.slow
def test_reduced_demo_through_sbatch_matches_local(slurm_cluster, tmp_path_factory):
    local = reference_run(tmp_path_factory)
    work = copy_workflow(tmp_path_factory.mktemp("slurm"))
    cfg = write_mini_study(work)
    proc = snakemake(work, "--profile", "workflows/profiles/slurm-noaccounting",
                     # the README's recommended form (the local reference run reads
                     # the same study through --configfile: both must agree)
                     "--config", f"study={cfg}", "--latency-wait", "10",
                     "--slurm-init-seconds-before-status-checks", "5",
                     "--seconds-between-status-checks", "5", timeout=1500)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    log = proc.stdout + proc.stderr
    # jobs really went through sbatch (the plugin logs each SLURM job id)
    assert "SLURM jobid" in log or "SLURM run ID" in log, log[-3000:]
    results = work / "results" / "mini"
    assert (results / "report.html").is_file()
    ours = pd.read_csv(results / "align" / "summary.tsv", sep="\t", dtype={"subject": str})
    theirs = pd.read_csv(local / "align" / "summary.tsv", sep="\t", dtype={"subject": str})
    assert len(ours) > 0
    pd.testing.assert_frame_equal(ours, theirs)
    trained = results / "models" / "voxel_xattn" / "fmri" / "scores.tsv"
    assert trained.is_file()
