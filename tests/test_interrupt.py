"""A run killed with SIGKILL recovers as the README says, to the outputs of an unbroken run.

The reduced demo (tests/_mini_study.py: every stage, 3 subjects) is started with
`snakemake --cores 2` and its whole process group is killed with SIGKILL (as when the
machine or the OOM killer stops everything) twice: while `simulate` writes the BIDS
dataset, and again once alignment jobs have started. After each kill the next
`snakemake` refuses with a lock error; the README's recovery, `snakemake --unlock` and
the same command again, relies on profiles/default (read by default) for
`rerun-incomplete`. The last run's outputs must equal those of an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from _mini_study import ROOT, copy_workflow, reference_run, snakemake, write_mini_study

pytestmark = pytest.mark.slow


def _start(work: Path, cfg: str) -> subprocess.Popen:
    env = {**os.environ, "BRAINHEAD_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2",
                             "--configfile", cfg], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    """SIGKILL the run's whole process group as soon as ``ready()`` holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def _assert_same_outputs(ours: Path, ref: Path) -> None:
    tables = sorted(p.relative_to(ref) for p in ref.rglob("*.tsv")
                    if "benchmarks" not in p.parts)
    assert len(tables) >= 8, tables
    for rel in tables:
        a = pd.read_csv(ours / rel, sep="\t", dtype=str)
        b = pd.read_csv(ref / rel, sep="\t", dtype=str)
        pd.testing.assert_frame_equal(a, b, obj=str(rel))
    arrays = sorted(p.relative_to(ref) for p in ref.rglob("*.h5"))
    assert any(p.name == "responses.h5" for p in arrays), arrays
    for rel in arrays:
        a, b = _h5_arrays(ours / rel), _h5_arrays(ref / rel)
        assert a.keys() == b.keys(), rel
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{rel}:{key}")
    assert (ours / "report.html").is_file()


def test_sigkill_twice_then_documented_recovery(tmp_path_factory):
    ref = reference_run(tmp_path_factory)
    work = copy_workflow(tmp_path_factory.mktemp("interrupted"))
    shutil.copytree(ROOT / "profiles", work / "profiles")
    cfg = write_mini_study(work)
    results = work / "results" / "mini"

    # 1. killed while simulate writes the BIDS dataset
    run = _start(work, cfg)
    # (simulate writes bids/ into .bids.tmp/ and renames it into place at the end)
    _kill_when(run, lambda: any((results / ".bids.tmp").glob("sub-*/*/*")))
    assert not (results / "truth.json").exists()

    # the next run refuses: the killed run's lock is still there
    refused = snakemake(work, "--cores", "2", "--configfile", cfg)
    assert refused.returncode != 0
    assert "unlock" in (refused.stdout + refused.stderr).lower()

    # the README's recovery: --unlock, then the same command ...
    unlock = snakemake(work, "--unlock", "--configfile", cfg)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    # 2. ... killed again once alignment has started
    run = _start(work, cfg)
    _kill_when(run, lambda: any((work / "logs" / "mini" / "align").glob("sub-*.log")))
    assert not (results / "report.html").exists()

    unlock = snakemake(work, "--unlock", "--configfile", cfg)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    final = snakemake(work, "--cores", "2", "--configfile", cfg)
    assert final.returncode == 0, final.stderr[-4000:]
    _assert_same_outputs(results, ref)
