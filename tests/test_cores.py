"""`snakemake --cores 2` never runs more than 2 cores' worth of jobs at once.

snakemake 9.10 to 9.15 broke this (their greedy scheduler started every job that waited on
a finished multi-threaded job at once: 4 single-threaded jobs under --cores 2); the pins in
pyproject.toml keep a release that honours it. Each job writes its own start and end time
and its thread count; the test replays them and finds the peak.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SNAKEFILE = '''
import time

def stamp(path, threads, seconds):
    start = time.time()
    time.sleep(seconds)
    Path(path).write_text(f"{start} {time.time()} {threads}\\n")

from pathlib import Path

rule all:
    input: expand("out/one_{i}.txt", i=range(6)), "out/two_b.txt"

rule two_a:
    output: "out/two_a.txt"
    threads: 2
    run: stamp(output[0], threads, 1.0)

rule one:
    input: "out/two_a.txt"
    output: "out/one_{i}.txt"
    threads: 1
    run: stamp(output[0], threads, 1.5)

rule two_b:
    input: "out/two_a.txt"
    output: "out/two_b.txt"
    threads: 2
    run: stamp(output[0], threads, 1.5)
'''


def _peak_threads(intervals: list[tuple[float, float, int]]) -> int:
    """The largest sum of threads of the jobs running at one instant.

    An end at the same instant as a start counts first (the slot was handed over).
    """
    events = sorted([(s, 1, n) for s, _, n in intervals] + [(e, 0, -n) for _, e, n in intervals])
    peak = running = 0
    for _, _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_peak_threads_counts_overlaps():
    assert _peak_threads([(0, 1, 1), (1, 2, 1)]) == 1
    assert _peak_threads([(0, 2, 1), (1, 3, 2)]) == 3
    assert _peak_threads([(0, 3, 1), (0.5, 1, 1), (2, 4, 1)]) == 2


def test_cores_2_runs_at_most_2_threads_at_once(tmp_path: Path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stamps = sorted((tmp_path / "out").glob("*.txt"))
    assert len(stamps) == 8
    intervals = []
    for path in stamps:
        start, end, threads = path.read_text().split()
        intervals.append((float(start), float(end), int(threads)))
    assert _peak_threads(intervals) <= 2, intervals
    # and the 2 cores were used: some single-threaded jobs ran side by side
    ones = [iv for iv in intervals if iv[2] == 1]
    assert _peak_threads(ones) == 2, intervals
