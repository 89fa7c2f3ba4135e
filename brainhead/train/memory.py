"""Memory RNNs with learnable timescales: the paper's curricula, through :func:`fit_run`.

:func:`run_curriculum` trains :class:`encoders.memory_rnn.MemoryRNN` on N-parity or N-DMS
(:mod:`brainhead.train.tasks`) with a single-head or multi-head curriculum. Every stage
(one value of ``N``) is one :func:`~brainhead.train.trainer.fit_run` in its own folder,
starting from the weights the previous stage ended with, and stops as soon as the
advance rule holds on the validation batches (:class:`MemoryTaskModule`), so a killed
curriculum resumes mid-stage from the stage's last checkpoint and completed stages are
reused. All stages together get one budget of epochs (``total_epochs`` x
``steps_per_epoch`` training steps), the same for both curricula.

Per epoch, ``metrics.csv`` of each stage has the mean, min and max ``tau``; per stage,
every unit's ``tau`` and network timescale (:func:`~brainhead.train.tasks.network_timescales`
of its activity on long white binary inputs) go to the result's ``units`` table.

The same network is the train family ``memory_rnn`` (:func:`train_memory_decoder`): a
decoder of how long a subject's neural signal keeps a memory of past stimuli. Each trial
is a short sequence (:class:`TrialSequences`) read from a zero state, and head ``m``
decodes the features of the stimulus ``m`` trials back; one :func:`fit_run` per subject,
outer fold (:func:`memory_folds`) and curriculum (:class:`StreamMemoryModule`), scored
per lag against a circular-shift null (:meth:`MemoryDecoder.score`).
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .._logging import logger
from ..io.store import spec_hash
from .tasks import (
    TASKS,
    Curriculum,
    memory_curve,
    network_timescales,
    one_hot,
    task_batch,
    task_inputs,
)
from .trainer import TrainConfig, epoch_seed, fit_run

__all__ = [
    "CURRICULUM_DEFAULTS",
    "DECODER_DEFAULTS",
    "FAMILY",
    "MemoryDecoder",
    "MemoryTaskModule",
    "StreamMemoryModule",
    "TrialSequences",
    "condition_targets",
    "decode_subject",
    "evaluate_task",
    "memory_depth",
    "memory_folds",
    "memory_span",
    "run_curriculum",
    "stimulus_features",
    "task_loaders",
    "train_memory_decoder",
    "unit_timescales",
]

#: Defaults of :func:`run_curriculum`'s settings.
CURRICULUM_DEFAULTS = {"n_units": 64, "nonlinearity": "leaky_relu", "tau_init": 1.2,
                       "learn_tau": True, "rec_gain": 1.0, "n_start": 2, "n_max": 40,
                       "threshold": 0.98, "total_epochs": 40, "steps_per_epoch": 50,
                       "batch_size": 64, "val_batches": 4, "max_extra": 10,
                       "grad_clip": 1.0}


class TaskBatches(Dataset):
    """Batch ``(epoch, i)`` of a task: drawn from a generator seeded by (seed, epoch, i)."""

    def __init__(self, task: str, depths: Mapping[str, int], batch_size: int, seed: int,
                 stream: str, max_extra: int = 10):
        self.task, self.depths = task, dict(depths)
        self.batch_size, self.seed, self.stream = int(batch_size), int(seed), stream
        self.max_extra = int(max_extra)

    def __getitem__(self, item):
        epoch, i = item
        rng = np.random.default_rng(epoch_seed(self.seed, epoch, f"{self.stream}:{i}"))
        x, labels = task_batch(self.task, list(self.depths.values()), self.batch_size, rng,
                               max_extra=self.max_extra)
        return {"x": torch.from_numpy(one_hot(x)),
                "y": {h: torch.from_numpy(labels[n]) for h, n in self.depths.items()}}


class _EpochBatches(Sampler):
    """Indices ``(epoch, 0..n-1)``; a fixed epoch (0) when ``fixed`` (validation)."""

    def __init__(self, n: int, fixed: bool = False):
        self.n, self.fixed, self.epoch = int(n), fixed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        e = 0 if self.fixed else self.epoch
        yield from ((e, i) for i in range(self.n))

    def __len__(self) -> int:
        return self.n


def task_loaders(task: str, depths: Mapping[str, int], *, seed: int, steps_per_epoch: int,
                 batch_size: int, val_batches: int, max_extra: int = 10, key: str = ""
                 ) -> tuple[DataLoader, DataLoader]:
    """Training batches (fresh every epoch) and fixed validation batches of a task."""
    def make(stream, n, fixed):
        data = TaskBatches(task, depths, batch_size, seed, f"{key}:{stream}", max_extra)
        return DataLoader(data, sampler=_EpochBatches(n, fixed), batch_size=None,
                          collate_fn=lambda b: b, generator=torch.Generator())
    return make("train", steps_per_epoch, False), make("val", val_batches, True)


class _ClippedLossModule(pl.LightningModule):
    """What the memory-RNN modules share: the step on ``self._loss(batch)`` (a subclass
    defines it), gradient-norm clipping at ``self.grad_clip`` (0: none; long recurrences
    need it) and AdamW on the trainable parameters."""

    lr: float
    weight_decay: float
    grad_clip: float

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["x"]))
        return loss

    def on_before_optimizer_step(self, optimizer):
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


class MemoryTaskModule(_ClippedLossModule):
    """Cross-entropy of every trained head at the last step; stops at the advance rule.

    Parameters
    ----------
    net : encoders.memory_rnn.MemoryRNN
    curriculum : Curriculum
        Its :attr:`~Curriculum.heads` are the trained heads; when its advance rule
        holds on an epoch's validation accuracies the stage stops (``should_stop``).
    lr, weight_decay : float
        AdamW settings.
    grad_clip : float
        Gradient norm clipping (0: none); long recurrences need it.
    """

    def __init__(self, net, curriculum: Curriculum, *, lr: float = 3e-3,
                 weight_decay: float = 0.0, grad_clip: float = 1.0):
        super().__init__()
        self.net = net
        self.curriculum = copy.deepcopy(curriculum)
        self.heads = self.curriculum.heads
        self.lr, self.weight_decay, self.grad_clip = float(lr), float(weight_decay), grad_clip

    def forward(self, x):
        return self.net(x, list(self.heads), last=True)

    def _loss(self, batch):
        out = self(batch["x"])
        losses = {h: F.cross_entropy(out[h], batch["y"][h]) for h in self.heads}
        return torch.stack(list(losses.values())).mean(), out

    def on_validation_epoch_start(self):
        self._hits = {h: 0 for h in self.heads}
        self._seen = 0

    def validation_step(self, batch, batch_idx):
        loss, out = self._loss(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["x"]))
        for h in self.heads:
            self._hits[h] += int((out[h].argmax(-1) == batch["y"][h]).sum())
        self._seen += len(batch["x"])

    def on_validation_epoch_end(self):
        acc = {h: self._hits[h] / max(self._seen, 1) for h in self.heads}
        for h, a in acc.items():
            self.log(f"val_acc_{h}", float(a))
        mean = float(np.mean(list(acc.values())))
        self.log("val_acc", mean)
        # what the advance rule compares with the threshold: the best epoch (kept by
        # fit_run) is one that meets the rule whenever any epoch does
        self.log("val_score", min(mean, float(acc[self.curriculum.newest])))
        tau = self.net.tau.detach()
        self.log_dict({"tau_mean": tau.mean(), "tau_min": tau.min(), "tau_max": tau.max()})
        if self.curriculum.ready(acc):
            self.trainer.should_stop = True


def _on(net, a: np.ndarray) -> torch.Tensor:
    """``a`` as a tensor on the device of ``net``'s parameters."""
    return torch.from_numpy(a).to(next(net.parameters()).device)


@torch.no_grad()
def evaluate_task(net, task: str, heads: Mapping[str, int], *, seed: int, n_batches: int = 4,
                  batch_size: int = 256, max_extra: int = 10, stream: str = "test"
                  ) -> dict[str, float]:
    """Accuracy of each head (name -> depth it answers) on fresh sequences of ``task``."""
    was_training = net.training
    net.eval()
    hits = {h: 0 for h in heads}
    seen = 0
    for i in range(n_batches):
        rng = np.random.default_rng(epoch_seed(seed, 0, f"{stream}:{i}"))
        x, labels = task_batch(task, list(heads.values()), batch_size, rng, max_extra=max_extra)
        by_head = {}
        out = net.states(_on(net, one_hot(x)))[:, -1]
        for h, n in heads.items():
            by_head[h] = net.heads[h](out).argmax(-1).cpu().numpy()
            hits[h] += int((by_head[h] == labels[n]).sum())
        seen += len(x)
    net.train(was_training)
    return {h: hits[h] / seen for h in heads}


@torch.no_grad()
def unit_timescales(net, *, seed: int, n_sequences: int = 32, length: int = 400,
                    burn_in: int = 50, max_lag: int = 100) -> np.ndarray:
    """Network timescale of every unit (steps), from its activity on white binary input.

    The inputs are fair coin flips (the DMS inputs, also for a network trained on
    parity): parity's per-sequence bias would give every unit a per-sequence mean, and
    with it an autocorrelation that reflects the input, not the network.
    """
    was_training = net.training
    net.eval()
    rng = np.random.default_rng(epoch_seed(seed, 0, "timescale-inputs"))
    x = task_inputs("dms", n_sequences, length + burn_in, rng)
    h = net.states(_on(net, one_hot(x)))[:, burn_in:].float().cpu().numpy()
    net.train(was_training)
    return network_timescales(h, max_lag=max_lag)


@torch.no_grad()
def memory_span(net, *, seed: int, max_lag: int = 60, n_sequences: int = 32,
                length: int = 300, level: float = 0.9) -> tuple[int, np.ndarray]:
    """Population memory of white binary input (:func:`~brainhead.train.tasks.memory_curve`).

    Returns
    -------
    span : int
        The largest lag ``k`` such that the input of every lag ``1..k`` is read out of
        the state with accuracy >= ``level`` (0 if lag 1 is not).
    accuracy : ndarray, shape (max_lag + 1,)
    """
    was_training = net.training
    net.eval()
    rng = np.random.default_rng(epoch_seed(seed, 0, "memory-inputs"))
    x = task_inputs("dms", n_sequences, length, rng)
    h = net.states(_on(net, one_hot(x))).float().cpu().numpy()
    net.train(was_training)
    acc = memory_curve(h, x, max_lag)
    below = np.flatnonzero(acc[1:] < level)
    return (int(below[0]) if below.size else max_lag), acc


def run_curriculum(task: str, kind: str, out_dir: str | Path, params: Mapping | None = None,
                   cfg: TrainConfig | None = None) -> dict:
    """Train a memory RNN on ``task`` with a ``kind`` curriculum within one epoch budget.

    Parameters
    ----------
    task : {"parity", "dms"}
    kind : {"single", "multi"}
    out_dir : path-like
        Stages train in ``out_dir/<stage key>/`` (:func:`fit_run` folders).
    params : dict, optional
        Overrides of :data:`CURRICULUM_DEFAULTS`.
    cfg : TrainConfig, optional
        Seed, learning rate, weight decay, device (``max_epochs``, ``patience`` and the
        monitored metric are set per stage).

    Returns
    -------
    result : dict
        ``n_reached`` (largest N whose stage met the advance rule; ``n_start - 1`` if
        none), ``stages`` (one dict per stage: N, epochs, steps, accuracy per head,
        tau summary), ``units`` (per stage and unit: tau and network timescale),
        ``final_accuracy`` (test accuracy of the final network's heads, and for the
        single head its accuracy on N = n_start, the forgetting check), ``steps`` and
        ``seconds``.
    """
    from encoders.memory_rnn import MemoryRNN

    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    p = {**CURRICULUM_DEFAULTS, **(params or {})}
    unknown = sorted(set(params or {}) - set(CURRICULUM_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown memory-RNN curriculum settings {unknown}; known: "
                         f"{sorted(CURRICULUM_DEFAULTS)}")
    cfg = cfg or TrainConfig(device="cpu")
    out_dir = Path(out_dir)
    curriculum = Curriculum(kind, n_start=p["n_start"], threshold=p["threshold"],
                            n_max=p["n_max"])
    torch.manual_seed(epoch_seed(cfg.seed, 0, f"init:{task}:{kind}"))
    net = MemoryRNN(2, p["n_units"], heads=list(curriculum.heads), n_outputs=2,
                    nonlinearity=p["nonlinearity"], tau_init=p["tau_init"],
                    learn_tau=p["learn_tau"], rec_gain=p["rec_gain"])
    start = time.perf_counter()
    epochs_left = int(p["total_epochs"])
    stages, units, parent = [], [], spec_hash({"task": task, "kind": kind, "settings": p,
                                                "cfg": {k: v for k, v in vars(cfg).items()
                                                        if k not in ("progress", "device")}})
    n_reached = curriculum.n_start - 1
    while epochs_left > 0:
        heads = curriculum.heads
        key = spec_hash({"parent": parent, "heads": heads})[:12]
        stage_cfg = replace(cfg, max_epochs=epochs_left, patience=epochs_left + 1,
                            monitor="val_score", monitor_mode="max")
        module = MemoryTaskModule(net, curriculum, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  grad_clip=p["grad_clip"])
        train_loader, val_loader = task_loaders(
            task, heads, seed=cfg.seed, steps_per_epoch=p["steps_per_epoch"],
            batch_size=p["batch_size"], val_batches=p["val_batches"],
            max_extra=p["max_extra"], key=key)
        name = f"{task}/{kind}/N{curriculum.n}"
        info = fit_run(module, train_loader, val_loader, out_dir / f"stage-N{curriculum.n}-{key}",
                       stage_cfg, name=name)
        epochs_left -= int(info["epochs"])
        val = evaluate_task(net, task, heads, seed=cfg.seed, n_batches=p["val_batches"],
                            batch_size=p["batch_size"], max_extra=p["max_extra"],
                            stream=f"{key}:val")
        # the validation batches of the module: the same sequences the stop rule saw
        tau = net.tau.detach().cpu().numpy().astype(float)
        timescales = unit_timescales(net, seed=cfg.seed)
        span, _ = memory_span(net, seed=cfg.seed, max_lag=min(60, 2 * int(p["n_max"])))
        ready = curriculum.ready(val)
        stages.append({"task": task, "curriculum": kind, "N": curriculum.n,
                       "epochs": int(info["epochs"]),
                       "steps": int(info["epochs"]) * int(p["steps_per_epoch"]),
                       "learned": bool(ready), "val_acc_mean": float(np.mean(list(val.values()))),
                       "val_acc_newest": float(val[curriculum.newest]),
                       "tau_mean": float(tau.mean()), "tau_max": float(tau.max()),
                       "net_timescale_mean": float(np.nanmean(timescales)),
                       "memory_span": span,
                       "reused": bool(info.get("reused", False))})
        units += [{"task": task, "curriculum": kind, "N": curriculum.n, "unit": i,
                   "tau": float(tau[i]), "net_timescale": float(timescales[i])}
                  for i in range(len(tau))]
        logger.info("%s: %d epochs, validation accuracy %s", name, info["epochs"],
                    {h: round(a, 3) for h, a in val.items()})
        if not ready:
            break
        n_reached = curriculum.n
        if not curriculum.advance(val):  # n_max reached
            break
        parent = key
        if kind == "multi":
            torch.manual_seed(epoch_seed(cfg.seed, 0, f"head:{key}"))
            net.add_head(curriculum.newest)
    steps = sum(s["epochs"] for s in stages) * int(p["steps_per_epoch"])
    # the depths of the last stage that trained (a head added when the budget ran out
    # at the end of a stage never trained, and is not evaluated)
    last = stages[-1]["N"]
    if kind == "single":
        final = evaluate_task(net, task, {"n": last}, seed=cfg.seed, stream="final")
        # the one head, asked the first depth again (trained on it only in stage 1)
        forget = evaluate_task(net, task, {"n": curriculum.n_start}, seed=cfg.seed,
                               stream="final")["n"]
        final = {**final, "single_at_n_start": forget}
    else:
        trained = {Curriculum.head_name(n): n for n in range(curriculum.n_start, last + 1)}
        final = evaluate_task(net, task, trained, seed=cfg.seed, stream="final")
    return {"task": task, "curriculum": kind, "n_reached": n_reached, "stages": stages,
            "units": units, "final_accuracy": final, "steps": steps,
            "settings": p, "seconds": round(time.perf_counter() - start, 2)}


# ============================================================================ decoder
# The memory decoder of neural streams: train family ``memory_rnn``.

FAMILY = "memory_rnn"

#: Defaults of the study's ``train.memory_rnn`` section.
DECODER_DEFAULTS = {"n_lags": 4, "target": "features", "layer": None, "n_components": 8,
                    "window_s": [0.0, 1.2], "bin_s": 0.2, "n_units": 32,
                    "nonlinearity": "leaky_relu", "tau_init": 1.2, "epochs_per_stage": 4,
                    "batch_size": 32, "lr": None, "curricula": ["single", "multi"],
                    "n_permutations": 200, "alpha": 0.05, "grad_clip": 1.0}


class TrialSequences:
    """One subject's trials as short sequences, in presentation order within each run.

    Attributes
    ----------
    X : ndarray, shape (n_trials, n_bins, n_targets)
        From the ``timeseries`` view: the signal from ``window_s[0]`` to ``window_s[1]``
        after each event's onset, averaged in bins of ``bin_s``. A subject without that
        view (EEG, whose preprocessing writes trial views) falls back to its
        ``stimulus`` view, one bin per trial, rows ordered by ``t_start`` within a run.
    stim_id, run : ndarray of str, shape (n_trials,)
    source : str
        The view read.
    """

    def __init__(self, subject, modality, X, stim_id, run, source):
        self.subject, self.modality, self.source = subject, modality, source
        self.X = np.asarray(X, dtype=np.float32)
        self.stim_id, self.run = np.asarray(stim_id).astype(str), np.asarray(run).astype(str)

    @classmethod
    def from_table(cls, table, window_s=(0.0, 1.2), bin_s: float = 0.2) -> TrialSequences:
        """Trials of a :class:`~brainhead.io.table.ResponseTable` (see the class doc)."""
        where = f"sub-{table.subject} ({table.modality})"
        if "timeseries" not in table.views:
            view = table.view("stimulus")
            rows = view.rows
            start = rows.get("t_start", np.arange(len(view.X), dtype=float))
            runs = np.asarray(rows["group"]).astype(str)
            order = np.lexsort((np.arange(len(runs)), np.asarray(start, float), runs))
            return cls(table.subject, table.modality, view.X[order][:, None, :],
                       rows["stim_id"][order], runs[order], "stimulus")
        view = table.views["timeseries"]
        t0, t1 = (float(v) for v in window_s)
        if not (t1 > t0 and bin_s > 0):
            raise ValueError(f"{where}: train.memory_rnn.window_s={list(window_s)} must be "
                             f"increasing and bin_s={bin_s} positive")
        n_bins = max(1, round((t1 - t0) / bin_s))
        time = np.asarray(view.rows["time"], float)
        runs = np.asarray(view.rows["group"]).astype(str)
        ev_onset = np.asarray(view.events["onset"], float)
        ev_stim = np.asarray(view.events["stim_id"]).astype(str)
        ev_run = np.asarray(view.events["group"]).astype(str)
        X, keep = [], []
        edges = t0 + (t1 - t0) * np.arange(n_bins + 1) / n_bins
        for run in dict.fromkeys(runs.tolist()):
            rows = np.flatnonzero(runs == run)
            t = time[rows]
            for e in np.flatnonzero(ev_run == run):
                lo = np.searchsorted(t, ev_onset[e] + edges[:-1])
                hi = np.searchsorted(t, ev_onset[e] + edges[1:])
                if hi[-1] > len(t) - 1 or np.any(hi <= lo):
                    continue  # the window runs past the recording, or a bin is empty
                X.append(np.stack([view.X[rows[a:b]].mean(0) for a, b in zip(lo, hi)]))
                keep.append(e)
        if not keep:
            raise ValueError(f"{where}: no event has a full window {list(window_s)} s of "
                             f"samples (bins of {bin_s} s) in its run")
        keep = np.asarray(keep)
        order = np.lexsort((ev_onset[keep], ev_run[keep]))
        keep = keep[order]
        return cls(table.subject, table.modality, np.stack(X)[order], ev_stim[keep],
                   ev_run[keep], "timeseries")

    def lag_stimuli(self, n_lags: int) -> np.ndarray:
        """Stimulus ``m`` trials back of every trial, (n_trials, n_lags); "" before the run."""
        out = np.full((len(self.stim_id), n_lags), "", dtype=object)
        for run in np.unique(self.run):
            idx = np.flatnonzero(self.run == run)
            for m in range(n_lags):
                out[idx[m:], m] = self.stim_id[idx[: len(idx) - m]]
        return out.astype(str)


def memory_folds(runs: np.ndarray, stim_id: np.ndarray, seed: int
                 ) -> list[tuple[str, set[str]]]:
    """Outer folds: one test run each, and the stimuli tested in it.

    A stimulus presented in several runs is tested in one of them only (drawn, seeded,
    balancing the runs), and in that fold it is no training label at any lag: no stimulus
    on both sides. When runs share no stimulus this is leave-one-run-out.
    """
    runs, stim_id = np.asarray(runs).astype(str), np.asarray(stim_id).astype(str)
    names = sorted(set(runs.tolist()))
    if len(names) < 2:
        raise ValueError(f"the memory decoder leaves out whole runs and needs at least 2; "
                         f"got {names}")
    rng = np.random.default_rng(epoch_seed(seed, 0, "memory-folds"))
    load = dict.fromkeys(names, 0)
    tested = {r: set() for r in names}
    for s in rng.permutation(sorted(set(stim_id.tolist()))):
        where = sorted(set(runs[stim_id == s].tolist()))
        low = min(load[r] for r in where)
        r = where[int(rng.choice([i for i, x in enumerate(where) if load[x] == low]))]
        tested[r].add(str(s))
        load[r] += 1
    return [(r, tested[r]) for r in names]


class _TrialBatches(Dataset):
    def __init__(self, X, Y, mask):
        self.X, self.Y, self.mask = X, Y, mask

    def __getitem__(self, rows):
        rows = torch.as_tensor(rows)
        return {"x": self.X[rows], "y": self.Y[rows], "mask": self.mask[rows]}


class _ShuffledRows(Sampler):
    """Batches of row indices, shuffled from (seed, epoch); in order when ``shuffle`` is off."""

    def __init__(self, rows, batch_size, seed, shuffle, min_batches=1):
        self.rows, self.batch_size = np.asarray(rows), int(batch_size)
        self.seed, self.shuffle, self.min_batches, self.epoch = seed, shuffle, min_batches, 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def _plan(self):
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch, "rows"))
        plan = []
        while not plan or (self.shuffle and len(plan) < self.min_batches):
            rows = rng.permutation(self.rows) if self.shuffle else self.rows
            plan += [rows[i:i + self.batch_size].tolist()
                     for i in range(0, len(rows), self.batch_size)]
        return plan

    def __iter__(self):
        yield from self._plan()

    def __len__(self):
        return len(self._plan())


class StreamMemoryModule(_ClippedLossModule):
    """A whole curriculum of lag read-outs in one run: stage ``m`` = epochs ``m * E`` to
    ``(m + 1) * E - 1`` (``E = epochs_per_stage``), ``m = 0..n_lags - 1``.

    Single-head: the one head ``lag`` is trained on lag ``m`` in stage ``m`` (earlier
    lags no longer), and lag ``m`` is predicted at the end of stage ``m``. Multi-head:
    heads ``lag0..lag{m}`` all train in stage ``m``, and every lag is predicted by the
    final network. Predictions of the held-out trials' inputs (``x_test``, never their
    labels) are kept in the buffer ``test_pred``, which checkpoints carry, so a resumed
    run ends with the same predictions.

    Batches: ``x`` (B, n_bins, n_targets) the trial's signal (the state starts at zero
    every trial, so anything about an earlier stimulus comes from this trial's signal),
    ``y`` (B, n_lags, D) the features of the stimulus at each lag, ``mask`` (B, n_lags)
    which labels count (before the run's start, test or validation stimuli: not).

    Parameters
    ----------
    net : encoders.memory_rnn.MemoryRNN
        With head ``lag`` (single) or heads ``lag0..lag{n_lags-1}`` (multi).
    kind : {"single", "multi"}
    n_lags, epochs_per_stage : int
    x_test : Tensor, shape (n_test, n_bins, n_targets)
    """

    def __init__(self, net, kind: str, n_lags: int, epochs_per_stage: int,
                 x_test: torch.Tensor, *, lr: float = 3e-3, weight_decay: float = 1e-4,
                 grad_clip: float = 1.0):
        super().__init__()
        if kind not in ("single", "multi"):
            raise ValueError(f"curriculum must be 'single' or 'multi', got {kind!r}")
        self.net, self.kind = net, kind
        self.n_lags, self.epochs_per_stage = int(n_lags), int(epochs_per_stage)
        self.x_test = x_test
        d = next(iter(net.heads.values())).out_features
        self.register_buffer("test_pred", torch.full((len(x_test), self.n_lags, d), torch.nan))
        self.lr, self.weight_decay, self.grad_clip = float(lr), float(weight_decay), grad_clip

    def stage(self, epoch: int | None = None) -> int:
        epoch = self.current_epoch if epoch is None else epoch
        return min(int(epoch) // self.epochs_per_stage, self.n_lags - 1)

    def heads(self, epoch: int | None = None) -> dict[str, int]:
        """Heads trained in ``epoch``'s stage: name -> lag."""
        m = self.stage(epoch)
        return {"lag": m} if self.kind == "single" else {f"lag{k}": k for k in range(m + 1)}

    def _loss(self, batch):
        heads = self.heads()
        out = self.net(batch["x"], list(heads), last=True)
        total, count = batch["x"].new_zeros(()), 0
        for h, lag in heads.items():
            m = batch["mask"][:, lag]
            if m.any():
                total = total + ((out[h][m] - batch["y"][m, lag]) ** 2).sum()
                count += int(m.sum()) * out[h].shape[1]
        return total / max(count, 1), count

    def validation_step(self, batch, batch_idx):
        loss, count = self._loss(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=max(count, 1))

    def on_validation_epoch_end(self):
        # fit_run keeps the "best" epoch: here the last one, a curriculum's end state
        self.log("progress", float(self.current_epoch))
        if (self.current_epoch + 1) % self.epochs_per_stage:
            return
        m = self.stage()
        with torch.no_grad():
            x = self.x_test.to(self.device)
            if self.kind == "single":
                self.test_pred[:, m] = self.net(x, ["lag"], last=True)["lag"].float()
            elif m == self.n_lags - 1 and (self.current_epoch + 1) // self.epochs_per_stage \
                    == self.n_lags:
                out = self.net(x, list(self.heads()), last=True)
                for h, lag in self.heads().items():
                    self.test_pred[:, lag] = out[h].float()


class MemoryDecoder:
    """The memory-depth experiment of one subject (see :func:`train_memory_decoder`).

    Parameters
    ----------
    seq : TrialSequences
    features : ndarray, shape (n_stimuli, D)
        The decoded feature of every stimulus (PCA components of a layer, standardised).
    feature_ids : ndarray of str, shape (n_stimuli,)
    out_dir : path-like
        Runs go to ``out_dir/runs/<key>``.
    params : dict
        :data:`DECODER_DEFAULTS` with the study's ``train.memory_rnn`` overrides.
    cfg : TrainConfig
    """

    def __init__(self, seq: TrialSequences, features: np.ndarray, feature_ids, out_dir,
                 params: Mapping, cfg: TrainConfig):
        self.seq, self.p, self.cfg = seq, {**DECODER_DEFAULTS, **params}, cfg
        self.out_dir = Path(out_dir)
        self.n_lags = int(self.p["n_lags"])
        index = {s: i for i, s in enumerate(np.asarray(feature_ids).astype(str))}
        missing = sorted(set(seq.stim_id.tolist()) - set(index))
        if missing and self.p["target"] == "features":
            raise ValueError(f"sub-{seq.subject}: stimuli {missing[:5]} of the response table "
                             f"have no features")
        if missing:  # conditions come from the stimulus view, which may have dropped trials
            logger.warning("%s sub-%s: %d stimuli have no condition label (not in the "
                           "stimulus view); their labels are left out", FAMILY, seq.subject,
                           len(missing))
        self.L = seq.lag_stimuli(self.n_lags)
        self.L[np.isin(self.L, missing)] = ""
        self.valid = self.L != ""
        D = features.shape[1]
        self.Y = np.zeros((len(self.L), self.n_lags, D), np.float32)
        self.Y[self.valid] = features[[index[s] for s in self.L[self.valid]]]
        self.folds = memory_folds(seq.run, seq.stim_id, cfg.seed)
        self.identity = spec_hash({"subject": seq.subject, "X": _crc(seq.X), "Y": _crc(self.Y),
                                   "L": _crc(self.L.astype("U")), "params": self.p,
                                   "cfg": {k: v for k, v in vars(cfg).items()
                                           if k not in ("progress", "device")}})
        self.runs: list[dict] = []
        self.units: list[dict] = []

    def masks(self, fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fit, val, test) label masks (n_trials, n_lags) of outer fold ``fold``."""
        from ..splits import check_disjoint, validation_split

        test_run, test_stims = self.folds[fold]
        in_test = (self.seq.run == test_run)[:, None]
        is_test_label = np.isin(self.L, sorted(test_stims))
        test = in_test & is_test_label
        train = ~in_test & self.valid & ~is_test_label
        _, val_stims = validation_split(sorted(set(self.L[train].tolist())),
                                        self.cfg.val_fraction,
                                        epoch_seed(self.cfg.seed, 0, f"val:{fold}"))
        is_val = np.isin(self.L, val_stims)
        fit, val = train & ~is_val, train & is_val
        where = f"{FAMILY} sub-{self.seq.subject} fold {fold}"
        check_disjoint(self.L[fit], self.L[test], where=where)
        check_disjoint(self.L[val], self.L[test], where=where)
        check_disjoint(self.L[fit], self.L[val], where=where)
        check_disjoint(self.seq.run[~in_test[:, 0]], [test_run], what="run", where=where)
        return fit, val, test

    def _loader(self, X, mask, shuffle, key):
        rows = np.flatnonzero(mask.any(1))
        data = _TrialBatches(X, torch.from_numpy(self.Y), torch.from_numpy(mask))
        sampler = _ShuffledRows(rows, int(self.p["batch_size"]),
                                epoch_seed(self.cfg.seed, 0, f"rows:{key}"), shuffle)
        return DataLoader(data, sampler=sampler, batch_size=None, collate_fn=lambda b: b,
                          generator=torch.Generator())

    def curriculum(self, kind: str, fold: int, X: torch.Tensor, fit, val, test_rows
                   ) -> np.ndarray:
        """Train ``kind`` on fold ``fold`` (one :func:`fit_run`, see
        :class:`StreamMemoryModule`); predictions (n_test_rows, n_lags, D)."""
        from encoders.memory_rnn import MemoryRNN

        p, D = self.p, self.Y.shape[2]
        key = spec_hash({"identity": self.identity, "fold": fold, "kind": kind})
        torch.manual_seed(epoch_seed(self.cfg.seed, 0, f"init:{key}"))
        heads = ["lag"] if kind == "single" else [f"lag{m}" for m in range(self.n_lags)]
        net = MemoryRNN(X.shape[2], int(p["n_units"]), heads=heads, n_outputs=D,
                        nonlinearity=p["nonlinearity"], tau_init=p["tau_init"])
        eps = int(p["epochs_per_stage"])
        lr = self.cfg.lr if p["lr"] is None else float(p["lr"])
        module = StreamMemoryModule(net, kind, self.n_lags, eps, X[test_rows], lr=lr,
                                    weight_decay=self.cfg.weight_decay,
                                    grad_clip=p["grad_clip"])
        n_epochs = eps * self.n_lags
        run_cfg = replace(self.cfg, max_epochs=n_epochs, patience=n_epochs + 1,
                          monitor="progress", monitor_mode="max")
        info = fit_run(module, self._loader(X, fit, True, key), self._loader(X, val, False, key),
                       self.out_dir / "runs" / key, run_cfg,
                       name=f"{FAMILY} sub-{self.seq.subject} fold {fold} {kind}")
        self.runs.append({"run": f"sub-{self.seq.subject}/fold{fold}/{kind}",
                          "dir": f"runs/{key}", **info})
        tau = net.tau.detach().cpu().numpy()
        self.units += [{"subject": self.seq.subject, "curriculum": kind, "fold": fold,
                        "unit": i, "tau": float(t)} for i, t in enumerate(tau)]
        return module.test_pred.cpu().numpy().copy()

    def run(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Held-out predictions of every curriculum, and the test-label mask.

        Returns
        -------
        test : ndarray of bool, shape (n_trials, n_lags)
        preds : dict of str to ndarray, shape (n_trials, n_lags, D)
        """
        X = self.seq.X
        test_all = np.zeros_like(self.valid)
        preds = {k: np.full(self.Y.shape, np.nan, np.float32) for k in self.p["curricula"]}
        for fold, (test_run, _) in enumerate(self.folds):
            fit, val, test = self.masks(fold)
            train_rows = self.seq.run != test_run
            mu = X[train_rows].mean(axis=(0, 1))
            sd = X[train_rows].std(axis=(0, 1))
            Xz = torch.from_numpy(((X - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32))
            rows = np.flatnonzero(~train_rows)
            for kind in self.p["curricula"]:
                preds[kind][rows] = self.curriculum(kind, fold, Xz, fit, val, rows)
            test_all |= test
        return test_all, preds

    def score(self, test: np.ndarray, preds: Mapping[str, np.ndarray]) -> list[dict]:
        """Held-out r per curriculum and lag, with its circular-shift null.

        ``r``: mean over feature components of the Pearson r between decoded and true
        features over the test trials of every fold, each test run centred on its own
        (a run's test trials come from one fold's model: only the decoding within runs
        is scored, not differences of means between the folds' models). Null: the true
        features circularly shifted among the test trials of each run, by at least
        ``n_lags`` trials so that a shift never lands on another measured lag,
        ``n_permutations`` times, scored the same way (the FFT cross-correlations of
        :mod:`brainhead.align.timeseries`). ``p``: the permutation p-value;
        ``null_low``/``null_high``: the null's 2.5 and 97.5 percentiles. Runs with no
        more than ``2 * n_lags`` test trials at a lag are left out of that lag's score.
        """
        from ..align.timeseries import _circular_shift_blocks

        n_perm, lo = int(self.p["n_permutations"]), self.n_lags
        rows = []
        for kind, pred in preds.items():
            rng = np.random.default_rng(epoch_seed(self.cfg.seed, 0, f"null:{kind}"))
            for m in range(self.n_lags):
                idx = np.flatnonzero(test[:, m] & np.isfinite(pred[:, m]).all(1))
                runs = self.seq.run[idx]
                starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
                segments = [slice(a, b) for a, b in zip(starts, np.r_[starts[1:], len(idx)])]
                segments = [s for s in segments if s.stop - s.start > 2 * lo]
                row = {"subject": self.seq.subject, "curriculum": kind, "lag": m, "r": np.nan,
                       "n_trials": 0, "null_mean": np.nan, "null_low": np.nan,
                       "null_high": np.nan, "p": np.nan}
                if segments:
                    keep = idx[np.concatenate([np.arange(s.start, s.stop) for s in segments])]
                    bounds = np.cumsum([0] + [s.stop - s.start for s in segments])
                    segs = [slice(a, b) for a, b in itertools.pairwise(bounds)]
                    zp = _zscore_within(pred[keep, m], segs)
                    zy = _zscore_within(self.Y[keep, m], segs)
                    r = float(np.nanmean((zp * zy).sum(0)))
                    shifts = [rng.integers(lo, s.stop - s.start - lo + 1, n_perm) for s in segs]
                    null = np.zeros((n_perm, zp.shape[1]))
                    for cols, r_null in _circular_shift_blocks(np.nan_to_num(zp),
                                                               np.nan_to_num(zy), segs, shifts):
                        null[:, cols] = r_null
                    null = np.nanmean(np.where(np.isnan(zp).all(0) | np.isnan(zy).all(0),
                                               np.nan, null), axis=1)
                    row.update(r=r, n_trials=len(keep), null_mean=float(null.mean()),
                               null_low=float(np.quantile(null, 0.025)),
                               null_high=float(np.quantile(null, 0.975)),
                               p=float((1 + (null >= r).sum()) / (1 + n_perm)))
                rows.append(row)
        return rows


def _zscore_within(a: np.ndarray, segments: list[slice]) -> np.ndarray:
    """Columns centred within each segment, then scaled to unit norm over all rows (so
    that the sum of products of two such arrays is a Pearson r of within-segment
    deviations, and a circular shift within segments keeps means and norms)."""
    a = np.asarray(a, dtype=np.float64).copy()
    for seg in segments:
        a[seg] -= a[seg].mean(0)
    norm = np.sqrt((a ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, a / norm, np.nan)


def memory_depth(curve: list[dict], alpha: float) -> int:
    """Largest lag ``d`` such that every lag ``0..d`` has ``p < alpha`` (-1 if lag 0 fails)."""
    depth = -1
    for row in sorted(curve, key=lambda r: r["lag"]):
        if not (row["p"] < alpha):
            break
        depth = row["lag"]
    return depth


def _crc(a: np.ndarray) -> int:
    import zlib

    return zlib.crc32(np.ascontiguousarray(a).tobytes())


def stimulus_features(features: np.ndarray, layer: int | None, n_components: int | None
                      ) -> np.ndarray:
    """The decoded feature of every stimulus: ``layer``'s first principal components
    (fitted on the stimuli's features, never on responses), each standardised.

    Parameters
    ----------
    features : ndarray, shape (n_layers, n_stimuli, dim)
    layer : int or None
        None takes the middle layer (``n_layers // 2``).
    """
    from ..align.timeseries import reduce_features

    n_layers = features.shape[0]
    layer = n_layers // 2 if layer is None else int(layer)
    if not 0 <= layer < n_layers:
        raise ValueError(f"train.memory_rnn.layer={layer} is not one of the model's "
                         f"{n_layers} layers (0..{n_layers - 1})")
    F_ = reduce_features(np.asarray(features[layer], np.float64), n_components)
    F_ = F_ - F_.mean(0)
    sd = F_.std(0)
    return (F_ / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def condition_targets(table) -> tuple[np.ndarray, np.ndarray]:
    """The condition of every stimulus as standardised indicator columns (one per
    condition), from the ``y`` of the table's ``stimulus`` view: decoding them is
    regression on the indicators, scored by Pearson r (point-biserial) like features.

    Returns
    -------
    Y : ndarray, shape (n_stimuli, n_conditions)
    stim_ids : ndarray of str, shape (n_stimuli,)
    """
    where = f"sub-{table.subject} ({table.modality})"
    rows = table.view("stimulus").rows
    if "y" not in rows:
        raise ValueError(f"{where}: train.memory_rnn.target is 'condition' but the stimulus "
                         "view has no condition labels (rows['y'])")
    pairs = dict(zip(np.asarray(rows["stim_id"]).astype(str), np.asarray(rows["y"]).astype(str)))
    ids = np.array(sorted(pairs))
    labels = np.array([pairs[s] for s in ids])
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"{where}: target 'condition' needs at least 2 conditions, got "
                         f"{classes.tolist()}")
    Y = (labels[:, None] == classes[None, :]).astype(np.float64)
    Y = (Y - Y.mean(0)) / Y.std(0)
    return Y.astype(np.float32), ids


def decode_subject(seq: TrialSequences, features: np.ndarray, feature_ids, out_dir,
                   params: Mapping, cfg: TrainConfig) -> dict:
    """Memory-depth curves of one subject: per curriculum and lag, held-out r and null.

    Returns
    -------
    result : dict
        ``curve`` (rows of :meth:`MemoryDecoder.score`), ``depth`` (curriculum -> depth),
        ``units`` (tau of every unit per curriculum and fold), ``runs``.
    """
    exp = MemoryDecoder(seq, features, feature_ids, out_dir, params, cfg)
    test, preds = exp.run()
    curve = exp.score(test, preds)
    depth = {kind: memory_depth([r for r in curve if r["curriculum"] == kind], exp.p["alpha"])
             for kind in exp.p["curricula"]}
    return {"curve": curve, "depth": depth, "units": exp.units, "runs": exp.runs}


def train_memory_decoder(response_paths, features_path, out_dir, params: dict, *,
                         seed: int = 0, model: str = "", transfer_subject=None) -> dict:
    """Memory-depth curves of every subject of one modality (train family ``memory_rnn``).

    Each subject's trials are read as short sequences (:class:`TrialSequences`); a
    :class:`~encoders.memory_rnn.MemoryRNN` per subject, fold and curriculum reads out
    the features (``train.memory_rnn``: PCA components of ``layer``; or, with ``target:
    condition``, the condition, :func:`condition_targets`) of the stimulus presented
    0..n_lags-1 trials back. Writes, in ``out_dir``
    (``results/<study>/models/memory_rnn/<modality>``):

    ``memory_depth.tsv``
        subject, curriculum, lag, r (held out), null_mean/null_low/null_high (circular
        shifts), p, n_trials.
    ``depth.tsv``
        Per subject and curriculum, the memory depth (largest lag with every lag up to
        it significant at ``alpha``), the view read and the units' mean tau.
    ``units.tsv``
        Every unit's trained tau per subject, curriculum and fold.
    ``summary.json``, ``runs/<key>/``
        Settings, runs (:func:`fit_run` folders), seconds.

    ``transfer_subject`` is accepted for the families' common signature and unused.
    """
    import json

    import pandas as pd

    from .._logging import progress
    from ..features import read_features
    from ..io.store import atomic_path, read_responses

    start = time.perf_counter()
    out_dir = Path(out_dir)
    cfg = TrainConfig.from_params(params, seed)
    p = {**DECODER_DEFAULTS, **{k: v for k, v in params.get(FAMILY, {}).items()
                                if k in DECODER_DEFAULTS}}
    if p["target"] not in ("features", "condition"):
        raise ValueError(f"train.memory_rnn.target must be 'features' or 'condition', got "
                         f"{p['target']!r}")
    tables = [read_responses(path) for path in response_paths]
    targets = {}
    if p["target"] == "features":
        features, feature_ids, _ = read_features(features_path)
        F_ = stimulus_features(features["trained"], p["layer"], p["n_components"])
        targets = {t.subject: (F_, feature_ids) for t in tables}
    else:
        targets = {t.subject: condition_targets(t) for t in tables}
    seqs = [TrialSequences.from_table(t, p["window_s"], p["bin_s"]) for t in tables]
    modality = sorted({s.modality for s in seqs})
    curve, depth, units, runs = [], [], [], []
    for seq in progress(seqs, desc=f"{FAMILY} {'/'.join(modality)}"):
        res = decode_subject(seq, *targets[seq.subject], out_dir, p, cfg)
        curve += res["curve"]
        units += res["units"]
        runs += res["runs"]
        for kind, d in res["depth"].items():
            taus = [u["tau"] for u in res["units"] if u["curriculum"] == kind]
            depth.append({"subject": seq.subject, "curriculum": kind, "depth": d,
                          "n_lags": p["n_lags"], "view": seq.source,
                          "n_trials": len(seq.stim_id), "tau_mean": float(np.mean(taus))})
        logger.info("%s sub-%s (%s view): memory depth %s", FAMILY, seq.subject, seq.source,
                    res["depth"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("memory_depth.tsv", curve), ("depth.tsv", depth), ("units.tsv", units)):
        frame = pd.DataFrame(rows).assign(modality="/".join(modality), model=model)
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, sep="\t", index=False)
    summary = {"family": FAMILY, "modality": "/".join(modality), "model": model,
               "subjects": [s.subject for s in seqs], "depth": depth,
               "settings": {**vars(cfg), FAMILY: p}, "runs": runs,
               "seconds": round(time.perf_counter() - start, 2)}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary
