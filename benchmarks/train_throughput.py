"""Training throughput and memory of the voxel cross-attention encoder, per brain size,
and of the subject-adapter decoder at the demo's sizes.

Usage::

    python benchmarks/train_throughput.py                # this CPU, then CUDA if present
    python benchmarks/train_throughput.py --device cpu --threads 2
    python benchmarks/train_throughput.py --device cuda  # GPU only, bf16-mixed by default
    python benchmarks/train_throughput.py --no-decoder   # the voxel encoder only
    python benchmarks/train_throughput.py --sizes demo,10k,100k --steps 100 \\
        --n-sampled-targets 4096 --batch-size 32 --precision fp32 --lightning-epochs 10

Trains :class:`encoders.voxel_xattn.VoxelCrossAttention` (the study's default settings:
``d_model`` 32, one head, dropout 0.1, layer keys) on synthetic features and responses
with a bare loop (forward, MSE, backward, and the optimisers of training: AdamW for shared parameters, SparseAdam for the sampled rows of per-target tables), one batch of one subject per
step: ``--batch-size`` stimuli and ``--n-sampled-targets`` of the subject's targets
drawn at random, the way :class:`brainhead.train.data.StimulusBatches` plans batches,
with the responses gathered the way :class:`brainhead.train.data.EncodingBatches`
gathers them (only the sampled cells of the batch's rows). Subjects take turns.

Sizes (``--sizes``, comma-separated):

- ``demo``: 3 subjects with 1,000 / 1,900 / 700 targets, 160 stimuli;
- ``10k``, ``100k``: 4 subjects with 10,000 / 100,000 targets each, 480 stimuli;
- ``<n>x<targets>``: ``n`` subjects with that many targets each, 480 stimuli.

Every size has 7 layers of 384 features (all-MiniLM-L6-v2) and runs in its own freshly
spawned process, so sizes do not share memory or allocator caches. Per size it prints:

- samples/s: (stimulus, target) pairs trained per second, ``B x S`` per step, over
  ``--steps`` steps after a warm-up of two steps per subject (which also creates the
  AdamW state of every subject), with the time per step split into data, forward,
  backward and optimiser (on CUDA from a separate short pass with synchronisations);
- FLOP/s: the model's matrix-product FLOPs per step, counted analytically from the
  forward's linears and einsums (:func:`step_flops`; the backward counts twice the
  forward, except the input projection, whose input needs no gradient), over the
  measured time, and as a fraction of the device's GEMM rate measured in the same
  process (best of a few square matrix products in the training dtype: float32, or
  bfloat16 under bf16-mixed);
- memory, on the CPU from the process's resident high-water mark (``VmHWM`` on Linux,
  which sees torch's allocations; reset through ``/proc/self/clear_refs``; elsewhere
  ``ru_maxrss`` without reset), on CUDA from ``torch.cuda.max_memory_allocated``:
  *resident* is what the run holds between steps (responses, features, parameters,
  AdamW state) above the process after imports; *step* is the extra peak within the
  measured steps (activations, gradients, optimiser temporaries); *total* is the peak
  of the whole run above the process after imports.

Then one end-to-end run of the demo size through the Lightning path that the workflow
uses (:func:`brainhead.train.trainer.fit_run` with
:class:`brainhead.train.modules.EncoderModule` and
:func:`brainhead.train.data.loader`; validation every epoch, checkpoints, CPU
determinism) prints epochs/s and training samples/s, overall and per epoch after the
first, and their ratio to the bare loop's samples/s.

Goal (the issue): peak memory at 100,000 targets per subject within 2x that at 10,000,
because target sampling bounds what a step needs. Both ratios are printed with PASS or
FAIL: the step peak (what sampling controls) and the total peak (which also holds the
per-target parameters, their AdamW moments and the responses, all linear in the number
of targets whatever the sampling).

Torch runs on one thread by default (``--threads``), as the workflow's train rule does:
on a machine shared with other jobs, two threads on two cores made each step about ten
times slower than one (OpenMP threads wait for each other). The default run takes
about 2 minutes on a busy 2-core CPU; ``--device cuda`` stops with a message when torch
sees no CUDA device. It prints; it asserts nothing.

The subject-adapter decoder (:class:`encoders.adapters.AdapterDecoder` in
:class:`brainhead.train.modules.DecoderModule`: MSE plus InfoNCE over every layer,
AdamW) is measured at the demo's sizes and settings (``--decoder``, default on: fMRI,
3 subjects with 1,876 / 1,084 / 677 voxels; sEEG, 2 subjects with 32 / 30 contacts;
160 stimuli; the demo's ``train.adapters``: ``d_shared`` 64, one residual block, batch
64, decoding 7 x 384 features at once): a bare loop (samples/s = stimuli decoded per
second, FLOPs counted analytically by :func:`decoder_step_flops`, memory as above) and
one ``fit_run`` through Lightning (epochs/s, samples/s).
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing as mp
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ridge import _proc_status  # noqa: E402 - the ridge benchmark's /proc helpers
from ridge import _reset_peak as reset_peak_rss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_LAYERS, DIM = 7, 384
#: The study's ``train.voxel_xattn`` defaults (brainhead.train.voxel.DEFAULTS).
MODEL = {"d_model": 32, "n_heads": 1, "dropout": 0.1, "keys": "layer"}
LR, WEIGHT_DECAY = 3e-3, 1e-4
DEMO = {"n_targets": {"f01": 1000, "f02": 1900, "f03": 700}, "n_stimuli": 160}
PRECISIONS = ("auto", "fp32", "bf16-mixed")
#: The demo's ``train.adapters`` settings (data_specs/demo/study.yaml).
DECODER = {"d_shared": 64, "depth": 1, "adapter": "linear", "pool": None, "dropout": 0.1}
DECODER_LR, DECODER_BATCH = 1e-2, 64
DECODER_SIZES = {"fmri": {"f01": 1876, "f02": 1084, "f03": 677},
                 "seeg": {"s01": 32, "s02": 30}}


def parse_size(name: str) -> dict:
    """``demo``, ``10k``, ``100k`` or ``<n>x<targets>`` -> subjects' targets and stimuli."""
    if name == "demo":
        return {"name": name, **DEMO}
    named = {"10k": (4, 10_000), "100k": (4, 100_000)}
    match = re.fullmatch(r"(\d+)x(\d+)", name)
    if name in named:
        n_sub, n_t = named[name]
    elif match:
        n_sub, n_t = int(match[1]), int(match[2])
    else:
        raise ValueError(f"--sizes: unknown size {name!r}; expected demo, 10k, 100k or "
                         f"<subjects>x<targets> (e.g. 4x50000)")
    return {"name": name, "n_targets": {f"s{i + 1:02d}": n_t for i in range(n_sub)},
            "n_stimuli": 480}


# --------------------------------------------------------------------------- counts
def forward_flops(B: int, S: int, L: int, D: int, d: int, H: int, keys: str) -> dict:
    """Matrix-product FLOPs of one forward of ``VoxelCrossAttention`` (2 per multiply-add).

    ``B`` stimuli, ``S`` targets, ``L`` layers of width ``D``, model width ``d``, ``H``
    heads. Elementwise work (layer norm, softmax, dropout, bias) is left out.
    """
    flops = {
        "proj": 2 * B * L * D * d,                       # shared projection, (B, L, d)
        "to_q": 2 * S * d * d,                           # queries of the sampled targets
        "to_v": 2 * B * L * d * d,                       # values of every layer token
        "to_k": 2 * (L if keys == "layer" else B * L) * d * d,
        "scores": 2 * (1 if keys == "layer" else B) * S * L * d,  # q . k over heads
        "readout": 2 * B * S * L * d,                    # "blhe,she->bshl"
        "mix": 2 * B * S * H * L,                        # "bshl,shl->bs"
    }
    return flops


def step_flops(B: int, S: int, L: int = N_LAYERS, D: int = DIM, d: int = 32, H: int = 1,
               keys: str = "layer") -> float:
    """FLOPs of one training step: forward, plus a backward of twice the forward.

    The backward of a product computes the gradients of both operands (twice its
    forward); the input projection only needs its weight's (the features need no
    gradient), so it counts once.
    """
    fwd = forward_flops(B, S, L, D, d, H, keys)
    return 3 * sum(fwd.values()) - fwd["proj"]


# --------------------------------------------------------------------------- memory
def peak_rss() -> int:
    """Resident high-water mark of this process in bytes (since the last reset)."""
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def current_rss() -> int:
    rss = _proc_status("VmRSS")
    return rss if rss is not None else peak_rss()


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system (glibc only).

    Without it, memory freed by an earlier step stays resident in the allocator and the
    next step's peak would reuse it unseen.
    """
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- device
def measure_gemm(torch, device, dtype, size: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` FLOP/s of a ``size``-square matrix product on ``device``."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    best = math.inf
    for _ in range(repeats):
        _sync(torch, device)
        t0 = time.perf_counter()
        a @ b
        _sync(torch, device)
        best = min(best, time.perf_counter() - t0)
    del a, b
    return 2 * size**3 / best


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _precision(device_type: str, precision: str) -> str:
    if precision == "auto":
        return "bf16-mixed" if device_type == "cuda" else "fp32"
    return precision


# --------------------------------------------------------------------------- bare loop
def optimizers_of(net) -> list:
    """The optimisers that training uses for ``net`` (EncoderModule.configure_optimizers):
    AdamW for shared parameters, SparseAdam for per-target tables (sparse gradients)."""
    from brainhead.train.modules import EncoderModule

    return EncoderModule(net, lr=LR, weight_decay=WEIGHT_DECAY).configure_optimizers()


def _measure_child(measure, what, opts: dict, queue) -> None:
    """``measure(what, **opts)`` in a spawned process: its result, or its error, to the
    parent through ``queue``."""
    try:
        queue.put(measure(what, **opts))
    except Exception as err:  # reported by the parent, never swallowed
        import traceback

        queue.put({"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()})


def _device_setup(torch, device: str, precision: str, threads: int | None):
    """Threads, device, precision, autocast dtype (None: fp32) and the device's measured
    GEMM peak, as every measurement of this file starts."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    precision = _precision(dev.type, precision)
    amp_dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    gemm = measure_gemm(torch, dev, amp_dtype or torch.float32,
                        8192 if dev.type == "cuda" else 2048)
    return dev, precision, amp_dtype, gemm


def measure_size(size: dict, *, device: str, precision: str, steps: int, batch_size: int,
                 n_sampled_targets: int, threads: int | None, gather: str = "auto",
                 seed: int = 0) -> dict:
    """Train ``size`` with the bare loop in this process; timings, FLOPs and memory.

    ``gather``: where batches are gathered, ``host`` or ``device`` (a copy of features
    and responses on the device); ``auto`` as the workflow does on one device: the
    device on CUDA, else the host.
    """
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT))
    from encoders.voxel_xattn import VoxelCrossAttention

    dev, precision, amp_dtype, gemm = _device_setup(torch, device, precision, threads)
    cuda = dev.type == "cuda"
    gemm_dtype = amp_dtype or torch.float32

    def autocast():
        return torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    # Baseline: libraries imported and their code paged in by a tiny model's training
    # steps, thread pools started, GEMM buffers freed.
    tiny = VoxelCrossAttention({"tiny": 8}, [DIM] * N_LAYERS, **MODEL).to(dev)
    tiny_opts = optimizers_of(tiny)
    for targets in (torch.arange(8, device=dev), torch.arange(4, device=dev)):
        with autocast():
            out = tiny(torch.randn(2, N_LAYERS, DIM, device=dev), "tiny", targets)
        out.float().square().mean().backward()
        for o in tiny_opts:
            o.step()
            o.zero_grad(set_to_none=True)
    del tiny, tiny_opts, out
    release_freed_memory()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        gpu_base = torch.cuda.memory_allocated()
    reset_peak_rss()
    rss_base = current_rss()

    gen = torch.Generator().manual_seed(seed)
    n_targets = size["n_targets"]
    n_stim = size["n_stimuli"]
    features = torch.randn(n_stim, N_LAYERS, DIM, generator=gen)
    responses = {s: torch.randn(n_stim, n, generator=gen) for s, n in n_targets.items()}
    if gather == "auto":
        gather = "device" if cuda else "host"
    if gather == "device":  # as EncodingData.on: one copy where the model trains
        features = features.to(dev)
        responses = {s: r.to(dev) for s, r in responses.items()}
    torch.manual_seed(seed)
    net = VoxelCrossAttention(n_targets, [DIM] * N_LAYERS, **MODEL).to(dev).train()
    opts = optimizers_of(net)
    subjects = sorted(n_targets)
    B = min(batch_size, n_stim)

    def batch(step: int):
        subject = subjects[step % len(subjects)]
        n_t = n_targets[subject]
        at = features.device
        rows = torch.randperm(n_stim, generator=gen)[:B].to(at)
        x = features[rows]
        # as EncoderModule.training_step: targets are always indexed (sparse gradients)
        targets = torch.arange(n_t, device=at)
        if n_sampled_targets < n_t:
            targets = torch.randperm(n_t, generator=gen)[:n_sampled_targets].sort().values
            targets = targets.to(at)
            # as EncodingBatches: only the sampled (row, target) cells, never whole rows
            y = responses[subject][rows[:, None], targets[None, :]]
        else:
            y = responses[subject][rows]
        targets = targets.to(dev)
        return subject, x.to(dev), y.to(dev), targets

    def run(first: int, n: int, phases: bool) -> tuple[float, dict, int, float]:
        """Train ``n`` steps; (seconds, seconds per phase, samples, FLOPs)."""
        times = dict.fromkeys(("data", "forward", "backward", "optimiser"), 0.0)
        samples, flops = 0, 0.0

        def mark(phase, t0):
            if phases:
                _sync(torch, dev)
                t = time.perf_counter()
                times[phase] += t - t0
                return t
            return t0

        _sync(torch, dev)
        start = t = time.perf_counter()
        for step in range(first, first + n):
            subject, x, y, targets = batch(step)
            t = mark("data", t)
            with autocast():
                pred = net(x, subject, targets)
            loss = F.mse_loss(pred.float(), y)
            t = mark("forward", t)
            loss.backward()
            t = mark("backward", t)
            for o in opts:
                o.step()
                o.zero_grad(set_to_none=True)
            t = mark("optimiser", t)
            S = y.shape[1]
            samples += B * S
            flops += step_flops(B, S, d=MODEL["d_model"], H=MODEL["n_heads"],
                                keys=MODEL["keys"])
        _sync(torch, dev)
        return time.perf_counter() - start, times, samples, flops

    warm = 2 * len(subjects)  # two steps per subject: every AdamW state exists after
    run(0, warm, phases=False)
    release_freed_memory()
    setup_peak = peak_rss() - rss_base
    resident = current_rss() - rss_base
    reset_peak_rss()
    rss_before = current_rss()
    if cuda:
        gpu_setup_peak = torch.cuda.max_memory_allocated() - gpu_base
        gpu_resident = torch.cuda.memory_allocated() - gpu_base
        torch.cuda.reset_peak_memory_stats()
    seconds, phases, samples, flops = run(warm, steps, phases=not cuda)
    step_peak = peak_rss() - rss_before
    if cuda:
        gpu_step_peak = torch.cuda.max_memory_allocated() - gpu_base - gpu_resident
        n_check = min(steps, 10)
        _, phases, _, _ = run(warm + steps, n_check, phases=True)
        phases = {k: v * steps / n_check for k, v in phases.items()}  # per `steps` steps

    n_params = sum(p.numel() for p in net.parameters())
    n_subject = sum(p.numel() for s in subjects for p in net.subject_parameters(s))
    out = {
        "name": size["name"], "device": str(dev), "precision": precision, "gather": gather,
        "threads": torch.get_num_threads(), "subjects": len(subjects),
        "targets": sum(n_targets.values()), "max_targets": max(n_targets.values()),
        "stimuli": n_stim, "batch": B, "steps": steps, "seconds": seconds,
        "phases": phases, "samples": samples, "flops": flops, "gemm": gemm,
        "gemm_dtype": str(gemm_dtype).replace("torch.", ""),
        "params": n_params, "subject_params": n_subject,
        # parameters + AdamW moments (2x) + responses + features, float32
        "state_bytes": 4 * (3 * n_params + sum(r.numel() for r in responses.values())
                            + features.numel()),
        "rss_resident": resident, "rss_step": step_peak,
        "rss_total": max(setup_peak, resident + step_peak),
        "error": None,
    }
    if cuda:
        out.update(gpu_resident=gpu_resident, gpu_step=gpu_step_peak,
                   gpu_total=max(gpu_setup_peak, gpu_resident + gpu_step_peak),
                   device_name=torch.cuda.get_device_name(dev))
    return out


# --------------------------------------------------------------------------- Lightning
def measure_lightning(size: dict, *, device: str, precision: str, epochs: int,
                      batch_size: int, n_sampled_targets: int, threads: int | None,
                      seed: int = 0) -> dict:
    """Train ``size`` through :func:`brainhead.train.trainer.fit_run`; epochs and samples/s.

    The training loader's sampler is wrapped so that every ``set_epoch`` call (Lightning
    makes one at the start of each epoch) is time-stamped, which separates the start-up
    of the run from its steady per-epoch time.
    """
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from brainhead.train.data import EncodingData, SubjectResponses, loader
    from brainhead.train.modules import EncoderModule
    from brainhead.train.trainer import TrainConfig, fit_run
    from encoders.voxel_xattn import VoxelCrossAttention

    if threads:
        torch.set_num_threads(threads)
    dev_type = torch.device(device).type
    precision = _precision(dev_type, precision)
    rng = np.random.default_rng(seed)
    n_stim = size["n_stimuli"]
    stim_id = np.array([f"stim{i:04d}" for i in range(n_stim)])
    features = rng.standard_normal((N_LAYERS, n_stim, DIM)).astype(np.float32)
    subjects = {}
    for s, n in size["n_targets"].items():
        subjects[s] = SubjectResponses(
            subject=s, modality="fmri", Y=rng.standard_normal((n_stim, n)).astype(np.float32),
            stim_id=stim_id, target_name=np.array([f"t{j}" for j in range(n)]),
            region=np.array(["r0"] * n), folds={})
    n_val = max(1, round(0.15 * n_stim))
    order = rng.permutation(n_stim)
    val_stims, fit_stims = sorted(stim_id[order[:n_val]]), sorted(stim_id[order[n_val:]])
    fit = {s: fit_stims for s in subjects}
    val = {s: val_stims for s in subjects}
    data = EncodingData(features, stim_id, subjects,
                        {s: fit_stims + val_stims for s in subjects})
    torch.manual_seed(seed)
    net = VoxelCrossAttention({s: data.Y[s].shape[1] for s in subjects}, data.layer_dims,
                              **MODEL)
    module = EncoderModule(net, lr=LR, weight_decay=WEIGHT_DECAY)
    # batches gathered where the workflow gathers them on one device (VoxelEncoderExperiment)
    at = "cuda" if dev_type == "cuda" else None
    train_loader = loader(data, fit, batch_size=batch_size,
                          n_sampled_targets=n_sampled_targets, shuffle=True, seed=seed,
                          device=at)
    val_loader = loader(data, val, batch_size=batch_size,
                        n_sampled_targets=n_sampled_targets * 16, shuffle=False, seed=0,
                        device=at)
    stamps: list[float] = []
    sampler = train_loader.sampler
    set_epoch = sampler.set_epoch

    def stamped_set_epoch(epoch):
        stamps.append(time.perf_counter())
        set_epoch(epoch)

    sampler.set_epoch = stamped_set_epoch
    cfg = TrainConfig(max_epochs=epochs, patience=epochs + 1, batch_size=batch_size,
                      lr=LR, weight_decay=WEIGHT_DECAY, seed=seed, device=dev_type,
                      precision="32-true" if precision == "fp32" else precision,
                      progress=False)
    per_epoch = sum(len(fit[s]) * min(n_sampled_targets, n)
                    for s, n in size["n_targets"].items())
    with tempfile.TemporaryDirectory(prefix="brainhead-train-bench-") as run_dir:
        t0 = time.perf_counter()
        info = fit_run(module, train_loader, val_loader, run_dir, cfg, name="throughput")
        seconds = time.perf_counter() - t0
    n_epochs = int(info["epochs"])
    # Epochs after the first, start to start (the first holds one-time costs; the last
    # ends in fit_run's final checkpoint load): median, robust to a busy machine.
    laps = np.diff(stamps[1:])
    steady = float(np.median(laps)) if laps.size else None
    return {"name": size["name"], "device": dev_type, "precision": precision,
            "epochs": n_epochs, "seconds": seconds, "fit_seconds": float(info["seconds"]),
            "samples_per_epoch": per_epoch, "steps_per_epoch": len(sampler),
            "epoch_starts": len(stamps), "steady_epoch": steady,
            "first_epoch": (stamps[1] - t0) if len(stamps) > 1 else None, "error": None}


# --------------------------------------------------------------------------- decoder
def decoder_step_flops(B: int, T: int, d: int, depth: int, L: int = N_LAYERS,
                       D: int = DIM) -> float:
    """Matrix-product FLOPs of one decoder training step (2 per multiply-add).

    Forward: the adapter (``T -> d``), ``depth`` residual blocks (two ``d x d``), the
    head (``d -> L * D``) and the InfoNCE similarities of every layer (``B x B x D``);
    the backward counts twice the forward, except the adapter, whose input (responses)
    needs no gradient, so it counts once.
    """
    adapter = 2 * B * T * d
    fwd = adapter + depth * 2 * (2 * B * d * d) + 2 * B * d * L * D + L * 2 * B * B * D
    return 3 * fwd - adapter


def measure_decoder(name: str, *, device: str, precision: str, steps: int,
                    threads: int | None, epochs: int, seed: int = 0) -> dict:
    """The decoder at one demo size: a bare loop (time, FLOPs, memory), then ``fit_run``."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from brainhead.train.data import EncodingData, SubjectResponses, loader
    from brainhead.train.modules import DecoderModule
    from brainhead.train.trainer import TrainConfig, fit_run
    from encoders.adapters import AdapterDecoder

    dev, precision, amp_dtype, gemm = _device_setup(torch, device, precision, threads)
    cuda = dev.type == "cuda"
    n_targets, n_stim, B = DECODER_SIZES[name], DEMO["n_stimuli"], DECODER_BATCH
    layers = list(range(N_LAYERS))

    def build():
        torch.manual_seed(seed)
        net = AdapterDecoder(n_targets, N_LAYERS * DIM, **DECODER).to(dev).train()
        module = DecoderModule(net, layers=layers, lr=DECODER_LR, weight_decay=1e-4).to(dev)
        return net, module

    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n_stim, N_LAYERS, DIM, generator=gen)
    responses = {s: torch.randn(n_stim, n, generator=gen) for s, n in n_targets.items()}
    net, module = build()
    opt = module.configure_optimizers()
    subjects = sorted(n_targets)

    def run(first: int, n: int) -> tuple[float, float]:
        flops = 0.0
        _sync(torch, dev)
        start = time.perf_counter()
        for step in range(first, first + n):
            subject = subjects[step % len(subjects)]
            rows = torch.randperm(n_stim, generator=gen)[:B]
            y, x = responses[subject][rows].to(dev), features[rows].to(dev)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pred = module(y, subject)
            loss = module.loss(pred.float(), x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            flops += decoder_step_flops(B, n_targets[subject], DECODER["d_shared"],
                                        DECODER["depth"])
        _sync(torch, dev)
        return time.perf_counter() - start, flops

    run(0, 2 * len(subjects))
    release_freed_memory()
    reset_peak_rss()
    rss_before = current_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds, flops = run(2 * len(subjects), steps)
    out = {"name": name, "device": str(dev), "precision": precision, "steps": steps,
           "batch": B, "seconds": seconds, "flops": flops, "gemm": gemm,
           "params": sum(p.numel() for p in net.parameters()),
           "rss_step": peak_rss() - rss_before, "rss": current_rss(), "error": None}
    if cuda:
        out["gpu_peak"] = torch.cuda.max_memory_allocated()

    # the workflow's path: fit_run, validation and checkpoints every epoch
    stim_id = np.array([f"stim{i:04d}" for i in range(n_stim)])
    subs = {s: SubjectResponses(s, "fmri", responses[s].numpy(), stim_id,
                                np.array([f"t{j}" for j in range(n)]), np.array(["r"] * n), {})
            for s, n in n_targets.items()}
    n_val = round(0.15 * n_stim)
    fit = {s: sorted(stim_id[n_val:]) for s in subs}
    val = {s: sorted(stim_id[:n_val]) for s in subs}
    data = EncodingData(features.permute(1, 0, 2).numpy(), stim_id, subs,
                        {s: list(stim_id) for s in subs})
    net, module = build()
    train_loader = loader(data, fit, batch_size=B, n_sampled_targets=None, shuffle=True,
                          seed=seed, min_batches=2 * len(fit))
    val_loader = loader(data, val, batch_size=B, n_sampled_targets=None, shuffle=False,
                        seed=0)
    cfg = TrainConfig(max_epochs=epochs, patience=epochs + 1, batch_size=B, lr=DECODER_LR,
                      seed=seed, device=dev.type, progress=False,
                      precision="32-true" if precision == "fp32" else precision)
    with tempfile.TemporaryDirectory(prefix="brainhead-decoder-bench-") as run_dir:
        t0 = time.perf_counter()
        info = fit_run(module, train_loader, val_loader, run_dir, cfg, name="decoder")
        out["fit_seconds"] = time.perf_counter() - t0
    out["fit_epochs"] = int(info["epochs"])
    out["fit_samples"] = int(info["epochs"]) * len(train_loader) * B
    return out


def print_decoder(results: list[dict]) -> None:
    first = results[0]
    print(f"\nsubject-adapter decoder on {first['device']} ({first['precision']}), demo "
          f"settings {DECODER}, batch {DECODER_BATCH}, MSE + InfoNCE over {N_LAYERS} layers")
    head = (f"{'size':>5} {'params':>9} {'ms/step':>8} {'samples/s':>10} {'GFLOP/s':>8} "
            f"{'of GEMM':>7} {'step MiB':>8} {'RSS MiB':>8} {'fit_run epochs/s':>16} "
            f"{'fit_run samples/s':>17}")
    print(head)
    print("-" * len(head))
    for r in results:
        rate = r["flops"] / r["seconds"]
        print(f"{r['name']:>5} {r['params']:>9,} {1e3 * r['seconds'] / r['steps']:>8.2f} "
              f"{r['steps'] * r['batch'] / r['seconds']:>10,.0f} {rate / 1e9:>8.2f} "
              f"{_share(rate / r['gemm']):>7} {_mib(r['rss_step']):>8} {_mib(r['rss']):>8} "
              f"{r['fit_epochs'] / r['fit_seconds']:>16.2f} "
              f"{r['fit_samples'] / r['fit_seconds']:>17,.0f}")
    print("(samples = stimuli decoded; step MiB: extra resident peak within the measured "
          "steps; RSS: the process after them; fit_run: the workflow's path, validation "
          "and two checkpoints every epoch)")


# --------------------------------------------------------------------------- parent
def in_child(target, *args) -> dict:
    """Run ``target(*args, queue)`` in a fresh spawned process; return what it put."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    try:
        result = queue.get()
    except KeyboardInterrupt:
        proc.terminate()
        raise
    proc.join()
    return result


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _share(fraction: float) -> str:
    """A percentage with the digits that a small share needs (0.047%, not 0.0%)."""
    return f"{fraction:.1%}" if fraction >= 0.01 else f"{fraction * 100:.2g}%"


def print_bare(results: list[dict]) -> None:
    """Throughput and memory tables of the bare-loop measurements."""
    first = results[0]
    print(f"\nbare loop on {first['device']} ({first['precision']}, "
          f"{first['threads']} threads, batches gathered on the {first['gather']}): forward "
          f"+ MSE + backward + AdamW/SparseAdam, batch {first['batch']} stimuli")
    head = (f"{'size':>6} {'subj x targets':>15} {'S/step':>6} {'steps':>5} {'ms/step':>8} "
            f"{'samples/s':>11} {'data':>6} {'fwd':>6} {'bwd':>6} {'optim':>6} "
            f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'of GEMM':>7}")
    print(head)
    print("-" * len(head))
    for r in results:
        n = r["steps"]
        ms = 1e3 * r["seconds"] / n
        ph = {k: 1e3 * v / n for k, v in r["phases"].items()}
        rate = r["flops"] / r["seconds"]
        targets = (f"{r['subjects']} x {r['max_targets']:,}" if
                   r["targets"] == r["subjects"] * r["max_targets"]
                   else f"{r['subjects']} x ~{r['targets'] // r['subjects']:,}")
        print(f"{r['name']:>6} {targets:>15} {r['samples'] // (n * r['batch']):>6,} {n:>5} "
              f"{ms:>8.1f} {r['samples'] / r['seconds']:>11,.0f} {ph['data']:>6.1f} "
              f"{ph['forward']:>6.1f} {ph['backward']:>6.1f} {ph['optimiser']:>6.1f} "
              f"{r['flops'] / n / 1e9:>10.3f} {rate / 1e9:>8.2f} {_share(rate / r['gemm']):>7}")
    gemms = ", ".join(f"{r['gemm'] / 1e9:,.0f}" for r in results)
    print(f"(data/fwd/bwd/optim: ms per step; S/step: mean targets per step; GEMM rate in "
          f"{first['gemm_dtype']}, measured in each size's process: {gemms} GFLOP/s)")
    gpu = "gpu_total" in first
    print(f"\nmemory (MiB{', GPU: torch.cuda.max_memory_allocated' if gpu else ', CPU: VmHWM'})"
          f": resident = held between steps, step = extra peak within a step, "
          f"total = peak of the run")
    head = (f"{'size':>6} {'params':>12} {'state MiB':>9} {'resident':>9} {'step':>7} "
            f"{'total':>7}" + (f" {'host res.':>9} {'host step':>9}" if gpu else ""))
    print(head)
    print("-" * len(head))
    for r in results:
        key = "gpu_" if gpu else "rss_"
        line = (f"{r['name']:>6} {r['params']:>12,} {_mib(r['state_bytes']):>9} "
                f"{_mib(r[key + 'resident']):>9} {_mib(r[key + 'step']):>7} "
                f"{_mib(r[key + 'total']):>7}")
        if gpu:
            line += f" {_mib(r['rss_resident']):>9} {_mib(r['rss_step']):>9}"
        print(line)
    shares = ", ".join(f"{r['name']} {r['subject_params'] / r['params']:.0%}" for r in results)
    print("(state = float32 parameters + Adam moments + responses + features, counted; "
          f"params = parameters, of which per-subject: {shares})")


def print_goal(results: list[dict]) -> None:
    """Peak memory at 100,000 targets over 10,000 (goal: <= 2)."""
    by = {r["name"]: r for r in results}
    if not {"10k", "100k"} <= set(by):
        return
    key = "gpu_" if "gpu_total" in by["100k"] else "rss_"
    print()
    for part, label in (("step", "step peak (activations, gradients, optimiser "
                                 "temporaries)"),
                        ("total", "total peak (also parameters, AdamW state, responses)")):
        a, b = by["100k"][key + part], by["10k"][key + part]
        ratio = a / max(b, 1)
        print(f"goal peak_mem(100k) / peak_mem(10k) <= 2, {label}: "
              f"{_mib(a)} / {_mib(b)} MiB = {ratio:.2f}  {'PASS' if ratio <= 2 else 'FAIL'}")


def print_lightning(res: dict, bare: dict | None) -> None:
    eps = res["epochs"] / res["seconds"]
    sps = res["epochs"] * res["samples_per_epoch"] / res["seconds"]
    print(f"\nLightning path (fit_run, {res['name']}, {res['device']}, {res['precision']}): "
          f"{res['epochs']} epochs of {res['steps_per_epoch']} training steps + validation "
          f"+ checkpoints in {res['seconds']:.1f} s")
    line = f"  overall: {eps:.2f} epochs/s, {sps:,.0f} training samples/s"
    if bare:
        line += f" = {sps / (bare['samples'] / bare['seconds']):.2f} x the bare loop's"
    print(line)
    epoch = res["steady_epoch"]
    if epoch and res["epoch_starts"] == res["epochs"]:
        sps = res["samples_per_epoch"] / epoch
        line = (f"  median epoch after the first: {1 / epoch:.2f} epochs/s, "
                f"{sps:,.0f} training samples/s")
        if bare:
            line += f" = {sps / (bare['samples'] / bare['seconds']):.2f} x the bare loop's"
        print(line)
        print(f"  set-up and first epoch: {1e3 * res['first_epoch']:.0f} ms")
        if bare:
            bare_epoch = res["samples_per_epoch"] / (bare["samples"] / bare["seconds"])
            print(f"  per epoch: {1e3 * epoch:.0f} ms against {1e3 * bare_epoch:.0f} ms for the "
                  f"same samples in the bare loop; the other {1e3 * (epoch - bare_epoch):.0f} ms"
                  f" are validation, checkpoints, logging and Lightning's hooks")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: this CPU, then CUDA when torch sees a device")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16-mixed on CUDA, fp32 on the CPU")
    parser.add_argument("--steps", type=int, default=100, help="measured steps per size")
    parser.add_argument("--sizes", default="demo,10k,100k",
                        help="comma-separated: demo, 10k, 100k or <subjects>x<targets>")
    parser.add_argument("--n-sampled-targets", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as the train rule runs; 0: torch's "
                             "choice)")
    parser.add_argument("--lightning-epochs", type=int, default=10,
                        help="epochs of the end-to-end fit_run at demo size (0: skip)")
    parser.add_argument("--gather", default="auto", choices=("auto", "host", "device"),
                        help="where the bare loop gathers its batches (auto: on the device "
                             "on CUDA, as the workflow does on one GPU; else the host)")
    parser.add_argument("--decoder", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the subject-adapter decoder at the demo's sizes")
    args = parser.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    except ValueError as err:
        parser.error(str(err))
    for name in ("steps", "n_sampled_targets", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    import torch

    has_cuda = torch.cuda.is_available()
    if args.device == "cuda" and not has_cuda:
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA device "
                     f"(built for CUDA {torch.version.cuda or 'none: a CPU-only build'}); "
                     f"use --device cpu or auto")
    devices = {"auto": ["cpu"] + (["cuda"] if has_cuda else []),
               "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    if args.precision == "bf16-mixed" and "cpu" in devices:
        print("note: bf16-mixed on the CPU runs under torch.autocast('cpu', bfloat16)")
    print(f"voxel encoder {MODEL}, {N_LAYERS} layers x {DIM} features, batch "
          f"{args.batch_size}, {args.n_sampled_targets} sampled targets, AdamW; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)

    t_start = time.perf_counter()
    status = 0
    for device in devices:
        opts = {"device": device, "precision": args.precision, "steps": args.steps,
                "batch_size": args.batch_size, "n_sampled_targets": args.n_sampled_targets,
                "threads": args.threads, "gather": args.gather}
        results = []
        for size in sizes:
            res = in_child(_measure_child, measure_size, size, opts)
            if res["error"]:
                print(f"{size['name']} on {device} FAILED: {res['error']}\n{res['trace']}")
                status = 1
                continue
            results.append(res)
            print(f"  {size['name']} on {device}: {res['steps']} steps in "
                  f"{res['seconds']:.1f} s", flush=True)
        if results:
            print_bare(results)
            print_goal(results)
        if args.lightning_epochs > 0:
            demo = parse_size("demo")
            lopts = {k: v for k, v in opts.items() if k not in ("steps", "gather")}
            res = in_child(_measure_child, measure_lightning, demo,
                           {**lopts, "epochs": args.lightning_epochs})
            if res["error"]:
                print(f"Lightning path on {device} FAILED: {res['error']}\n{res['trace']}")
                status = 1
            else:
                bare = next((r for r in results if r["name"] == "demo"), None)
                print_lightning(res, bare)
        if args.decoder:
            dopts = {"device": device, "precision": args.precision, "steps": args.steps,
                     "threads": args.threads, "epochs": max(args.lightning_epochs, 1)}
            decoded = []
            for name in DECODER_SIZES:
                res = in_child(_measure_child, measure_decoder, name, dopts)
                if res["error"]:
                    print(f"decoder {name} on {device} FAILED: {res['error']}\n{res['trace']}")
                    status = 1
                else:
                    decoded.append(res)
            if decoded:
                print_decoder(decoded)
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s, load average now "
          f"{os.getloadavg()[0]:.1f}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
