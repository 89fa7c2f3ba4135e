"""Time the alignment of one subject: batched permutation/bootstrap nulls against the loops.

Usage::

    python benchmarks/align_stats.py [--sizes demo,large] [--resamples 200,1000,5000]
                                     [--baseline REV] [--repeats N]

Scores one synthetic subject with :func:`brainhead.align.scores.score_responses`, the
whole align job of the ``stimulus`` view (ridge per layer and fold, r with permutation
p-values and bootstrap intervals, noise ceiling, RSA and crossnobis RSA, CKA, for 7
layers of a model and of its random control), at each number of permutations and
bootstraps (the same number for both), with the code of this checkout. It also scores
the same subject at 200 resamples with the code of ``--baseline`` (by default the last
commit whose nulls looped over draws in Python), extracted with ``git archive`` into a
temporary folder and imported from there. Then it prints, per subject size:

- the speed-up of this checkout over the baseline at 200 resamples (goal: >= 3);
- the time at 1,000 resamples over the baseline's time at 200 (goal: <= 1);
- the peak memory at each number of resamples over the baseline's at 200 (goal: <= 2);
- the part of each time spent on nulls and intervals: the time minus that of the same
  run with no resamples (ridge, ceilings, crossnobis RDMs and observed scores only,
  which this checkout can run and the baseline could not), the checkout's for the
  baseline too (which also refitted a ridge model per fold for layer selection, so
  its share is slightly overstated).

Subjects (``--sizes``): ``demo`` is the size of the demo's fMRI subject ``sub-f02``
(160 stimuli each shown twice in different runs, 1,084 targets in 3 regions, 384
features per layer); ``large`` has 480 stimuli and 10,000 targets. Responses follow a
planted layer plus noise, so ridge, alphas and layer choices do real work.

Every measurement runs in its own process (``python -c`` of this file's
:func:`run_one`) with one thread for torch and BLAS, as the align rule runs
(``threads: 1``); runs alternate between baseline and checkout so that load from other
processes on the machine hits both. Time covers ``score_responses`` only. Peak memory
is the process's ``VmHWM`` (resident high-water mark, Linux), which includes the
imported libraries; the extra peak over the resident memory just before scoring is
printed too. It prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The last commit whose permutation and bootstrap nulls looped over draws in Python.
DEFAULT_BASELINE = "62d2228"
SIZES = {
    "demo": {"n_stimuli": 160, "n_targets": 1084, "dim": 384},
    "large": {"n_stimuli": 480, "n_targets": 10_000, "dim": 384},
}
N_LAYERS, N_RUNS, N_REPEATS, PLANTED_LAYER = 7, 2, 2, 3
#: The demo study's ``align`` section, with the resamples set per run.
ALIGN_PARAMS = {"alphas_log10": [-1, 6, 15], "n_inner_splits": 3, "layer_selection": "loo",
                "view": "stimulus", "ceiling": "split_half", "rsa_distance": "correlation",
                "ci": 0.95, "min_ceiling": 0.3}


def make_subject(n_stimuli: int, n_targets: int, dim: int, seed: int = 0) -> dict:
    """A subject whose responses follow one layer of a model, with a random control.

    Layers share a latent stimulus space (32 dimensions) mixed differently per layer;
    three regions of targets read the planted layer with a different weight each plus
    Gaussian noise (an SNR around 1); every stimulus is shown ``N_REPEATS`` times, in
    different runs, with independent noise.
    """
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_stimuli, 32))
    trained = np.stack([latent @ rng.standard_normal((32, dim))
                        + rng.standard_normal((n_stimuli, dim)) for _ in range(N_LAYERS)])
    random = rng.standard_normal((N_LAYERS, n_stimuli, dim))
    signal = trained[PLANTED_LAYER] @ rng.standard_normal((dim, n_targets)) / np.sqrt(dim)
    regions = np.array(["posterior", "middle", "anterior"])[
        np.arange(n_targets) * 3 // n_targets]
    order = np.concatenate([rng.permutation(n_stimuli) for _ in range(N_REPEATS)])
    Y = signal[order] + signal.std() * rng.standard_normal((len(order), n_targets))
    runs = np.repeat(np.arange(N_RUNS * N_REPEATS), n_stimuli // N_RUNS)
    stim = np.array([f"s{i:04d}" for i in range(n_stimuli)])
    return {"Y": Y.astype(np.float32), "stim_id": stim[order], "group": runs,
            "regions": regions,
            "features": {"trained": trained.astype(np.float32),
                         "random": random.astype(np.float32)},
            "feature_rows": {s: i for i, s in enumerate(stim)}}


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_one(size: str, n_resamples: int) -> None:
    """Score one subject in this process and print time and memory as JSON."""
    os.environ["BRAINHEAD_NO_PROGRESS"] = "1"
    from brainhead._parallel import limit_threads
    from brainhead.align import scores

    data = make_subject(**SIZES[size])
    params = {**ALIGN_PARAMS, "n_permutations": n_resamples, "n_bootstraps": n_resamples}
    with limit_threads(1):
        before = _status_bytes("VmRSS")
        start = time.perf_counter()
        rows, _, _ = scores.score_responses(
            data["Y"], data["stim_id"], data["group"], data["regions"], data["features"],
            data["feature_rows"], params, seed=0, label=size)
        seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_mb": peak / 2**20,
                      "extra_mb": (peak - before) / 2**20, "rows": len(rows),
                      "module": str(Path(scores.__file__).parents[2])}))


def measure(size: str, n_resamples: int, code: Path) -> dict:
    """:func:`run_one` in a fresh process that imports ``brainhead`` from ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              f"import align_stats; align_stats.run_one({size!r}, {n_resamples})")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{code} failed on {size} at {n_resamples}:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result["module"]).resolve() != code.resolve():
        raise RuntimeError(f"imported brainhead from {result['module']}, not from {code}")
    return result


def _report(code: str, n_resamples: int, result: dict) -> dict:
    print(f"  {code} at {n_resamples}: {result['seconds']:.2f} s, peak "
          f"{result['peak_mb']:.0f} MB", flush=True)
    return result


def extract(rev: str, dest: Path) -> Path:
    """The ``brainhead`` and ``encoders`` packages of commit ``rev``, unpacked in ``dest``."""
    archive = dest / "baseline.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), rev, "brainhead",
                    "encoders"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(dest / "baseline", filter="data")
        else:
            tar.extractall(dest / "baseline")
    return dest / "baseline"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="demo,large",
                        help=f"comma-separated subject sizes among {sorted(SIZES)}")
    parser.add_argument("--resamples", default="200,1000,5000",
                        help="comma-separated numbers of permutations (= bootstraps)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help="git revision whose code is timed at 200 resamples")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each measurement; the fastest is kept")
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose among {sorted(SIZES)}")
    counts = sorted({int(c) for c in args.resamples.split(",")} | {0, 200})

    with tempfile.TemporaryDirectory(prefix="align-stats-") as tmp:
        baseline = extract(args.baseline, Path(tmp))
        for size in sizes:
            print(f"\n== {size}: {SIZES[size]}, {N_LAYERS} layers x 2 controls, one thread",
                  flush=True)
            old, new = [], {c: [] for c in counts}
            for _ in range(args.repeats):
                old.append(_report(f"baseline {args.baseline}", 200,
                                   measure(size, 200, baseline)))
                for c in counts:
                    new[c].append(_report("batched (checkout)", c, measure(size, c, ROOT)))
            base = min(old, key=lambda r: r["seconds"])
            print(f"{'code':<22}{'resamples':>10}{'time (s)':>10}{'peak (MB)':>11}"
                  f"{'extra (MB)':>12}{'time / base':>13}{'peak / base':>13}")
            print(f"{'baseline ' + args.baseline:<22}{200:>10}{base['seconds']:>10.2f}"
                  f"{base['peak_mb']:>11.0f}{base['extra_mb']:>12.0f}{1:>13.2f}{1:>13.2f}")
            best = {c: min(runs, key=lambda r: r["seconds"]) for c, runs in new.items()}
            for c, r in best.items():
                print(f"{'batched (checkout)':<22}{c:>10}{r['seconds']:>10.2f}"
                      f"{r['peak_mb']:>11.0f}{r['extra_mb']:>12.0f}"
                      f"{r['seconds'] / base['seconds']:>13.2f}"
                      f"{r['peak_mb'] / base['peak_mb']:>13.2f}")
            fixed = best[0]["seconds"]
            print(f"without resamples (ridge, ceilings, crossnobis, observed scores): "
                  f"{fixed:.2f} s")
            print(f"nulls and intervals at 200: baseline {base['seconds'] - fixed:.2f} s, "
                  f"batched {best[200]['seconds'] - fixed:.2f} s "
                  f"({(base['seconds'] - fixed) / max(best[200]['seconds'] - fixed, 1e-9):.1f}x)")
            print(f"speed-up at 200: {base['seconds'] / best[200]['seconds']:.2f}x (goal >= 3)")
            if 1000 in best:
                print(f"time at 1000 / baseline at 200: "
                      f"{best[1000]['seconds'] / base['seconds']:.2f} (goal <= 1)")
            worst = max(r["peak_mb"] for c, r in best.items() if c)
            print(f"largest peak memory / baseline at 200: {worst / base['peak_mb']:.2f} "
                  f"(goal <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
