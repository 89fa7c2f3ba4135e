"""Baselines of a decoding study, beside the electrode attention model on the same folds.

Every model here has one interface, ``fit(X, y, val=None)``, ``predict_proba(X)`` and
``classes_`` (sorted labels), on the raw epochs ``X`` of shape (n_rows, n_channels,
n_times) in microvolts:

- ``csp_lda``: CSP log-variance features (:class:`mne.decoding.CSP`, Ledoit-Wolf
  regularised) and LDA; two classes only.
- ``tangent_lr``: OAS covariances, tangent space at their Riemannian mean
  (:mod:`pyriemann`) and logistic regression.
- ``logvar_lda``: log-variance of each channel and shrinkage LDA.
- ``shallow_convnet``: :class:`encoders.shallow_convnet.ShallowConvNet`, trained through
  :func:`brainhead.train.trainer.fit_run` with early stopping on ``val`` (a validation
  split from the training side only; the scikit-learn baselines have no early stopping
  and fit every training row).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

__all__ = ["BASELINES", "ShallowConvNetClassifier", "make_baseline"]

#: Baselines that read the raw epochs, and the ones limited to two classes.
BASELINES = ("csp_lda", "tangent_lr", "logvar_lda", "shallow_convnet")
BINARY_ONLY = ("csp_lda",)


class _SklearnBaseline:
    """A scikit-learn pipeline behind the decoding interface (``val`` is not used)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def fit(self, X, y, val=None):
        from mne.utils import use_log_level

        with use_log_level("error"):  # CSP's rank and covariance messages
            self.pipeline.fit(np.asarray(X, np.float64), np.asarray(y, str))
        self.classes_ = np.asarray(self.pipeline.classes_, str)
        return self

    def predict_proba(self, X) -> np.ndarray:
        from mne.utils import use_log_level

        with use_log_level("error"):
            return self.pipeline.predict_proba(np.asarray(X, np.float64))


def _log_variance(X):
    return np.log(np.maximum(np.var(X, axis=-1), np.finfo(float).tiny))


def make_baseline(name: str, settings: dict, *, sfreq: float, seed: int = 0,
                  run_dir=None, device: str = "auto"):
    """A fresh baseline estimator.

    Parameters
    ----------
    name : str
        One of :data:`BASELINES`.
    settings : dict
        The study's ``decode`` section (``csp`` and ``shallow_convnet`` are read).
    sfreq : float
        Rate of the epochs (Hz).
    seed : int
    run_dir : path-like | None
        Training folder of the shallow ConvNet (checkpoints; resumed when rerun).
    device : str
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis as LDA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    if name == "csp_lda":
        from mne.decoding import CSP

        csp = CSP(n_components=settings["csp"]["n_components"], reg="ledoit_wolf", log=True)
        return _SklearnBaseline(make_pipeline(csp, LDA()))
    if name == "tangent_lr":
        from pyriemann.estimation import Covariances
        from pyriemann.tangentspace import TangentSpace
        from sklearn.linear_model import LogisticRegression

        return _SklearnBaseline(make_pipeline(Covariances(estimator="oas"),
                                              TangentSpace(metric="riemann"),
                                              LogisticRegression(max_iter=1000)))
    if name == "logvar_lda":
        return _SklearnBaseline(make_pipeline(FunctionTransformer(_log_variance),
                                              LDA(solver="lsqr", shrinkage="auto")))
    if name == "shallow_convnet":
        return ShallowConvNetClassifier(**settings["shallow_convnet"], sfreq=sfreq, seed=seed,
                                        run_dir=run_dir, device=device)
    raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")


def _classifier_module():
    """The LightningModule class (built on first use: Lightning is imported lazily)."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F

    class ClassifierModule(pl.LightningModule):
        """Cross-entropy on ``net(x)``; AdamW with cosine decay; logs ``val_loss``."""

        def __init__(self, net, *, lr: float, weight_decay: float, max_epochs: int):
            super().__init__()
            self.net, self.lr, self.weight_decay = net, lr, weight_decay
            self.max_epochs = max_epochs

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True,
                     batch_size=len(y))

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=self.lr,
                                    weight_decay=self.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_epochs)
            return {"optimizer": opt, "lr_scheduler": sched}

    return ClassifierModule


def _epoch_shuffle_class():
    import torch

    class EpochShuffle(torch.utils.data.Sampler):
        """Rows in an order drawn from (seed, epoch): Lightning sets the epoch, so a run
        resumed after a kill sees the batches of an uninterrupted one."""

        def __init__(self, n: int, seed: int):
            self.n, self.seed, self.epoch = n, seed, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)

        def __iter__(self):
            from ..train.trainer import epoch_seed

            rng = np.random.default_rng(epoch_seed(self.seed, self.epoch, "batches"))
            return iter(rng.permutation(self.n).tolist())

        def __len__(self) -> int:
            return self.n

    return EpochShuffle


def _EpochShuffle(n: int, seed: int):
    return _epoch_shuffle_class()(n, seed)


class ShallowConvNetClassifier:
    """:class:`encoders.shallow_convnet.ShallowConvNet` trained by ``fit_run``.

    Inputs are scaled by one number (the standard deviation of the training epochs).
    The run lives in ``run_dir/shallow-convnet-<key>/``, ``key`` a hash of the settings
    and of the training and validation data, so one ``run_dir`` serves every fold and a
    changed setting never reuses an old run.
    Early stopping monitors the loss on ``val``; without ``val`` the run trains
    ``max_epochs`` epochs and keeps the epoch of lowest training loss. Training resumes from ``run_dir`` after a
    kill and is deterministic on the CPU (see :mod:`brainhead.train.trainer`).
    """

    def __init__(self, *, n_filters: int = 40, filter_s: float = 0.25, pool_s: float = 0.75,
                 stride_s: float = 0.15, dropout: float = 0.5, lr: float = 1e-3,
                 max_epochs: int = 100, batch_size: int = 32, patience: int = 10,
                 sfreq: float = 100.0, seed: int = 0, run_dir=None, device: str = "auto",
                 weight_decay: float = 1e-4):
        self.n_filters, self.filter_s, self.pool_s, self.stride_s = (n_filters, filter_s,
                                                                     pool_s, stride_s)
        self.dropout, self.lr, self.max_epochs = dropout, lr, max_epochs
        self.batch_size, self.patience, self.sfreq, self.seed = batch_size, patience, sfreq, seed
        self.run_dir, self.device, self.weight_decay = run_dir, device, weight_decay

    def _tensors(self, X, y=None):
        import torch

        x = torch.as_tensor(np.asarray(X, np.float32) / self.scale_)
        if y is None:
            return x
        codes = np.searchsorted(self.classes_, np.asarray(y, str))
        return x, torch.as_tensor(codes, dtype=torch.long)

    def _run_key(self, X, y, val) -> str:
        """Hash of the settings and of the training and validation data."""
        import hashlib

        from ..io.store import spec_hash

        h = hashlib.sha256()
        for arr in (X, np.asarray(y, str)) + (tuple(np.asarray(v) for v in val) if val else ()):
            arr = np.ascontiguousarray(arr)
            h.update(str(arr.shape).encode() + str(arr.dtype).encode())
            h.update(arr.tobytes() if arr.dtype.kind != "U" else "\x1f".join(arr.ravel()).encode())
        settings = {k: v for k, v in vars(self).items()
                    if not k.endswith("_") and k not in ("run_dir", "device")}
        return spec_hash({"settings": settings, "data": h.hexdigest()})

    def fit(self, X, y, val=None):
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from encoders.shallow_convnet import ShallowConvNet

        from ..train.trainer import TrainConfig, fit_run

        X = np.asarray(X, np.float32)
        self.classes_ = np.unique(np.asarray(y, str))
        self.scale_ = float(X.std()) or 1.0
        torch.manual_seed(self.seed)
        self.net_ = ShallowConvNet(X.shape[1], len(self.classes_), X.shape[2], self.sfreq,
                                   n_filters=self.n_filters, filter_s=self.filter_s,
                                   pool_s=self.pool_s, stride_s=self.stride_s,
                                   dropout=self.dropout)
        module = _classifier_module()(self.net_, lr=self.lr, weight_decay=self.weight_decay,
                                      max_epochs=self.max_epochs)
        # own generators: creating an iterator draws nothing from torch's global
        # generator, whose state (dropout) must depend on (seed, epoch) alone for a run
        # resumed after a kill to equal an uninterrupted one
        train = DataLoader(TensorDataset(*self._tensors(X, y)), batch_size=self.batch_size,
                           sampler=_EpochShuffle(len(X), self.seed),
                           generator=torch.Generator())
        if val is None:  # no early stopping: the epoch of lowest training loss
            val = (X, np.asarray(y, str))
            patience = self.max_epochs + 1
        else:
            patience = self.patience
        val_loader = DataLoader(TensorDataset(*self._tensors(*val)), batch_size=256,
                                generator=torch.Generator())
        cfg = TrainConfig(max_epochs=self.max_epochs, patience=patience,
                          batch_size=self.batch_size, monitor="val_loss", monitor_mode="min",
                          lr=self.lr, seed=self.seed, device=self.device, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            # one folder per (settings, data): a rerun resumes or reuses only its own run
            run_dir = (Path(self.run_dir) if self.run_dir is not None else Path(tmp)) / (
                f"shallow-convnet-{self._run_key(X, y, val)}")
            self.fit_info_ = fit_run(module, train, val_loader, run_dir, cfg,
                                     name="shallow_convnet")
            self.fit_info_["dir"] = str(run_dir) if self.run_dir is not None else None
        self.net_.eval()
        return self

    def predict_proba(self, X) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.net_(self._tensors(X).to(next(self.net_.parameters()).device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
