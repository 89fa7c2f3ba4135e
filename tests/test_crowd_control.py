"""The no-sharing control of the voxel encoder's crowd claims (issue 9).

The demo simulates read-outs that share a 16-dimensional subspace per region across
subjects (``simulate.shared_rank``), and its tests assert that a new subject's targets
learnt on the frozen crowd model beat the same architecture trained on that subject
alone at a quarter of its stimuli, and that joint training beats one model per subject
at full data. Both claims are about shared structure, so they need the control in which
there is none: the same demo with ``shared_rank: 0`` (every target an independent
read-out of its region's layer). There, transfer must not beat training alone, and the
joint model's lead at full data must shrink to a small one (it still pools the noise of
the shared projection's estimate; the demo with sharing leads by 0.028-0.036 per
subject).
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from _mini_study import copy_workflow, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unshared_demo(tmp_path_factory):
    """The demo's fMRI encoder job (simulation, preprocessing, features, training) with
    ``simulate.shared_rank: 0``; about 2 minutes on 2 cores."""
    work = copy_workflow(tmp_path_factory.mktemp("unshared"))
    spec = work / "data_specs" / "demo" / "study.yaml"
    cfg = yaml.safe_load(spec.read_text())
    cfg["simulate"]["shared_rank"] = 0
    spec.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(work, "--cores", "2", "results/demo/models/voxel_xattn/fmri/summary.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "results" / "demo" / "models" / "voxel_xattn" / "fmri"


def _all_regions(folder, name):
    table = pd.read_csv(folder / name, sep="\t", dtype={"subject": str})
    return table[table["region"] == "all"]


def test_transfer_needs_shared_structure(unshared_demo):
    transfer = _all_regions(unshared_demo, "transfer.tsv").pivot(
        index="fraction", columns="method", values="r")
    # with shared structure (the demo) transfer leads at 25% (0.211 vs 0.180); without,
    # the frozen crowd model has nothing to give a new subject
    assert transfer.loc[0.25, "transfer"] <= transfer.loc[0.25, "alone"] + 0.01, transfer


def test_joint_lead_at_full_data_is_small_without_shared_structure(unshared_demo):
    crowd = _all_regions(unshared_demo, "crowd.tsv")
    full = crowd[crowd["fraction"] == 1.0].pivot(index="subject", columns="method",
                                                 values="r")
    gap = full["joint"] - full["per_subject"]
    assert len(gap) == 3 and gap.mean() < 0.02, full.assign(gap=gap)
