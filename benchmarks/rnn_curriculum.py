"""Single-head vs multi-head curricula of the memory RNN on N-parity and N-DMS.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/rnn_curriculum.py            # the stated budget
    python benchmarks/rnn_curriculum.py --tasks parity --seeds 0 1 --epochs 20

Reproduces, at CPU scale, the comparisons of Khajehabdollahi et al. (ICLR 2024),
"Emergent mechanisms for long timescales depend on training curriculum and affect
performance in memory tasks": a leaky RNN whose units learn their timescale tau
(:class:`encoders.memory_rnn.MemoryRNN`) is trained with each curriculum
(:func:`brainhead.train.memory.run_curriculum`) on the same budget of training steps,
and per (task, curriculum, seed) the script prints

- ``N_reached``: the largest N learnt (validation accuracy of the newest head and mean
  over trained heads >= the threshold, 98% by default) within the budget;
- ``acc_N2_end``: accuracy on N = 2 of the final network (single-head: its one head
  asked N = 2 again, the forgetting check; multi-head: the head of N = 2); chance 0.5;
- ``tau`` of the final network: mean, median, 90th percentile, max; ``tau_slope``: the
  least-squares slope of the stage-wise mean tau against N (does tau grow with N?);
- ``net_ts``: mean network timescale of the units (lag where the autocorrelation of a
  unit's activity on white binary input falls to 1/e), in steps;
- ``mem_span``: population memory, the largest lag k such that a linear read-out of the
  state recovers every white binary input 1..k steps back with >= 90% accuracy
  (:func:`brainhead.train.memory.memory_span`), which single units' autocorrelation
  cannot see when the memory is passed from unit to unit.

Default scale (much smaller than the paper's 500 units and N up to ~100): 64 units,
leaky ReLU, tau initialised at 1.2, batch 64, Adam(W) lr 3e-3 without decay, gradient
norm clipped at 1, sequence lengths N + 1 .. N + 11, 8 validation batches of 64; budget
``--epochs`` x ``--steps-per-epoch`` = 100 x 100 = 10,000 steps per curriculum, one seed;
2 curricula x 2 tasks. Measured: 4.8 min of CPU per seed on one thread (with
``--seeds 0 1``: 9.7 CPU-min, 18 min wall on a shared 2-core machine where it got about
half a core); the time of each run is printed. Run directories go to a temporary
folder (``--out`` to keep them).

Result of ``--seeds 0 1`` (the README discusses it against the paper)::

      task curriculum  seed  N_reached  steps  acc_N2_end  tau_mean  tau_median  tau_q90  tau_max  tau_slope  net_ts  mem_span
    parity     single     0          9  10000       0.555     1.210       1.176    1.389    1.741      0.002   1.121         5
    parity      multi     0         25  10000       1.000     1.049       1.043    1.072    1.167     -0.004   0.660         1
    parity     single     1          9  10000       0.516     1.181       1.148    1.352    1.783     -0.001   1.095         4
    parity      multi     1         24  10000       1.000     1.049       1.047    1.076    1.129     -0.004   0.672         1
       dms     single     0         17  10000       0.479     1.329       1.286    1.489    2.363      0.009   1.652         2
       dms      multi     0         29  10000       1.000     1.067       1.034    1.146    1.593     -0.003   0.685        29
       dms     single     1         19  10000       0.491     1.324       1.287    1.520    2.314      0.008  25.775         2
       dms      multi     1         28  10000       1.000     1.054       1.032    1.131    1.280     -0.004   0.654        29

Per stage (printed below the table): the multi-head DMS networks' memory span grows
with N (between N - 1 and N + 3 at every stage; 29 at N = 29) while their tau stays near
1.07 and their units' timescales below one step; the single-head DMS networks' span
drops to 0-4 after N = 10, while the mean timescale of their units reaches 24-37 steps
at some stages between N = 11 and N = 19 (both seeds); the multi-head parity networks
solve N = 24 and 25 with a span of 1 (parity's memory is not held as linearly readable
inputs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(task: str, kind: str, seed: int, out: Path, args) -> dict:
    from brainhead.train.memory import run_curriculum
    from brainhead.train.trainer import TrainConfig

    cfg = TrainConfig(device="cpu", seed=seed, progress=False, lr=args.lr, weight_decay=0.0)
    params = {"n_units": args.units, "total_epochs": args.epochs,
              "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size,
              "val_batches": 8, "threshold": args.threshold, "n_max": args.n_max,
              "tau_init": args.tau_init}
    return run_curriculum(task, kind, out / f"{task}-{kind}-{seed}", params, cfg)


def summarise(res: dict) -> dict:
    stages = res["stages"]
    final_n = stages[-1]["N"]
    tau = np.array([u["tau"] for u in res["units"] if u["N"] == final_n])
    ts = np.array([u["net_timescale"] for u in res["units"] if u["N"] == final_n])
    ns = np.array([s["N"] for s in stages], float)
    means = np.array([s["tau_mean"] for s in stages])
    slope = float(np.polyfit(ns, means, 1)[0]) if len(ns) > 1 else float("nan")
    acc = res["final_accuracy"]
    n2 = acc.get("single_at_n_start", acc.get(f"n{res['settings']['n_start']}", np.nan))
    return {"task": res["task"], "curriculum": res["curriculum"],
            "N_reached": res["n_reached"], "steps": res["steps"], "acc_N2_end": n2,
            "tau_mean": tau.mean(), "tau_median": np.median(tau),
            "tau_q90": np.quantile(tau, 0.9), "tau_max": tau.max(), "tau_slope": slope,
            "net_ts": np.nanmean(ts), "mem_span": stages[-1]["memory_span"],
            "seconds": res["seconds"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["parity", "dms"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threshold", type=float, default=0.98)
    parser.add_argument("--tau-init", type=float, default=1.2)
    parser.add_argument("--n-max", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    os.environ.setdefault("BRAINHEAD_NO_PROGRESS", "1")
    import logging
    import warnings

    import pandas as pd
    import torch

    warnings.filterwarnings("ignore")
    logging.getLogger("brainhead").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    rows, stage_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for task in args.tasks:
            for seed in args.seeds:
                for kind in ("single", "multi"):
                    start = time.perf_counter()
                    res = run(task, kind, seed, out, args)
                    rows.append({**summarise(res), "seed": seed})
                    stage_rows += [{**s, "seed": seed} for s in res["stages"]]
                    print(f"# {task} {kind} seed {seed}: N={res['n_reached']} in "
                          f"{time.perf_counter() - start:.0f} s", flush=True)
    pd.set_option("display.width", 200)
    table = pd.DataFrame(rows)[["task", "curriculum", "seed", "N_reached", "steps",
                                "acc_N2_end", "tau_mean", "tau_median", "tau_q90", "tau_max",
                                "tau_slope", "net_ts", "mem_span", "seconds"]]
    print(f"\nMemory RNN curricula: {args.units} units, {args.epochs} x "
          f"{args.steps_per_epoch} steps per curriculum, threshold {args.threshold}, "
          f"tau_init {args.tau_init}\n")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    stages = pd.DataFrame(stage_rows)
    print("\nat the end of each stage: mean tau / mean network timescale / memory span\n")
    for (task, kind, seed), g in stages.groupby(["task", "curriculum", "seed"], sort=False):
        cells = " ".join(f"N{int(r.N)}:{r.tau_mean:.2f}/{r.net_timescale_mean:.1f}/"
                         f"{int(r.memory_span)}" for r in g.itertuples())
        print(f"{task:6s} {kind:6s} seed {seed}: {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
