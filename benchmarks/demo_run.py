"""Run the demo study end to end and print wall time and peak memory.

    python benchmarks/demo_run.py [--cores 2] [--workdir DIR]

Runs `snakemake --cores N` from a fresh copy of the workflow (so nothing cached is
reused), measures the wall time of the whole DAG and the peak resident memory of the
largest process in the run (Snakemake and every job it spawned), then checks the
planted-layer recovery in the summary. Targets of the spine issue: <= 5 minutes wall
and <= 4 GB peak on a 2-core machine. It prints; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def copy_workflow(dest: Path) -> None:
    """Copy what the DAG needs (no results, no caches) into ``dest``."""
    for name in ("Snakefile", "workflows", "data_specs"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy2(src, dest / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="brainhead-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_workflow(work)
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(args.cores), "--quiet", "rules"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                          env={**__import__("os").environ, "BRAINHEAD_NO_PROGRESS": "1"})
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        print(proc.stderr[-4000:])
        print(f"snakemake failed with exit code {proc.returncode}")
        return 1
    best = pd.read_csv(work / "results/demo/align/best_layers.tsv", sep="\t",
                       dtype={"subject": str})
    truth = json.loads((work / "results/demo/truth.json").read_text())
    sys.path.insert(0, str(ROOT))
    from brainhead.report import recovery_table

    rec = recovery_table(best, truth)
    print(rec.to_string(index=False))
    print(f"\nwall time: {wall:.1f} s (target <= 300 s; ratio {wall / 300:.2f})")
    print(f"peak memory (largest process): {peak_kb / 1024:.0f} MB "
          f"(target <= 4096 MB; ratio {peak_kb / 1024 / 4096:.2f})")
    print(f"planted layer recovered: {int(rec['recovered'].sum())}/{len(rec)} regions; "
          f"trained beats random at the best layer: {int(rec['beats_random'].sum())}/{len(rec)}")
    print(f"outputs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
