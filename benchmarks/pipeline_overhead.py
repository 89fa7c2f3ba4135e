"""Per-job start-up overhead of the Snakemake DAG: preprocessing of N simulated EEG subjects.

    python benchmarks/pipeline_overhead.py [--subjects 20] [--cores 2] [--workdir DIR]

Builds a study of N simulated EEG subjects (the demo's settings, EEG only, no training),
simulates their recordings first (not timed), then times one
``snakemake --cores C`` run of their N preprocessing jobs. Each job's own compute time is
what its Snakemake benchmark file records (the rule's ``run:`` block, without the job
process's start-up: interpreter, Snakemake, parsing the workflow, imports). The overhead
ratio is

    wall time / (sum of the jobs' own compute times / cores)

1.0 would mean no overhead at all. Goal: <= 1.3 for 20 subjects on 2 cores. Because a
loaded machine stretches wall times, it also prints CPU times, which it does not: the
run's (Snakemake and every job process) against the same preprocessing called in this
one process with brainhead imported once (the work without any start-up or import). It
prints; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY = "overhead"


def make_workdir(work: Path, n_subjects: int) -> list[str]:
    """Copy the workflow into ``work`` and write the N-subject EEG study; its subjects."""
    for name in ("Snakefile", "workflows", "data_specs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    spec = yaml.safe_load((ROOT / "data_specs" / "demo" / "study.yaml").read_text())
    spec["name"] = STUDY
    spec["simulate"]["planted_layers"] = {"eeg": spec["simulate"]["planted_layers"]["eeg"]}
    spec["simulate"]["snr"] = {"eeg": spec["simulate"]["snr"]["eeg"]}
    spec["train"] = {"families": []}
    study_dir = work / "data_specs" / STUDY
    (study_dir / "subjects").mkdir(parents=True)
    (study_dir / "study.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    subjects = [f"e{i:02d}" for i in range(1, n_subjects + 1)]
    for subject in subjects:
        (study_dir / "subjects" / f"sub-{subject}.yaml").write_text(yaml.safe_dump(
            {"subject": subject, "modality": "eeg", "source": "simulated",
             "simulate": {"n_channels": 32}}, sort_keys=False))
    return subjects


def _children_cpu() -> float:
    """CPU seconds (user + system) of every finished descendant of this process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snakemake(work: Path, cores: int, *targets: str) -> tuple[float, float]:
    """Run ``snakemake --cores C TARGETS`` in ``work``; its wall and CPU time in seconds
    (CPU: Snakemake and every process it started, which it waits for)."""
    env = {**os.environ, "BRAINHEAD_NO_PROGRESS": "1"}
    # targets first: --configfile takes every word that follows it
    cmd = [sys.executable, "-m", "snakemake", *targets, "--cores", str(cores), "--quiet",
           "rules", "--configfile", f"data_specs/{STUDY}/study.yaml"]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"snakemake failed with exit code {proc.returncode}")
    return wall, cpu


def compute_in_process(work: Path, subjects: list[str]) -> list[float]:
    """CPU seconds of each subject's preprocessing called directly, in this one process.

    brainhead is imported once, before the clock starts: what remains is the work itself,
    without any process start-up or import. The outputs go to a scratch folder.
    """
    os.environ.setdefault("BRAINHEAD_NO_PROGRESS", "1")
    os.environ.setdefault("MNE_LOGGING_LEVEL", "WARNING")
    from brainhead.preprocess import preprocess_subject
    from brainhead.specs import load_study

    cwd = Path.cwd()
    os.chdir(work)
    try:
        study = load_study(Path("data_specs") / STUDY / "study.yaml")
        scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=work))
        cpu = []
        for subject in subjects:
            c0 = time.process_time()
            preprocess_subject(study, subject, f"results/{STUDY}",
                               str(scratch / f"sub-{subject}.h5"))
            cpu.append(time.process_time() - c0)
    finally:
        os.chdir(cwd)
    return cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="brainhead-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    subjects = make_workdir(work, args.subjects)
    results = f"results/{STUDY}"
    simulate, _ = snakemake(work, args.cores, f"{results}/truth.json")
    targets = [f"{results}/sub-{s}/responses.h5" for s in subjects]
    wall, cpu = snakemake(work, args.cores, *targets)
    own = []
    for subject in subjects:
        bench = pd.read_csv(work / results / "benchmarks" / "preprocess" / f"sub-{subject}.tsv",
                            sep="\t")
        own.append(float(bench["s"].iloc[-1]))
    ideal = sum(own) / args.cores
    print(f"{args.subjects} EEG subjects, {args.cores} cores (simulation first: {simulate:.1f} s)")
    print(f"jobs' own compute time: sum {sum(own):.1f} s, per job median "
          f"{sorted(own)[len(own) // 2]:.2f} s, min {min(own):.2f} s, max {max(own):.2f} s")
    print(f"ideal wall time (sum / cores): {ideal:.1f} s")
    print(f"measured wall time: {wall:.1f} s")
    print(f"start-up and scheduling per job: "
          f"{(wall - ideal) * args.cores / len(own):.2f} s of a core")
    print(f"overhead ratio (wall / ideal): {wall / ideal:.2f}  (goal <= 1.3)")
    # On a loaded machine wall times stretch; CPU times do not. The run's CPU time
    # (Snakemake, every job process with its start-up and imports) against the CPU time of
    # the same preprocessing called in one process with brainhead imported once gives the
    # overhead as a machine whose cores stay busy would see it, whatever else runs.
    pure = compute_in_process(work, subjects)
    print(f"CPU time of the run (Snakemake and all job processes): {cpu:.1f} s")
    print(f"CPU time of the same preprocessing in one process, imports excluded: "
          f"{sum(pure):.1f} s (median per subject {sorted(pure)[len(pure) // 2]:.2f} s)")
    print(f"start-up CPU per job (imports, Snakemake, parsing the workflow): "
          f"{(cpu - sum(pure)) / len(pure):.2f} s")
    print(f"CPU overhead ratio (run / work alone): {cpu / sum(pure):.2f}")
    print(f"outputs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
