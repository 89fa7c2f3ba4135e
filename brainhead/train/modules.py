"""LightningModules that wrap the plain ``encoders`` models with their losses and metrics."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EncoderModule", "encoding_loss"]


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


class EncoderModule(pl.LightningModule):
    """Train a model ``net(features, subject, targets) -> (B, S)`` on planned batches.

    Parameters
    ----------
    net : nn.Module
        e.g. :class:`encoders.voxel_xattn.VoxelCrossAttention`.
    lr, weight_decay : float
        AdamW settings.
    cosine_weight : float
        Weight of the cosine term of :func:`encoding_loss`.
    trainable : sequence of str, optional
        Train only these subjects' own parameters (new-subject transfer); everything
        else is frozen (``requires_grad=False``) and left out of the optimiser.
    subject_lr_scale : float
        Learning-rate multiplier of the per-subject parameters (target embeddings and
        read-outs), which each see only their own targets' gradients.
    """

    def __init__(self, net: nn.Module, *, lr: float = 3e-3, weight_decay: float = 1e-4,
                 cosine_weight: float = 0.0, trainable: Sequence[str] | None = None,
                 subject_lr_scale: float = 1.0):
        super().__init__()
        self.net = net
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.cosine_weight = float(cosine_weight)
        self.subject_lr_scale = float(subject_lr_scale)
        self.trainable = list(trainable) if trainable is not None else None
        if self.trainable is not None:
            net.freeze_shared(self.trainable)

    def forward(self, features, subject, targets=None, **kwargs):
        return self.net(features, subject, targets, **kwargs)

    def training_step(self, batch, batch_idx):
        pred = self.net(batch["features"], batch["subject"], batch["targets"])
        loss = encoding_loss(pred, batch["y"], self.cosine_weight)
        self.log("train_loss", loss, on_step=False, on_epoch=True,
                 batch_size=batch["y"].numel())
        return loss

    def validation_step(self, batch, batch_idx):
        pred = self.net(batch["features"], batch["subject"], batch["targets"])
        loss = F.mse_loss(pred.float(), batch["y"].float())
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=batch["y"].numel())

    def configure_optimizers(self):
        own = {id(p) for s in self.net.subjects for p in self.net.subject_parameters(s)}
        shared = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        subject = [p for p in self.parameters() if p.requires_grad and id(p) in own]
        groups = [{"params": shared, "lr": self.lr},
                  {"params": subject, "lr": self.lr * self.subject_lr_scale}]
        return torch.optim.AdamW([g for g in groups if g["params"]],
                                 weight_decay=self.weight_decay)
