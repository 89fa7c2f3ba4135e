"""Time the alignment of one subject: batched permutation/bootstrap nulls against the loops.

Usage::

    python benchmarks/align_stats.py [--sizes demo,large] [--resamples 200,1000,5000]
                                     [--baseline REV] [--repeats N]
    python benchmarks/align_stats.py --demo-stage RESULTS_DIR [--study STUDY_YAML]
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

``--demo-stage RESULTS_DIR`` times the demo's align stage instead: ``RESULTS_DIR`` is a
finished demo results folder (``results/demo`` of a ``snakemake`` run, read only), with
``sub-*/responses.h5`` and ``features/*.h5``; only these are read, so the folder of a
run that stopped after them will do (in a copy of the workflow, e.g. ``git archive HEAD
Snakefile workflows data_specs`` unpacked in a temporary folder: ``snakemake
results/demo/sub-e01/responses.h5 ... results/demo/features/minilm.h5 --cores 2``).
For every subject and model it calls :func:`brainhead.align.scores.align_subject`
(the function of the ``align`` rule, on the view that ``align.view`` names for the
subject's modality: ``stimulus`` for every modality in the demo) with the study's
``align`` settings and seed (``--study``, the demo's by default), writing into a
temporary folder, once with the baseline's code and once with this checkout's,
alternating, each in its own process with one thread. It prints the time of each job,
the sums over jobs (the stage as ``results/demo/benchmarks/align/`` sums it, less
Snakemake's own overhead) and their ratio (goal: >= 3), and how far the checkout's
tables are from the baseline's (largest absolute difference of any score, p-value and
interval bound of ``align.tsv``; whether ``best.tsv`` names the same best layers). Time
covers ``align_subject`` only, not the imports: Snakemake runs the rule's ``run:`` block
inside its own process, where the libraries are already imported.
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


def run_stage_job(responses: str, features: str, model: str, params_json: str,
                  seed: int, out_dir: str) -> None:
    """One align job of a demo results folder in this process; time as JSON."""
    os.environ["BRAINHEAD_NO_PROGRESS"] = "1"
    import torch
    from threadpoolctl import threadpool_limits

    from brainhead.align import scores

    torch.set_num_threads(1)
    out = Path(out_dir)
    params = json.loads(params_json)
    if params.get("ceiling") == "auto":
        try:
            scores.noise_ceiling(np.zeros((4, 1)), np.array(["a", "a", "b", "b"]), "auto")
        except ValueError:
            # Code from before ``ceiling: auto`` (the baseline): its default, split_half,
            # which is what "auto" picks wherever three stimuli or more repeat (the demo).
            params["ceiling"] = "split_half"
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        summary = scores.align_subject(responses, features, model, params,
                                       out / "align.h5", out / "align.tsv",
                                       out / "best.tsv", seed=seed)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rows": len(summary),
                      "peak_mb": _status_bytes("VmHWM") / 2**20,
                      "module": str(Path(scores.__file__).parents[2])}))


def _subprocess(code: Path, call: str, what: str) -> dict:
    """``align_stats.<call>`` in a fresh process importing ``brainhead`` from ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              f"import align_stats; align_stats.{call}")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{code} failed on {what}:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result["module"]).resolve() != code.resolve():
        raise RuntimeError(f"imported brainhead from {result['module']}, not from {code}")
    return result


def measure(size: str, n_resamples: int, code: Path) -> dict:
    """:func:`run_one` in a fresh process that imports ``brainhead`` from ``code``."""
    return _subprocess(code, f"run_one({size!r}, {n_resamples})",
                       f"{size} at {n_resamples}")


def compare_outputs(old: Path, new: Path) -> dict:
    """Largest differences between two align jobs' summary and best-layer tables."""
    import pandas as pd

    keys = ["region", "control", "layer", "metric"]
    a = pd.read_csv(old / "align.tsv", sep="\t").set_index(keys).sort_index()
    b = pd.read_csv(new / "align.tsv", sep="\t").set_index(keys).sort_index()
    if not a.index.equals(b.index):
        return {"rows_differ": True}
    out = {"rows_differ": False}
    for col in ("score", "p", "ci_low", "ci_high"):
        diff = (a[col] - b[col]).abs()
        same_nan = a[col].isna() == b[col].isna()
        out[col] = float(diff.max()) if same_nan.all() else float("inf")
    best_a = pd.read_csv(old / "best.tsv", sep="\t").set_index("region").sort_index()
    best_b = pd.read_csv(new / "best.tsv", sep="\t").set_index("region").sort_index()
    out["best_layers_same"] = bool(best_a["best_layer"].equals(best_b["best_layer"]))
    return out


def demo_stage(results: Path, study: Path, baseline: Path, label: str, repeats: int) -> int:
    """Time every align job of a finished demo results folder, baseline against checkout."""
    from brainhead.specs import load_study

    spec = load_study(study, design=False)
    params = json.dumps(spec.config["align"])
    responses = sorted(results.glob("sub-*/responses.h5"))
    features = sorted((results / "features").glob("*.h5"))
    if not responses or not features:
        raise SystemExit(f"{results}: no sub-*/responses.h5 or no features/*.h5; is it a "
                         "finished demo results folder?")
    codes = {"baseline": baseline, "checkout": ROOT}
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    diffs: dict[tuple[str, str], dict] = {}
    print(f"== demo align stage: {results} ({len(responses)} subjects x {len(features)} "
          f"models), settings and seed {spec.seed} of {study.name}, one thread, best of "
          f"{repeats}", flush=True)
    with tempfile.TemporaryDirectory(prefix="align-stage-") as tmp:
        for resp in responses:
            subject = resp.parent.name
            for feat in features:
                job = times.setdefault((subject, feat.stem), {k: [] for k in codes})
                for _ in range(repeats):
                    for name, code in codes.items():
                        out = Path(tmp) / f"{name}-{subject}-{feat.stem}"
                        out.mkdir(exist_ok=True)
                        call = (f"run_stage_job({str(resp)!r}, {str(feat)!r}, {feat.stem!r}, "
                                f"{params!r}, {spec.seed}, {str(out)!r})")
                        result = _subprocess(code, call, f"{subject} {feat.stem}")
                        job[name].append(result["seconds"])
                        print(f"  {name:<9}{subject} {feat.stem}: {result['seconds']:.2f} s",
                              flush=True)
                diff = compare_outputs(Path(tmp) / f"baseline-{subject}-{feat.stem}",
                                       Path(tmp) / f"checkout-{subject}-{feat.stem}")
                diffs[(subject, feat.stem)] = diff
    print(f"{'job':<24}{'baseline (s)':>14}{'checkout (s)':>14}{'ratio':>8}"
          f"{'max |d score|':>15}{'max |d p|':>11}{'max |d ci|':>12}{'best layers':>13}")
    sums = {k: 0.0 for k in codes}
    for (subject, model), job in times.items():
        best = {k: min(v) for k, v in job.items()}
        for k in codes:
            sums[k] += best[k]
        d = diffs[(subject, model)]
        if d["rows_differ"]:
            same = f"{'rows differ':>51}"
        else:
            same = (f"{d['score']:>15.2g}{d['p']:>11.2g}{max(d['ci_low'], d['ci_high']):>12.2g}"
                    f"{'same' if d['best_layers_same'] else 'DIFFER':>13}")
        print(f"{subject + ' ' + model:<24}{best['baseline']:>14.2f}{best['checkout']:>14.2f}"
              f"{best['baseline'] / best['checkout']:>8.2f}{same}")
    print(f"{'sum':<24}{sums['baseline']:>14.2f}{sums['checkout']:>14.2f}"
          f"{sums['baseline'] / sums['checkout']:>8.2f}")
    print(f"align stage speed-up over baseline {label}: "
          f"{sums['baseline'] / sums['checkout']:.2f}x (goal >= 3)")
    return 0


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
    parser.add_argument("--demo-stage", type=Path, default=None, metavar="RESULTS_DIR",
                        help="time the align jobs of this finished demo results folder "
                             "instead of synthetic subjects")
    parser.add_argument("--study", type=Path,
                        default=ROOT / "data_specs" / "demo" / "study.yaml",
                        help="study file whose align settings and seed --demo-stage uses")
    args = parser.parse_args(argv)
    if args.demo_stage is not None:
        with tempfile.TemporaryDirectory(prefix="align-stats-") as tmp:
            return demo_stage(args.demo_stage, args.study, extract(args.baseline, Path(tmp)),
                              args.baseline, args.repeats)
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
            nulls = best[200]["seconds"] - fixed
            print(f"nulls and intervals at 200: baseline {base['seconds'] - fixed:.2f} s, "
                  f"batched {nulls:.2f} s " + (
                      f"({(base['seconds'] - fixed) / nulls:.1f}x)" if nulls > 0 else
                      "(not measurable: the run without resamples took longer, load)"))
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
