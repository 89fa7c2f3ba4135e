"""Electrode multi-head attention as an estimator: trials of electrode tokens in, classes out.

:class:`ElectrodeAttentionClassifier` trains :class:`encoders.electrode_mha.ElectrodeMHA`
through :func:`brainhead.train.trainer.fit_run` (Lightning; a checkpoint every epoch;
resume after a kill; weights-only loading; deterministic on the CPU) and offers a
scikit-learn interface (``fit``, ``predict_proba``, ``predict``, ``score``, ``classes_``,
``get_params``/``set_params``, :func:`sklearn.base.clone`) over
:class:`ElectrodeTrials`: one token per electrode, its band features (the ``bands`` view
of a response table, channels x bands), padded to the largest electrode count, with a
mask, channel names and (sEEG/ECoG) MNI coordinates.

For the decoding stage (notes for its callers)
----------------------------------------------
- Build the trials with :meth:`ElectrodeTrials.from_arrays`, one part per subject; take
  rows with :meth:`ElectrodeTrials.take`. Concatenating parts from subjects with
  different channel counts pads with zeros (mask False, name ``""``, coords NaN).
- ``fit(trials, y, val=(val_trials, val_y))`` stops early on ``val`` (validation loss,
  ``patience`` epochs) and keeps the weights of the best validation epoch; without
  ``val`` it trains ``max_epochs`` epochs and keeps the last. ``val`` must come from the
  training side of the caller's split: this class never looks at test data and performs
  no split of its own.
- Features are standardised per band with the mean and standard deviation of the
  existing electrodes of the training trials (``val`` and test trials use those).
- ``identity="auto"`` uses coordinates when ``trials.coords`` is not None, else names.
  With names, the vocabulary is the training trials' channel names; a name absent from
  it (a test subject's extra channel) gets the zero "unknown" embedding. With
  coordinates every contact needs finite coordinates.
- ``run_dir``: the runs go to ``run_dir/electrode-<key>/`` with ``key`` a hash of the
  settings and of the training and validation data, so one ``run_dir`` can serve every
  fold: a rerun of the same fit after a kill resumes, a finished one is reused, and a
  different fold never reuses another's run. ``run_dir=None``: a temporary folder,
  removed at the end of ``fit``.
- Initial weights and batch order are drawn from ``seed`` and that key: the same seed,
  settings and data give the same probabilities, bit for bit on the CPU.
- ``attention_maps(trials, y)``: class-averaged electrode x electrode attention
  (averaged over trials of the class, heads and blocks; ``per_block=True`` keeps blocks).
  Rows are queries, columns keys; each trial's rows sum to one over its electrodes.
  Electrodes are keyed by channel name with ``identity="name"`` and by
  ``"<subject>:<name>"`` with ``identity="coords"`` (contacts are subject-specific),
  in order of first appearance in ``trials``.
- Small settings for a fast demo: ``d_model=32, n_blocks=1, n_heads=2, dropout=0.0,
  lr=5e-3, max_epochs=20, patience=5, batch_size=32`` (14k parameters; with batches of
  64 the attention no longer concentrated on the planted group of the simulated EEG).
  Measured on one thread of a loaded 2-core machine (``benchmarks/electrode_mha.py``):
  about 2 s per leave-one-subject-out fold of 3 simulated EEG subjects x 150 trials x 32
  channels x 5 bands, 1.3 s per within-subject fold (96 training trials), 0.9-1.8 s per
  sEEG fold; the paper's defaults take about 57 s per EEG fold. More than a quarter of a
  small fit is the checkpoint that ``fit_run`` writes every epoch and a seventh is
  Lightning's validation pass, so the cost grows with epochs more than with trials:
  fewer folds save more than smaller models. ``min_steps_per_epoch=6`` makes small
  folds (64-96 training trials) take 2-3 passes per epoch: simulated sEEG within-subject
  accuracy rose from 0.56-0.68 to 0.95, for 1.5-3 times the time (1.5 s per fold).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

__all__ = ["ElectrodeAttentionClassifier", "ElectrodeTrials"]


# ---------------------------------------------------------------------------- the data
@dataclass
class ElectrodeTrials:
    """Trials as electrode tokens: one token per electrode, its band features.

    Attributes
    ----------
    X : ndarray of float32, shape (n_trials, n_electrodes_max, n_bands)
        Band features, 0 where padded.
    mask : ndarray of bool, shape (n_trials, n_electrodes_max)
        True where an electrode exists.
    names : ndarray of str, shape (n_trials, n_electrodes_max)
        Channel names, ``""`` for padding.
    coords : ndarray of float, shape (n_trials, n_electrodes_max, 3), or None
        MNI coordinates in metres (NaN for padding); None for scalp EEG.
    subject : ndarray of str, shape (n_trials,)
    """

    X: np.ndarray
    mask: np.ndarray
    names: np.ndarray
    coords: np.ndarray | None
    subject: np.ndarray

    def __post_init__(self):
        self.X = np.asarray(self.X, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=bool)
        self.names = np.asarray(self.names, dtype=str)
        self.subject = np.asarray(self.subject, dtype=str)
        if self.coords is not None:
            self.coords = np.asarray(self.coords, dtype=np.float64)
        if self.X.ndim != 3:
            raise ValueError(f"ElectrodeTrials: X must be (trials, electrodes, bands), got "
                             f"shape {self.X.shape}")
        n, c, _ = self.X.shape
        for key, arr, shape in (("mask", self.mask, (n, c)), ("names", self.names, (n, c)),
                                ("subject", self.subject, (n,)),
                                ("coords", self.coords, (n, c, 3))):
            if arr is not None and arr.shape != shape:
                raise ValueError(f"ElectrodeTrials: {key} must have shape {shape} to match "
                                 f"X {self.X.shape}, got {arr.shape}")

    @classmethod
    def from_arrays(cls, parts: Sequence[tuple[str, np.ndarray, Sequence[str],
                                               np.ndarray | None]]) -> ElectrodeTrials:
        """Stack subjects' trials, padded to the largest channel count.

        Parameters
        ----------
        parts : sequence of (subject, X, channel names, coords)
            Per subject: ``X`` (n_trials, n_chan, n_bands), ``n_chan`` unique names and
            coordinates (n_chan, 3) in metres, or None. Either every part has
            coordinates or none has.
        """
        if not parts:
            raise ValueError("ElectrodeTrials.from_arrays: no parts")
        with_coords = {coords is not None for *_, coords in parts}
        if len(with_coords) > 1:
            raise ValueError("ElectrodeTrials.from_arrays: some subjects have coordinates "
                             "and others do not")
        bands = {np.shape(X)[-1] for _, X, _, _ in parts}
        if len(bands) > 1:
            raise ValueError(f"ElectrodeTrials.from_arrays: subjects have different band "
                             f"counts {sorted(bands)}")
        c_max = max(len(names) for _, _, names, _ in parts)
        out = {"X": [], "mask": [], "names": [], "coords": [], "subject": []}
        for subject, X, names, coords in parts:
            X = np.asarray(X, dtype=np.float32)
            names = [str(n) for n in names]
            if X.ndim != 3 or X.shape[1] != len(names):
                raise ValueError(f"subject {subject}: X must be (trials, {len(names)} "
                                 f"channels, bands), got shape {X.shape}")
            if len(set(names)) != len(names) or "" in names:
                raise ValueError(f"subject {subject}: channel names must be unique and "
                                 "non-empty")
            n, c, _ = X.shape
            pad = c_max - c
            out["X"].append(np.pad(X, ((0, 0), (0, pad), (0, 0))))
            out["mask"].append(np.repeat(np.arange(c_max)[None] < c, n, 0))
            out["names"].append(np.repeat(np.array(names + [""] * pad)[None], n, 0))
            out["subject"].append(np.full(n, str(subject)))
            if coords is not None:
                coords = np.asarray(coords, dtype=np.float64)
                if coords.shape != (c, 3):
                    raise ValueError(f"subject {subject}: coords must be ({c}, 3), got "
                                     f"{coords.shape}")
                full = np.full((c_max, 3), np.nan)
                full[:c] = coords
                out["coords"].append(np.repeat(full[None], n, 0))
        cat = {k: np.concatenate(v) if v else None for k, v in out.items()}
        return cls(X=cat["X"], mask=cat["mask"], names=cat["names"], coords=cat["coords"],
                   subject=cat["subject"])

    def __len__(self) -> int:
        return len(self.X)

    def take(self, idx) -> ElectrodeTrials:
        """The trials at ``idx`` (integer indices or a boolean mask)."""
        idx = np.asarray(idx)
        if idx.dtype != bool:
            idx = idx.astype(np.intp)
        return ElectrodeTrials(X=self.X[idx], mask=self.mask[idx], names=self.names[idx],
                               coords=None if self.coords is None else self.coords[idx],
                               subject=self.subject[idx])

    @property
    def n_bands(self) -> int:
        return self.X.shape[2]

    def electrode_keys(self, by_subject: bool) -> np.ndarray:
        """(n_trials, n_electrodes_max) keys: names, or ``"<subject>:<name>"``; "" padding."""
        if not by_subject:
            return self.names
        keys = np.char.add(np.char.add(self.subject[:, None], ":"), self.names)
        return np.where(self.mask, keys, "")


# ---------------------------------------------------------------------------- training
def _module_class():
    """The LightningModule (defined on first use: importing this file stays light)."""
    global _ElectrodeModule
    if _ElectrodeModule is not None:
        return _ElectrodeModule
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F

    class ElectrodeModule(pl.LightningModule):
        """Cross-entropy (label smoothing) with AdamW and cosine decay over ``max_epochs``.

        Logs ``train_loss``; with validation data ``val_loss`` (plain cross-entropy) and
        ``val_acc``; without, ``epochs_done`` (the monitor that makes the last epoch the
        kept one).
        """

        def __init__(self, net, *, lr, weight_decay, label_smoothing, max_epochs,
                     log_epochs=False):
            super().__init__()
            self.log_epochs = bool(log_epochs)
            self.net = net
            self.lr, self.weight_decay = float(lr), float(weight_decay)
            self.label_smoothing, self.max_epochs = float(label_smoothing), int(max_epochs)

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            if device.type == "cpu":
                return batch
            return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

        def forward(self, batch, return_attention=False):
            return self.net(batch["x"], batch["mask"], ids=batch.get("ids"),
                            coords=batch.get("coords"), return_attention=return_attention)

        def training_step(self, batch, batch_idx):
            logits = self(batch)
            loss = F.cross_entropy(logits.float(), batch["y"],
                                   label_smoothing=self.label_smoothing)
            n = len(batch["y"])
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n)
            if self.log_epochs:
                self.log("epochs_done", float(self.current_epoch + 1), on_step=False,
                         on_epoch=True, batch_size=n)
            return loss

        def validation_step(self, batch, batch_idx):
            logits = self(batch).float()
            n = len(batch["y"])
            self.log("val_loss", F.cross_entropy(logits, batch["y"]), on_step=False,
                     on_epoch=True, batch_size=n)
            self.log("val_acc", (logits.argmax(1) == batch["y"]).float().mean(),
                     on_step=False, on_epoch=True, batch_size=n)

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=self.lr,
                                    weight_decay=self.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_epochs)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched,
                                                       "interval": "epoch"}}

    _ElectrodeModule = ElectrodeModule
    return ElectrodeModule


_ElectrodeModule = None


def _loader(tensors: dict, *, batch_size: int, shuffle: bool, seed: int, min_steps: int = 1):
    """A DataLoader of dict batches over row-index plans drawn from (seed, epoch).

    An epoch is as many passes over the rows (each in its own order) as make at least
    ``min_steps`` batches.
    """
    import torch
    from torch.utils.data import DataLoader, Dataset, Sampler

    from .trainer import epoch_seed

    n = len(tensors["y"])
    per_pass = (n + batch_size - 1) // batch_size
    passes = max(1, -(-int(min_steps) // per_pass)) if shuffle else 1

    class Plan(Sampler):
        def __init__(self):
            self.epoch = 0

        def set_epoch(self, epoch):
            self.epoch = int(epoch)

        def __iter__(self):
            rng = np.random.default_rng(epoch_seed(seed, self.epoch, "electrode-batches"))
            for _ in range(passes):
                order = rng.permutation(n) if shuffle else np.arange(n)
                for start in range(0, n, batch_size):
                    yield torch.from_numpy(np.sort(order[start:start + batch_size]))

        def __len__(self):
            return passes * per_pass

    class Rows(Dataset):
        def __getitem__(self, rows):
            return {k: v.index_select(0, rows) for k, v in tensors.items()}

    return DataLoader(Rows(), sampler=Plan(), batch_size=None, collate_fn=lambda b: b,
                      generator=torch.Generator())


def _data_hash(h, trials: ElectrodeTrials, y: np.ndarray) -> None:
    for arr in (trials.X, trials.mask, trials.names, trials.subject, y,
                trials.coords if trials.coords is not None else np.zeros(0)):
        arr = np.ascontiguousarray(arr)
        h.update(str((arr.dtype, arr.shape)).encode())
        h.update(arr.tobytes())


class ElectrodeAttentionClassifier(ClassifierMixin, BaseEstimator):
    """Classify trials of electrode tokens with :class:`encoders.electrode_mha.ElectrodeMHA`.

    Parameters
    ----------
    identity : {"auto", "name", "coords"}
        Electrode identity embedding: per channel name (scalp EEG; shared across
        subjects), from MNI coordinates (sEEG/ECoG; unseen contacts get embeddings), or
        ``"auto"``: coordinates when the training trials have them, else names.
    d_model, n_blocks, n_heads : int
        Token width, transformer blocks, attention heads (paper: 128, 4, 6).
    d_head : int, optional
        Head width; default ``d_model // n_heads`` (6 heads of 21 at width 128, mapped
        back to 128 by each attention layer's output projection).
    ff_mult : int
        Feed-forward width as a multiple of ``d_model``.
    dropout : float
    n_freqs, coord_length : int, float
        Random Fourier features of the coordinate map (count, length scale in metres).
    lr, weight_decay : float
        AdamW settings; the learning rate decays to 0 over ``max_epochs`` (cosine).
    label_smoothing : float
    max_epochs, batch_size, patience : int
        ``patience``: epochs without a lower validation loss before stopping (with
        ``val`` only).
    min_steps_per_epoch : int
        An epoch makes as many passes over the training trials (each in its own order)
        as give at least this many steps. Each epoch ends with a validation pass and a
        checkpoint, which cost more than a step of a small model on few trials; several
        passes per epoch make fewer of them for the same number of steps.
    seed : int
        Initial weights, batch order and dropout are functions of the seed (and epoch).
    device : {"auto", "cpu", "cuda"}
    run_dir : path-like, optional
        Folder for the runs (see the module doc); None: a temporary folder.
    progress : bool
        Lightning's progress bar.

    Attributes
    ----------
    classes_ : ndarray
        Sorted class labels.
    net_ : ElectrodeMHA
    vocabulary_ : ndarray of str or None
        Channel names of the name embedding (index ``i + 1``).
    mean_, scale_ : ndarray, shape (n_bands,)
        Feature standardisation from the training trials.
    identity_ : str
    run_info_ : dict
        What :func:`~brainhead.train.trainer.fit_run` returned, plus ``dir`` and
        ``fit_seconds``.
    """

    def __init__(self, *, identity: str = "auto", d_model: int = 128, n_blocks: int = 4,
                 n_heads: int = 6, d_head: int | None = None, ff_mult: int = 4,
                 dropout: float = 0.1, n_freqs: int = 32, coord_length: float = 0.03,
                 lr: float = 1e-3, weight_decay: float = 1e-2, label_smoothing: float = 0.1,
                 max_epochs: int = 100, batch_size: int = 32, patience: int = 10,
                 min_steps_per_epoch: int = 1, seed: int = 0, device: str = "auto",
                 run_dir=None, progress: bool = False):
        self.identity = identity
        self.d_model, self.n_blocks, self.n_heads, self.d_head = d_model, n_blocks, n_heads, d_head
        self.ff_mult, self.dropout = ff_mult, dropout
        self.n_freqs, self.coord_length = n_freqs, coord_length
        self.lr, self.weight_decay, self.label_smoothing = lr, weight_decay, label_smoothing
        self.max_epochs, self.batch_size, self.patience = max_epochs, batch_size, patience
        self.min_steps_per_epoch = min_steps_per_epoch
        self.seed, self.device, self.run_dir, self.progress = seed, device, run_dir, progress

    # ------------------------------------------------------------------ fitting
    def _model_settings(self) -> dict:
        return {k: getattr(self, k) for k in ("d_model", "n_blocks", "n_heads", "d_head",
                                              "ff_mult", "dropout", "n_freqs",
                                              "coord_length")}

    def _check_trials(self, trials: ElectrodeTrials, where: str) -> None:
        if not isinstance(trials, ElectrodeTrials):
            raise TypeError(f"{where}: expected ElectrodeTrials, got {type(trials).__name__}")
        empty = ~trials.mask.any(1)
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise ValueError(f"{where}: trial {i} (subject {trials.subject[i]}) has no "
                             "electrode")
        if not np.isfinite(trials.X[trials.mask]).all():
            bad = int(np.flatnonzero((~np.isfinite(trials.X).all(2) & trials.mask).any(1))[0])
            raise ValueError(f"{where}: non-finite band features in trial {bad} (subject "
                             f"{trials.subject[bad]})")
        if hasattr(self, "n_bands_") and trials.n_bands != self.n_bands_:
            raise ValueError(f"{where}: {trials.n_bands} bands, the model was fitted on "
                             f"{self.n_bands_}")
        if getattr(self, "identity_", None) == "coords" or (
                not hasattr(self, "identity_") and self._identity(trials) == "coords"):
            if trials.coords is None:
                raise ValueError(f"{where}: the model uses coordinates and these trials have "
                                 "none")
            valid = np.isfinite(trials.coords).all(2)
            missing = trials.mask & ~valid
            if missing.any():
                i, j = map(int, np.argwhere(missing)[0])
                raise ValueError(f"{where}: subject {trials.subject[i]}, channel "
                                 f"{str(trials.names[i, j])!r} has no finite coordinates")

    def _identity(self, trials: ElectrodeTrials) -> str:
        if self.identity not in ("auto", "name", "coords"):
            raise ValueError(f"identity must be 'auto', 'name' or 'coords', got "
                             f"{self.identity!r}")
        if self.identity == "auto":
            return "coords" if trials.coords is not None else "name"
        return self.identity

    def _tensors(self, trials: ElectrodeTrials, y: np.ndarray | None = None) -> dict:
        import torch

        X = (trials.X - self.mean_) / self.scale_
        X = np.where(trials.mask[..., None], X, 0.0).astype(np.float32)
        out = {"x": torch.from_numpy(X), "mask": torch.from_numpy(trials.mask.copy())}
        if self.identity_ == "name":
            index = {n: i + 1 for i, n in enumerate(self.vocabulary_)}
            ids = np.vectorize(lambda n: index.get(n, 0), otypes=[np.int64])(trials.names)
            out["ids"] = torch.from_numpy(np.where(trials.mask, ids, 0))
        else:
            c = np.where(trials.mask[..., None], trials.coords, 0.0)
            out["coords"] = torch.from_numpy(c.astype(np.float32))
        if y is not None:
            out["y"] = torch.from_numpy(self._encode(y))
        return out

    def _encode(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            raise ValueError(f"labels {sorted(set(y[unknown].tolist()))} are not among the "
                             f"training classes {self.classes_.tolist()}")
        return idx.astype(np.int64)

    def fit(self, trials: ElectrodeTrials, y, *, val: tuple[ElectrodeTrials, np.ndarray] | None
            = None) -> ElectrodeAttentionClassifier:
        """Train on ``trials`` (and stop early on ``val``, from the training side only).

        Parameters
        ----------
        trials : ElectrodeTrials
        y : array-like, shape (n_trials,)
        val : (ElectrodeTrials, array-like), optional
            Validation trials and labels for early stopping and the choice of the kept
            epoch. Without it: ``max_epochs`` epochs, the last one kept.

        Returns
        -------
        self
        """
        import hashlib
        import warnings

        import torch

        from encoders.electrode_mha import ElectrodeMHA

        from ..io.store import spec_hash
        from .trainer import TrainConfig, epoch_seed, fit_run

        # Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per batch.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        # without `val`, no validation loop is intended
        warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
        for attr in ("n_bands_", "identity_"):
            if hasattr(self, attr):
                delattr(self, attr)
        y = np.asarray(y)
        if len(y) != len(trials):
            raise ValueError(f"fit: {len(trials)} trials but {len(y)} labels")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"fit: need at least 2 classes, got {self.classes_.tolist()}")
        self.identity_ = self._identity(trials)
        self._check_trials(trials, "fit")
        if val is not None:
            self._check_trials(val[0], "fit (val)")
            if len(val[1]) != len(val[0]):
                raise ValueError(f"fit (val): {len(val[0])} trials but {len(val[1])} labels")
        self.n_bands_ = trials.n_bands
        feats = trials.X[trials.mask].astype(np.float64)
        self.mean_ = feats.mean(0)
        self.scale_ = feats.std(0)
        self.scale_[self.scale_ == 0] = 1.0
        if self.identity_ == "name":
            seen = trials.names[trials.mask]
            _, first = np.unique(seen, return_index=True)
            self.vocabulary_ = seen[np.sort(first)]
        else:
            self.vocabulary_ = None

        train = self._tensors(trials, y)
        val_t = self._tensors(val[0], val[1]) if val is not None else None

        settings = {"model": self._model_settings(), "identity": self.identity_,
                    "lr": self.lr, "weight_decay": self.weight_decay,
                    "label_smoothing": self.label_smoothing, "max_epochs": self.max_epochs,
                    "batch_size": self.batch_size, "patience": self.patience,
                    "min_steps_per_epoch": self.min_steps_per_epoch,
                    "seed": self.seed, "classes": self.classes_.tolist()}
        h = hashlib.sha256(spec_hash(settings).encode())
        _data_hash(h, trials, y)
        if val is not None:
            _data_hash(h, val[0], np.asarray(val[1]))
        key = h.hexdigest()[:16]

        torch.manual_seed(epoch_seed(self.seed, 0, f"electrode-init:{key}"))
        self.net_ = ElectrodeMHA(
            n_outputs=len(self.classes_), n_bands=self.n_bands_, identity=self.identity_,
            n_names=None if self.vocabulary_ is None else len(self.vocabulary_) + 1,
            **self._model_settings())
        module = _module_class()(self.net_, lr=self.lr, weight_decay=self.weight_decay,
                                 label_smoothing=self.label_smoothing,
                                 max_epochs=self.max_epochs, log_epochs=val is None)
        cfg = TrainConfig(max_epochs=int(self.max_epochs), batch_size=int(self.batch_size),
                          patience=int(self.patience) if val is not None
                          else int(self.max_epochs) + 1,
                          monitor="val_loss" if val is not None else "epochs_done",
                          monitor_mode="min" if val is not None else "max",
                          lr=self.lr, weight_decay=self.weight_decay, seed=int(self.seed),
                          device=self.device, progress=bool(self.progress))
        train_loader = _loader(train, batch_size=cfg.batch_size, shuffle=True,
                               seed=epoch_seed(cfg.seed, 0, f"batches:{key}"),
                               min_steps=int(self.min_steps_per_epoch))
        val_loader = (_loader(val_t, batch_size=max(cfg.batch_size, 256), shuffle=False,
                              seed=0) if val_t is not None else None)
        tmp = None
        if self.run_dir is None:
            tmp = tempfile.mkdtemp(prefix="brainhead-electrode-")
            run = Path(tmp) / f"electrode-{key}"
        else:
            run = Path(self.run_dir) / f"electrode-{key}"
        start = time.perf_counter()
        try:
            info = fit_run(module, train_loader, val_loader, run, cfg, name=f"electrode {key}")
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        self.net_ = module.net.cpu().eval()
        self.run_info_ = {**info, "dir": None if tmp else str(run),
                          "fit_seconds": round(time.perf_counter() - start, 3)}
        return self

    # ------------------------------------------------------------------ predicting
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise RuntimeError("this ElectrodeAttentionClassifier is not fitted yet; call "
                               "fit first")

    def _forward(self, trials: ElectrodeTrials, return_attention: bool = False,
                 batch_size: int = 256):
        import torch

        self._check_fitted()
        self._check_trials(trials, "predict")
        data = self._tensors(trials)
        self.net_.eval()
        logits, attention = [], []
        with torch.no_grad():
            for start in range(0, len(trials), batch_size):
                batch = {k: v[start:start + batch_size] for k, v in data.items()}
                out = self.net_(batch["x"], batch["mask"], ids=batch.get("ids"),
                                coords=batch.get("coords"), return_attention=return_attention)
                if return_attention:
                    logits.append(out[0])
                    attention.append(torch.stack(out[1], 1).mean(2))  # (B, blocks, C, C)
                else:
                    logits.append(out)
        logits = torch.cat(logits).float()
        if return_attention:
            return logits, torch.cat(attention).numpy()
        return logits

    def predict_proba(self, trials: ElectrodeTrials) -> np.ndarray:
        """Class probabilities, (n_trials, n_classes), columns in ``classes_`` order."""
        return self._forward(trials).softmax(1).numpy().astype(np.float64)

    def predict(self, trials: ElectrodeTrials) -> np.ndarray:
        """The most probable class of each trial."""
        self._check_fitted()
        return self.classes_[self.predict_proba(trials).argmax(1)]

    def attention_maps(self, trials: ElectrodeTrials, y, *, per_block: bool = False) -> dict:
        """Class-averaged electrode x electrode attention.

        Each trial's attention (query rows, key columns) is averaged over heads and
        then over the trials of its class (``y``); ``per_block=False`` also averages
        over blocks.

        Returns
        -------
        maps : dict
            ``classes`` (list, ``classes_`` order), ``names`` (electrode keys, see the
            module doc), ``coords`` ((n_names, 3) or None), ``counts`` ((n_classes,
            n_names, n_names) trials averaged per cell), ``maps``: (n_classes, n_names,
            n_names) or, with ``per_block``, (n_blocks, n_classes, n_names, n_names); NaN
            where a pair never occurs in a trial of the class.
        """
        self._check_fitted()
        y = np.asarray(y)
        if len(y) != len(trials):
            raise ValueError(f"attention_maps: {len(trials)} trials but {len(y)} labels")
        cls = self._encode(y)
        _, attn = self._forward(trials, return_attention=True)  # (N, blocks, C, C)
        if not per_block:
            attn = attn.mean(1, keepdims=True)
        keys = trials.electrode_keys(by_subject=self.identity_ == "coords")
        flat = keys[trials.mask]
        _, first = np.unique(flat, return_index=True)
        names = flat[np.sort(first)]
        index = {n: i for i, n in enumerate(names)}
        pos = np.vectorize(lambda n: index.get(n, -1), otypes=[np.int64])(keys)
        n_b, n_c, n_n = attn.shape[1], len(self.classes_), len(names)
        sums = np.zeros((n_b, n_c, n_n, n_n))
        counts = np.zeros((n_c, n_n, n_n))
        for t in range(len(trials)):
            valid = np.flatnonzero(trials.mask[t])
            p = pos[t, valid]
            sums[:, cls[t]][:, p[:, None], p[None, :]] += attn[t][:, valid[:, None],
                                                                  valid[None, :]]
            counts[cls[t]][p[:, None], p[None, :]] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            maps = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        coords = None
        if trials.coords is not None:
            coords = np.full((n_n, 3), np.nan)
            for (t, j), p in np.ndenumerate(pos):
                if p >= 0 and np.isnan(coords[p, 0]):
                    coords[p] = trials.coords[t, j]
        return {"classes": self.classes_.tolist(), "names": names.tolist(), "coords": coords,
                "counts": counts, "maps": maps if per_block else maps[0]}

    @property
    def n_params(self) -> int:
        """Number of trainable parameters of the fitted network."""
        self._check_fitted()
        return int(sum(p.numel() for p in self.net_.parameters() if p.requires_grad))
