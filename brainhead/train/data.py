"""Response tables as training data: per-subject stimulus rows and seeded batch plans.

Encoders read the ``stimulus`` view of each subject's response table with the repeats
of a stimulus averaged, exactly the rows that ridge encoding scores
(:func:`brainhead.align.scores.average_repeats`), so that fold ``k`` of a subject holds
the same stimuli for both (:func:`brainhead.splits.stimulus_folds`).

Batches are planned, not shuffled by a DataLoader: a :class:`StimulusBatches` sampler
lays out, for every epoch, batches of stimuli of one subject each, with a random subset
of that subject's targets, from a generator seeded by (seed, epoch). Memory per step is
bounded by ``batch_size x n_sampled_targets`` whatever the size of the brain, and the
plan of epoch ``e`` is the same whether or not training was resumed before it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..io.readers import RecordingError
from ..splits import check_disjoint, stimulus_folds
from .trainer import epoch_seed

__all__ = ["EncodingBatches", "EncodingData", "StimulusBatches", "SubjectResponses",
           "load_subject_responses"]


@dataclass
class SubjectResponses:
    """One subject's responses, one row per stimulus (repeats averaged).

    Attributes
    ----------
    Y : ndarray, shape (n_stimuli, n_targets)
    stim_id : ndarray of str, shape (n_stimuli,)
    target_name, region : ndarray of str, shape (n_targets,)
    folds : dict of str to int
        Outer fold in which ridge encoding tests each stimulus of this subject.
    """

    subject: str
    modality: str
    Y: np.ndarray
    stim_id: np.ndarray
    target_name: np.ndarray
    region: np.ndarray
    folds: dict[str, int]

    @property
    def n_targets(self) -> int:
        return self.Y.shape[1]


def load_subject_responses(path: str | Path) -> SubjectResponses:
    """Read the ``stimulus`` view of a response table for training.

    Raises
    ------
    RecordingError
        If the table has no ``stimulus`` view or non-finite responses.
    """
    from ..align.scores import average_repeats
    from ..io.store import read_responses

    table = read_responses(path)
    if "stimulus" not in table.views:
        raise RecordingError(f"{Path(path).name}: sub-{table.subject} has no 'stimulus' view "
                             f"(views: {sorted(table.views)}); encoders train on it")
    view = table.view("stimulus")
    X = np.asarray(view.X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise RecordingError(f"{Path(path).name}: sub-{table.subject}: the stimulus view has "
                             f"{int((~np.isfinite(X)).sum())} non-finite values")
    stim_id = np.asarray(view.rows["stim_id"]).astype(str)
    group = np.asarray(view.rows["group"]).astype(str)
    Y, stims, _, _ = average_repeats(X, stim_id, group)
    return SubjectResponses(
        subject=table.subject, modality=table.modality, Y=Y.astype(np.float32),
        stim_id=stims, target_name=np.asarray(table.targets.name).astype(str),
        region=np.asarray(table.targets.region).astype(str),
        folds=stimulus_folds(stim_id, group))


def _standardise(a: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = a[rows].mean(0)
    std = a[rows].std(0)
    std = np.where(std > 0, std, 1.0)
    return ((a - mean) / std).astype(np.float32), mean, std


def _reduce(F: np.ndarray, rows: np.ndarray, n_components: int | None) -> np.ndarray:
    """Layer features as (n_stimuli, n_layers, k), scaled on ``rows`` alone.

    Each feature of each layer is centred and scaled on ``rows`` (the coordinates stay
    those of the residual stream, which transformer layers share); with
    ``n_components``, all layers are projected on the same principal axes, fitted on
    the training rows of every layer stacked, and whitened.
    """
    F = np.asarray(F, np.float64)
    mean = F[:, rows].mean(1, keepdims=True)
    scale = F[:, rows].std(axis=1, keepdims=True)
    Z = (F - mean) / np.where(scale > 0, scale, 1.0)
    if n_components is not None:
        stacked = Z[:, rows].reshape(-1, Z.shape[2])
        k = int(min(n_components, stacked.shape[0] - 1, Z.shape[2]))
        _, s, vt = np.linalg.svd(stacked, full_matrices=False)
        Z = Z @ vt[:k].T / np.maximum(s[:k] / np.sqrt(stacked.shape[0]), 1e-12)
    return np.ascontiguousarray(np.transpose(Z, (1, 0, 2))).astype(np.float32)


class EncodingData:
    """Features and responses of one training run, standardised on its training rows.

    Parameters
    ----------
    features : ndarray, shape (n_layers, n_stimuli, dim)
        Layer features of every stimulus of the stimuli table.
    feature_ids : ndarray of str, shape (n_stimuli,)
    subjects : mapping of str to SubjectResponses
    train : mapping of str to sequence of str
        Per subject, the stimuli on the training side (fitting and validation). Feature
        and response means and scales come from these alone.
    feature_stimuli : sequence of str, optional
        Stimuli whose features set the feature scaling (default: every training
        stimulus). A new subject added to a trained model keeps the scaling that the
        model was trained with: pass the base run's training stimuli.
    n_components : int or None
        Keep this many principal components of each layer's features, fitted on the
        scaling stimuli alone and whitened (None keeps every standardised feature). A
        linear read-out learnt from ``n`` stimuli only ever uses the ``n``-dimensional
        span of their features, so this loses little and regularises the encoder.
    """

    def __init__(self, features: np.ndarray, feature_ids: np.ndarray,
                 subjects: Mapping[str, SubjectResponses], train: Mapping[str, Sequence[str]],
                 feature_stimuli: Sequence[str] | None = None,
                 n_components: int | None = None):
        index = {s: i for i, s in enumerate(np.asarray(feature_ids).astype(str))}
        union = sorted({s for sub in train for s in train[sub]} if feature_stimuli is None
                       else set(feature_stimuli))
        missing = [s for s in union if s not in index]
        if missing:
            raise RecordingError(f"{len(missing)} training stimuli have no features "
                                 f"(e.g. {missing[:3]})")
        fit_rows = np.array([index[s] for s in union])
        self.features = torch.from_numpy(_reduce(np.asarray(features), fit_rows, n_components))
        self.index = index
        self.subjects = dict(subjects)
        self.Y: dict[str, torch.Tensor] = {}
        self.rows: dict[str, dict[str, int]] = {}
        self.scale: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._on: dict[torch.device, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}
        for name, sub in self.subjects.items():
            rows = {s: i for i, s in enumerate(sub.stim_id)}
            train_rows = np.array([rows[s] for s in train.get(name, []) if s in rows])
            if train_rows.size < 2:
                raise RecordingError(f"sub-{name}: fewer than 2 training stimuli")
            Y, mean, std = _standardise(sub.Y, train_rows)
            self.Y[name] = torch.from_numpy(Y)
            self.rows[name] = rows
            self.scale[name] = (mean, std)

    @property
    def layer_dims(self) -> list[int]:
        return [self.features.shape[2]] * self.features.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the features and responses (what :meth:`on` copies)."""
        return self.features.nbytes + sum(y.nbytes for y in self.Y.values())

    def on(self, device: str | torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The features and responses on ``device``, copied there once and kept.

        On the device that holds them already (the CPU) these are the tensors
        themselves. :class:`EncodingBatches` gathers its batches from this copy, so
        that on a GPU a step indexes memory of the GPU instead of gathering on the
        host and copying the batch over; everything else reads the host tensors.
        """
        device = torch.device(device)
        if device == self.features.device:
            return self.features, self.Y
        if device not in self._on:
            self._on[device] = (self.features.to(device),
                                {s: y.to(device) for s, y in self.Y.items()})
        return self._on[device]

    def feature_rows(self, subject: str, stimuli: Sequence[str]) -> np.ndarray:
        """Rows of ``stimuli`` in the feature table."""
        return np.array([self.index[s] for s in stimuli], dtype=np.int64)

    def response_rows(self, subject: str, stimuli: Sequence[str]) -> np.ndarray:
        """Rows of ``stimuli`` in ``subject``'s responses."""
        rows = self.rows[subject]
        return np.array([rows[s] for s in stimuli], dtype=np.int64)

    def unstandardise(self, subject: str, pred: np.ndarray) -> np.ndarray:
        mean, std = self.scale[subject]
        return pred * std + mean


class StimulusBatches(Sampler):
    """Batches of one subject's stimuli with a random subset of its targets.

    Yields ``(subject, stimuli, targets)`` descriptors; :class:`EncodingBatches` turns
    them into tensors. With ``shuffle`` (training) the plan of every epoch is drawn from
    (seed, epoch); without it (validation, prediction) every stimulus and every target is
    visited in order, targets in chunks of ``n_targets``.

    Parameters
    ----------
    stimuli : mapping of str to sequence of str
        Per subject, the stimuli to visit.
    n_targets : mapping of str to int
        Per subject, its number of targets.
    batch_size : int
    n_sampled_targets : int or None
        Targets per batch (all when None or larger than the subject's count).
    shuffle : bool
    seed : int
    rank, world_size : int
        Data-parallel shard: rank ``r`` takes batches ``r, r + world_size, ...`` of the
        plan (the plan is the same on every rank).
    min_batches : int
        With ``shuffle``, an epoch repeats freshly drawn passes over the stimuli until
        it has at least this many batches. Small studies then still take enough steps
        between two validations for early stopping to see a trend, and large ones are
        unaffected.
    """

    def __init__(self, stimuli: Mapping[str, Sequence[str]], n_targets: Mapping[str, int],
                 batch_size: int, n_sampled_targets: int | None = None, *,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 min_batches: int = 1):
        self.stimuli = {k: list(v) for k, v in stimuli.items() if len(v)}
        self.n_targets = dict(n_targets)
        self.batch_size = int(batch_size)
        self.n_sampled = n_sampled_targets
        self.shuffle, self.seed = shuffle, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.min_batches = int(min_batches)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _plan(self) -> list[tuple[str, tuple[str, ...], tuple[int, ...] | None]]:
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch, "batches"))
        plan = self._one_pass(rng)
        if self.shuffle:
            while len(plan) < self.min_batches:
                plan += self._one_pass(rng)
        return plan[self.rank::self.world_size]

    def _one_pass(self, rng) -> list[tuple[str, tuple[str, ...], tuple[int, ...] | None]]:
        plan = []
        for subject in sorted(self.stimuli):
            stims = np.array(self.stimuli[subject])
            n_t = self.n_targets[subject]
            k = n_t if self.n_sampled is None else min(int(self.n_sampled), n_t)
            order = rng.permutation(len(stims)) if self.shuffle else np.arange(len(stims))
            for start in range(0, len(stims), self.batch_size):
                chunk = tuple(stims[order[start:start + self.batch_size]])
                if self.shuffle:
                    targets = tuple(np.sort(rng.choice(n_t, k, replace=False)).tolist()) \
                        if k < n_t else None
                    plan.append((subject, chunk, targets))
                else:
                    for t0 in range(0, n_t, k):
                        targets = None if k >= n_t else tuple(range(t0, min(t0 + k, n_t)))
                        plan.append((subject, chunk, targets))
        if self.shuffle:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        return plan

    def __iter__(self) -> Iterator:
        # A generator: the plan is drawn when iteration starts, after Lightning's
        # set_epoch, also for the first epoch after a resume (iter() comes earlier).
        yield from self._plan()

    def __len__(self) -> int:
        return len(self._plan())


class EncodingBatches(Dataset):
    """Turn :class:`StimulusBatches` descriptors into tensors of an :class:`EncodingData`.

    Each item is a dict: ``features`` (B, L, D), ``y`` (B, S), ``subject`` (str),
    ``targets`` (LongTensor (S,) or None for all targets), ``stimuli`` (tuple of str).

    Parameters
    ----------
    data : EncodingData
    device : str or torch.device, optional
        Gather the batches from a copy of the data on this device
        (:meth:`EncodingData.on`), so that they are made where the model trains.
        None: where the data is (the CPU).
    """

    def __init__(self, data: EncodingData, device: str | torch.device | None = None):
        self.data = data
        self.device = data.features.device if device is None else torch.device(device)

    def __getitem__(self, item):
        subject, stimuli, targets = item
        data, dev = self.data, self.device
        features, Y = data.on(dev)
        x = features.index_select(
            0, torch.from_numpy(data.feature_rows(subject, stimuli)).to(dev))
        rows = torch.from_numpy(data.response_rows(subject, stimuli)).to(dev)
        t = None
        if targets is None:
            y = Y[subject].index_select(0, rows)
        else:  # gather only the sampled targets, never whole rows of a large brain
            t = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(dev)
            y = Y[subject][rows[:, None], t[None, :]]
        return {"features": x, "y": y, "subject": subject, "targets": t, "stimuli": stimuli}


def loader(data: EncodingData, stimuli: Mapping[str, Sequence[str]], *, batch_size: int,
           n_sampled_targets: int | None, shuffle: bool, seed: int, min_batches: int = 1,
           device: str | torch.device | None = None):
    """A DataLoader over planned batches (no worker processes: batches are slices).

    ``device``: where the batches are gathered (:class:`EncodingBatches`); None: the CPU.
    """
    from torch.utils.data import DataLoader

    n_targets = {s: data.Y[s].shape[1] for s in stimuli}
    sampler = StimulusBatches(stimuli, n_targets, batch_size, n_sampled_targets,
                              shuffle=shuffle, seed=seed, min_batches=min_batches)
    # An own generator: creating the iterator then draws nothing from torch's global
    # generator, whose state (dropout) must depend on (seed, epoch) alone.
    return DataLoader(EncodingBatches(data, device), sampler=sampler, batch_size=None,
                      collate_fn=lambda b: b, generator=torch.Generator())


def check_split(train: Mapping[str, Sequence[str]], test: Mapping[str, Sequence[str]],
                where: str) -> None:
    """No stimulus on both sides, for any subject and across subjects (shared models)."""
    all_train = {s for v in train.values() for s in v}
    all_test = {s for v in test.values() for s in v}
    check_disjoint(all_train, all_test, where=where)
