"""Run the demo study end to end and print wall time and peak memory.

    python benchmarks/demo_run.py [--cores 2] [--workdir DIR]

Runs `snakemake --cores N` from a fresh copy of the workflow (so nothing cached is
reused), measures the wall time of the whole DAG and the peak resident memory of the
largest process in the run (Snakemake and every job it spawned), then checks the
planted-layer recovery in the summary. Targets: the whole demo, training included,
within 4 minutes wall on a 2-core machine (the spine issue's first target was 5 minutes,
before the model families), and <= 4 GB peak. It prints; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
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


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, of every process /proc shows now."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:  # the process ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _tree_memory(root: int) -> tuple[int, int, int]:
    """(RSS sum, PSS sum, process count) in bytes of ``root`` and all its descendants."""
    tree = _children()
    todo, pids = [root], []
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(tree.get(pid, []))
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:  # ended meanwhile, or a kernel without smaps_rollup
            continue
    return rss, pss, len(pids)


class TreeMemory:
    """Peak memory of a process tree, sampled every ``interval`` s in a thread."""

    def __init__(self, root: int, interval: float = 0.1):
        self.root, self.interval = root, interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss, n = _tree_memory(self.root)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, n)
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


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
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=err, text=True,
                                 env={**os.environ, "BRAINHEAD_NO_PROGRESS": "1"})
        with TreeMemory(child.pid) as tree:
            returncode = child.wait()
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if returncode != 0:
        print(stderr[-4000:])
        print(f"snakemake failed with exit code {returncode}")
        return 1
    best = pd.read_csv(work / "results/demo/align/best_layers.tsv", sep="\t",
                       dtype={"subject": str})
    truth = json.loads((work / "results/demo/truth.json").read_text())
    sys.path.insert(0, str(ROOT))
    from brainhead.report import recovery_table

    rec = recovery_table(best, truth)
    print(rec.to_string(index=False))
    print(f"\nwall time: {wall:.1f} s (target <= 240 s; ratio {wall / 240:.2f})")
    mb = 1024 * 1024
    print(f"peak memory of the whole process tree (up to {tree.peak_procs} processes): "
          f"{tree.peak_pss / mb:.0f} MB PSS, {tree.peak_rss / mb:.0f} MB summed RSS "
          f"(target <= 4096 MB; ratio {tree.peak_pss / mb / 4096:.2f} on PSS)")
    print(f"peak memory of the largest single process: {peak_kb / 1024:.0f} MB")
    print(f"planted layer recovered: {int(rec['recovered'].sum())}/{len(rec)} regions; "
          f"trained beats random at the best layer: {int(rec['beats_random'].sum())}/{len(rec)}")
    print(f"outputs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
