"""LightningModules that wrap the plain ``encoders`` models with their losses and metrics."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DecoderModule", "EncoderModule", "encoding_loss", "info_nce"]


def encoding_loss(pred: torch.Tensor, y: torch.Tensor, cosine_weight: float = 0.0
                  ) -> torch.Tensor:
    """MSE, plus ``cosine_weight`` times (1 - cosine similarity) across targets.

    Parameters
    ----------
    pred, y : Tensor, shape (B, S)
    """
    loss = F.mse_loss(pred.float(), y.float())
    if cosine_weight:
        cos = F.cosine_similarity(pred.float(), y.float(), dim=1, eps=1e-6)
        loss = loss + cosine_weight * (1.0 - cos).mean()
    return loss


def info_nce(pred: torch.Tensor, target: torch.Tensor, temperature: torch.Tensor | float
             ) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss) between matching rows of ``pred`` and ``target``.

    Rows are L2-normalised; the logits are their cosine similarities over
    ``temperature``; row ``i`` of ``pred`` should pick row ``i`` of ``target`` among all
    rows of the batch, and the other way round. The loss is the mean of the two
    cross-entropies.

    Parameters
    ----------
    pred, target : Tensor, shape (B, D)
    temperature : float or 0-d Tensor, > 0
    """
    p = F.normalize(pred.float(), dim=1)
    t = F.normalize(target.float(), dim=1)
    logits = p @ t.T / temperature
    labels = torch.arange(len(p), device=p.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def _pearson_sums(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(6, S) running sums of one batch for per-column Pearson r (float64)."""
    p, q = pred.double(), y.double()
    return torch.stack([torch.ones_like(p).sum(0), p.sum(0), q.sum(0), (p * p).sum(0),
                        (q * q).sum(0), (p * q).sum(0)])


def _pearson_from_sums(sums: torch.Tensor) -> torch.Tensor:
    """Per-column Pearson r from :func:`_pearson_sums` totals (columns seen twice or more;
    a constant column counts as 0)."""
    n, sp, sy, spp, syy, spy = sums
    cov = spy - sp * sy / n
    var = (spp - sp**2 / n) * (syy - sy**2 / n)
    r = torch.where(var > 0, cov / var.clamp_min(1e-30).sqrt(), torch.zeros_like(cov))
    return r[n > 1]


class EncoderModule(pl.LightningModule):
    """Train a model ``net(features, subject, targets) -> (B, S)`` on planned batches.

    Parameters
    ----------
    net : nn.Module
        e.g. :class:`encoders.voxel_xattn.VoxelCrossAttention`.
    lr, weight_decay : float
        AdamW settings of the shared parameters (per-target ones: SparseAdam, no decay).
    cosine_weight : float
        Weight of the cosine term of :func:`encoding_loss`.
    trainable : sequence of str, optional
        Train only these subjects' own parameters (new-subject transfer); everything
        else is frozen (``requires_grad=False``) and left out of the optimiser.
    subject_lr_scale : float
        Learning-rate multiplier of the per-subject parameters (target embeddings and
        read-outs), which each see only their own targets' gradients.
    sparse_targets : bool
        Sparse gradients and a lazy Adam for the per-target parameters (for when a step
        samples some of a subject's targets). False: dense gradients and a fused Adam,
        faster when every step covers all targets. Both are Adam without decay and take
        the same steps, except for gradients near Adam's eps, which the two scale
        differently in the bias correction.
    """

    def __init__(self, net: nn.Module, *, lr: float = 3e-3, weight_decay: float = 1e-4,
                 cosine_weight: float = 0.0, trainable: Sequence[str] | None = None,
                 subject_lr_scale: float = 1.0, sparse_targets: bool = True):
        super().__init__()
        self.net = net
        self.sparse_targets = bool(sparse_targets)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.cosine_weight = float(cosine_weight)
        self.subject_lr_scale = float(subject_lr_scale)
        self.automatic_optimization = False  # two optimisers, one step each
        if hasattr(net, "sparse_targets"):
            net.sparse_targets = self.sparse_targets
        self.trainable = list(trainable) if trainable is not None else None
        if self.trainable is not None:
            net.freeze_shared(self.trainable)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Move the batch's tensors; on the CPU there is nothing to move.

        Lightning's generic move walks the whole batch at every step (a few ms each,
        7% of a demo training job on the CPU).
        """
        if device.type == "cpu":
            return batch
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def forward(self, features, subject, targets=None, **kwargs):
        return self.net(features, subject, targets, **kwargs)

    def training_step(self, batch, batch_idx):
        targets = batch["targets"]
        if targets is None:  # index every target: per-target gradients stay sparse
            targets = torch.arange(batch["y"].shape[1], device=batch["y"].device)
        pred = self.net(batch["features"], batch["subject"], targets)
        loss = encoding_loss(pred, batch["y"], self.cosine_weight)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            opt.zero_grad()
        self.manual_backward(loss)
        for opt in optimizers:
            opt.step()
        self.log("train_loss", loss, on_step=False, on_epoch=True,
                 batch_size=batch["y"].numel())
        return loss

    def on_validation_epoch_start(self):
        self._val_sums: dict[str, torch.Tensor] = {}

    def validation_step(self, batch, batch_idx):
        pred = self.net(batch["features"], batch["subject"], batch["targets"]).float()
        y = batch["y"].float()
        loss = F.mse_loss(pred, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=y.numel())
        # Streaming sums for each target's Pearson r over all validation stimuli.
        subject = batch["subject"]
        n_t = self.net.n_targets(subject)
        if subject not in self._val_sums:
            self._val_sums[subject] = torch.zeros(6, n_t, device=pred.device, dtype=torch.float64)
        t = (batch["targets"] if batch["targets"] is not None
             else torch.arange(n_t, device=pred.device))
        self._val_sums[subject].index_add_(1, t, _pearson_sums(pred, y))

    def on_validation_epoch_end(self):
        """``val_r``: mean over every target of its Pearson r on the validation stimuli.

        Early stopping watches it (not the MSE): with few training stimuli the first
        steps already over-scale the predictions, so the validation MSE can rise while
        the correlation that the scores report is still improving.
        """
        rs = []
        for sums in self._val_sums.values():
            rs.append(_pearson_from_sums(self.trainer.strategy.reduce(sums, reduce_op="sum")))
        if rs:
            self.log("val_r", torch.cat(rs).mean().float())

    def configure_optimizers(self):
        """AdamW for the shared parameters, a lazy (sparse) Adam for per-target ones.

        A step samples some targets of one subject; the per-target tables get sparse
        gradients, and SparseAdam updates those rows alone (their moments too), so a
        target that was not sampled does not move and the step's time and memory do not
        grow with the number of targets (benchmarks/train_throughput.py).
        """
        own = {id(p) for s in self.net.subjects for p in self.net.subject_parameters(s)}
        shared = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        subject = [p for p in self.parameters() if p.requires_grad and id(p) in own]
        optimizers = []
        if shared:
            # fused: one kernel per parameter group instead of one per tensor and operation
            optimizers.append(torch.optim.AdamW(shared, lr=self.lr,
                                                weight_decay=self.weight_decay, fused=True))
        if subject and self.sparse_targets:
            optimizers.append(torch.optim.SparseAdam(subject,
                                                     lr=self.lr * self.subject_lr_scale))
        elif subject:
            optimizers.append(torch.optim.Adam(subject, lr=self.lr * self.subject_lr_scale,
                                               fused=True))
        return optimizers


class DecoderModule(pl.LightningModule):
    """Train ``net(responses, subject) -> (B, n_layers * D)`` to decode layer features.

    Batches are those of :func:`brainhead.train.data.loader` with every target
    (``n_sampled_targets=None``): ``y`` (B, T) is the input, ``features[:, layers]``
    (B, n_layers, D) the target; the output is read as one block of ``D`` per layer. Loss,
    averaged over layers: MSE plus ``contrastive_weight`` times :func:`info_nce` at a
    temperature that is learnt (as a log, kept in [0.01, 1]) or fixed. ``val_r`` is the
    mean over layers and feature dimensions of the Pearson r across validation stimuli.

    Parameters
    ----------
    net : nn.Module
        e.g. :class:`encoders.adapters.AdapterDecoder`.
    layers : sequence of int
        Indices of the decoded layers in the batches' features.
    lr, weight_decay : float
        AdamW settings.
    contrastive_weight : float
    temperature : float
        Initial (or fixed) temperature.
    learn_temperature : bool
    trainable : sequence of str, optional
        Train only these subjects' adapters (reset-tuning); everything else, the
        temperature included, is frozen and left out of the optimiser.
    """

    def __init__(self, net: nn.Module, *, layers: Sequence[int], lr: float = 1e-3,
                 weight_decay: float = 1e-2, contrastive_weight: float = 1.0,
                 temperature: float = 0.07, learn_temperature: bool = True,
                 trainable: Sequence[str] | None = None):
        super().__init__()
        if not 0.01 <= temperature <= 1.0:
            raise ValueError(f"temperature must be in [0.01, 1], got {temperature}")
        self.net, self.layers = net, [int(k) for k in layers]
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.contrastive_weight = float(contrastive_weight)
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(temperature))),
                                            requires_grad=bool(learn_temperature))
        self.trainable = list(trainable) if trainable is not None else None
        if self.trainable is not None:
            net.freeze_shared(self.trainable)
            self.log_temperature.requires_grad_(False)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.clamp(float(np.log(0.01)), 0.0).exp()

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if device.type == "cpu":
            return batch
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def forward(self, y, subject):
        """Decoded features, (B, n_layers, D)."""
        return self.net(y, subject).unflatten(1, (len(self.layers), -1))

    def target(self, batch) -> torch.Tensor:
        return batch["features"][:, self.layers]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over layers of MSE + weighted InfoNCE; pred, target (B, n_layers, D)."""
        loss = F.mse_loss(pred.float(), target.float())
        if self.contrastive_weight and len(pred) > 1:
            nce = torch.stack([info_nce(pred[:, k], target[:, k], self.temperature)
                               for k in range(pred.shape[1])]).mean()
            loss = loss + self.contrastive_weight * nce
        return loss

    def training_step(self, batch, batch_idx):
        pred = self(batch["y"], batch["subject"])
        loss = self.loss(pred, self.target(batch))
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(pred))
        return loss

    def on_validation_epoch_start(self):
        self._val_sums = None

    def validation_step(self, batch, batch_idx):
        pred = self(batch["y"], batch["subject"]).float().flatten(1)
        target = self.target(batch).float().flatten(1)
        self.log("val_loss", F.mse_loss(pred, target), on_step=False, on_epoch=True,
                 sync_dist=True, batch_size=len(pred))
        sums = _pearson_sums(pred, target)
        self._val_sums = sums if self._val_sums is None else self._val_sums + sums

    def on_validation_epoch_end(self):
        if self._val_sums is not None:
            sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
            self.log("val_r", _pearson_from_sums(sums).mean().float())

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
