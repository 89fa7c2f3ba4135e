"""One training run on Lightning: device, precision, checkpoints, resume, early stopping.

Every model family trains through :func:`fit_run`. A run lives in its own folder::

    <run_dir>/checkpoints/last.ckpt    written every epoch (atomically)
    <run_dir>/checkpoints/best.ckpt    the epoch with the lowest validation loss
    <run_dir>/metrics.csv              one row per epoch (train and validation loss)
    <run_dir>/done.json                written last: the run is complete

Rerunning a run whose folder has ``last.ckpt`` but no ``done.json`` resumes from the last
complete checkpoint; a complete run is not trained again. Randomness is a function of
(seed, epoch) (:func:`epoch_seed`), and the module's per-epoch history is part of the
checkpoint, so a run killed at any point and resumed ends with the same weights, metrics
and predictions as an uninterrupted run on the CPU.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from .._logging import logger
from ..io.store import atomic_path
from .checkpoints import SafeCheckpointIO, load_checkpoint

__all__ = ["EpochHistory", "TrainConfig", "epoch_seed", "fit_run", "resolve_device"]


def epoch_seed(seed: int, epoch: int, stream: str = "") -> int:
    """A 32-bit seed derived from (seed, epoch, stream): the same after a resume."""
    key = np.random.SeedSequence([int(seed), int(epoch), zlib.crc32(stream.encode())])
    return int(key.generate_state(1)[0])


def resolve_device(device: str = "auto") -> str:
    """``"cuda"`` when asked for (or ``"auto"`` and available), else ``"cpu"``."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no CUDA device")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class TrainConfig:
    """The study's ``train`` settings that every run uses (see the study schema)."""

    max_epochs: int = 60
    patience: int = 8
    batch_size: int = 32
    min_steps_per_epoch: int = 20
    monitor: str = "val_r"
    monitor_mode: str = "max"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    progress: bool = field(default_factory=lambda: not os.environ.get("BRAINHEAD_NO_PROGRESS"))

    @classmethod
    def from_params(cls, params: dict, seed: int) -> TrainConfig:
        """Build from a validated ``train`` section (unknown keys are ignored here)."""
        names = cls.__dataclass_fields__
        kwargs = {k: v for k, v in params.items() if k in names and k not in ("seed",)}
        return cls(seed=int(params.get("seed") if params.get("seed") is not None else seed),
                   **kwargs)

    @property
    def single_process(self) -> bool:
        """One device on one node: the run is this one process (no DDP processes)."""
        return self.devices == 1 and self.num_nodes == 1

    def precision_for(self, accelerator: str) -> str:
        """bf16-mixed on CUDA, fp32 on the CPU, unless set explicitly."""
        if self.precision != "auto":
            return self.precision
        return "bf16-mixed" if accelerator == "cuda" else "32-true"


class EpochHistory(Callback):
    """Per-epoch metrics kept in the checkpoint, so a resumed run's table is exact.

    Lightning validates inside the training epoch, so at ``on_train_epoch_end`` both
    the epoch's training and validation losses are known; the checkpoint of the epoch
    is written after this hook (``save_on_train_epoch_end``) and includes the row.
    """

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        row = {"epoch": int(trainer.current_epoch)}
        for key, value in trainer.callback_metrics.items():
            row[key] = float(value)
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    def state_dict(self):
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict):
        self.rows = [dict(r) for r in state_dict["rows"]]


class _EpochSeeding(Callback):
    """Seed torch's global generator from (seed, epoch) at the start of every epoch."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module):
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch, "torch"))


def _quiet_lightning(single_process: bool = True) -> None:
    """Keep Lightning's start-up banners (devices, tips) out of the job logs.

    With ``single_process`` also its hint to launch through ``srun`` wherever SLURM's
    tools are installed: a job on one device is one process, however it was placed
    (on a cluster the Snakemake executor places it). Several GPUs or nodes keep the
    hint, since there ``srun`` is how Lightning's processes are started.
    """
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    if single_process:
        warnings.filterwarnings("ignore", message=".*`srun` command is available.*")


def _write_metrics(rows: list[dict], path: Path) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def fit_run(module: pl.LightningModule, train_loader, val_loader, run_dir: str | os.PathLike,
            cfg: TrainConfig, *, name: str = "") -> dict:
    """Train ``module`` in ``run_dir`` (resuming if a previous attempt was cut short).

    On return ``module`` holds the weights of the best validation epoch.

    Parameters
    ----------
    module : LightningModule
        Defines ``training_step``, ``validation_step`` (logging ``val_loss``) and
        ``configure_optimizers``.
    train_loader, val_loader : iterable
        Dataloaders; a sampler with ``set_epoch`` gets the epoch from Lightning.
    run_dir : path-like
    cfg : TrainConfig

    Returns
    -------
    info : dict
        ``epochs`` (trained), ``best_epoch``, ``best_val_loss``, ``resumed`` (bool),
        ``seconds`` and the device, as also written to ``done.json``.
    """
    run_dir = Path(run_dir)
    done = run_dir / "done.json"
    ckpt_dir = run_dir / "checkpoints"
    if done.is_file():
        info = json.loads(done.read_text())
        state = load_checkpoint(ckpt_dir / info.get("checkpoint", "best.ckpt"))
        module.load_state_dict(state["state_dict"])
        return {**info, "reused": True}
    run_dir.mkdir(parents=True, exist_ok=True)
    _quiet_lightning(single_process=cfg.single_process)
    accelerator = resolve_device(cfg.device)
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.is_file() else None
    if resume:
        load_checkpoint(last)  # refuse an unsafe file before Lightning touches it
        logger.info("%s: resuming from %s", name or run_dir.name, last)
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=cfg.monitor,
                                 mode=cfg.monitor_mode, save_top_k=1, save_last=False,
                                 save_on_train_epoch_end=True, enable_version_counter=False)
    # Lightning's save_last writes only in epochs that improved: a separate, unmonitored
    # checkpoint is written at the end of every epoch.
    every_epoch = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None,
                                  save_top_k=1, save_on_train_epoch_end=True,
                                  enable_version_counter=False)
    history = EpochHistory()
    callbacks = [_EpochSeeding(cfg.seed), history,
                 EarlyStopping(monitor=cfg.monitor, mode=cfg.monitor_mode,
                               patience=cfg.patience),
                 checkpoint, every_epoch]
    trainer = pl.Trainer(
        accelerator=accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, precision=cfg.precision_for(accelerator),
        max_epochs=cfg.max_epochs, callbacks=callbacks, plugins=[SafeCheckpointIO()],
        deterministic=True if accelerator == "cpu" else "warn", logger=False,
        enable_progress_bar=cfg.progress, enable_model_summary=False,
        num_sanity_val_steps=0, use_distributed_sampler=False, default_root_dir=run_dir)
    start = time.perf_counter()
    torch.manual_seed(epoch_seed(cfg.seed, 0, "fit-start"))
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                ckpt_path=resume)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    module.load_state_dict(load_checkpoint(best)["state_dict"])
    _write_metrics(history.rows, run_dir / "metrics.csv")
    sign = 1.0 if cfg.monitor_mode == "min" else -1.0
    scores = [sign * r.get(cfg.monitor, np.inf) for r in history.rows]
    best_row = history.rows[int(np.argmin(scores))] if scores else {}
    info = {"name": name, "epochs": len(history.rows),
            "best_epoch": int(best_row.get("epoch", -1)),
            f"best_{cfg.monitor}": float(best_row.get(cfg.monitor, np.nan)),
            "resumed": bool(resume), "seconds": round(time.perf_counter() - start, 3),
            "checkpoint": best.name, "device": accelerator, "precision": cfg.precision_for(accelerator)}
    if trainer.is_global_zero:
        with atomic_path(done) as tmp:
            tmp.write_text(json.dumps(info, indent=2))
    return info
