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
"""

from __future__ import annotations

import copy
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
    network_timescales,
    one_hot,
    task_batch,
    task_inputs,
)
from .trainer import TrainConfig, epoch_seed, fit_run

__all__ = ["CURRICULUM_DEFAULTS", "MemoryTaskModule", "evaluate_task", "run_curriculum",
           "task_loaders", "unit_timescales"]

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


class MemoryTaskModule(pl.LightningModule):
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

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["x"]))
        return loss

    def on_before_optimizer_step(self, optimizer):
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)

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

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


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
        out = net.states(torch.from_numpy(one_hot(x)))[:, -1]
        for h, n in heads.items():
            by_head[h] = net.heads[h](out).argmax(-1).numpy()
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
    h = net.states(torch.from_numpy(one_hot(x)))[:, burn_in:].numpy()
    net.train(was_training)
    return network_timescales(h, max_lag=max_lag)


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
        tau = net.tau.detach().numpy().astype(float)
        timescales = unit_timescales(net, seed=cfg.seed)
        ready = curriculum.ready(val)
        stages.append({"task": task, "curriculum": kind, "N": curriculum.n,
                       "epochs": int(info["epochs"]),
                       "steps": int(info["epochs"]) * int(p["steps_per_epoch"]),
                       "learned": bool(ready), "val_acc_mean": float(np.mean(list(val.values()))),
                       "val_acc_newest": float(val[curriculum.newest]),
                       "tau_mean": float(tau.mean()), "tau_max": float(tau.max()),
                       "net_timescale_mean": float(np.nanmean(timescales)),
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
    heads = dict(curriculum.heads)
    if kind == "single":
        final = evaluate_task(net, task, {"n": heads["n"]}, seed=cfg.seed, stream="final")
        # the one head, asked the first depth again (trained on it only in stage 1)
        forget = evaluate_task(net, task, {"n": curriculum.n_start}, seed=cfg.seed,
                               stream="final")["n"]
        final = {**final, "single_at_n_start": forget}
    else:
        trained = {h: n for h, n in heads.items() if h in net.heads}
        final = evaluate_task(net, task, trained, seed=cfg.seed, stream="final")
    return {"task": task, "curriculum": kind, "n_reached": n_reached, "stages": stages,
            "units": units, "final_accuracy": final, "steps": steps,
            "settings": p, "seconds": round(time.perf_counter() - start, 2)}
