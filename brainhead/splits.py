"""The one place where cross-validation folds are made and checked.

Every score brainhead reports is computed on data that the fitted model never saw, and
"never saw" is decided here:

- :func:`leakage_free_groups` turns a subject's recording groups (runs, sessions) into
  cross-validation groups such that no stimulus is on both sides of a split;
- :func:`outer_folds` makes the outer (train, test) folds over those groups, the same
  for ridge encoding (:mod:`brainhead.align`) and for trained models
  (:mod:`brainhead.train`), so that their held-out scores compare target by target;
- :func:`stimulus_folds` gives the outer fold in which each stimulus of a subject is
  tested, and :func:`joint_folds` one assignment for subjects trained together, so that
  a stimulus sits on the same side of the split for every subject (a shared model that
  saw stimulus X through subject B has seen X);
- :func:`validation_split` carves an early-stopping set out of training stimuli only;
- :func:`check_disjoint` is called in the code paths themselves: a split that would put
  a stimulus on both sides raises :class:`LeakageError` naming the offenders.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Mapping

import numpy as np
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

logger = logging.getLogger("brainhead")

__all__ = ["LeakageError", "check_disjoint", "joint_folds", "leakage_free_groups",
           "outer_folds", "stimulus_folds", "validation_split"]


class LeakageError(ValueError):
    """A split would put the same stimulus (or group) on both sides."""


def leakage_free_groups(stim_id: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cross-validation groups such that no stimulus is on both sides of a split.

    Starts from the recording groups (runs/sessions) and merges every set of groups that
    share a stimulus. If that leaves fewer than three groups (too few for grouped alpha
    selection inside each training set), stimuli themselves become the groups (all
    repeats of a stimulus stay together).

    Parameters
    ----------
    stim_id, group : array-like, shape (n_samples,)

    Returns
    -------
    groups : ndarray of int, shape (n_samples,)
    """
    stim_id, group = np.asarray(stim_id).astype(str), np.asarray(group).astype(str)
    parent = {g: g for g in np.unique(group)}

    def find(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first_group = {}
    for s, g in zip(stim_id, group):
        if s in first_group:
            a, b = find(first_group[s]), find(g)
            if a != b:
                parent[b] = a
        else:
            first_group[s] = g
    roots = np.array([find(g) for g in group])
    if len(np.unique(roots)) < 3:
        roots = stim_id
    return np.unique(roots, return_inverse=True)[1]


def outer_splitter(groups: np.ndarray):
    """Leave-one-group-out up to 6 groups, else grouped 5-fold (deterministic)."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("encoding needs at least 2 groups of samples")
    return LeaveOneGroupOut() if n_groups <= 6 else GroupKFold(n_splits=5)


def outer_folds(groups: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outer (train, test) index pairs: leave-one-group-out up to 6 groups, else 5 folds."""
    groups = np.asarray(groups)
    dummy = np.zeros((len(groups), 1))
    return list(outer_splitter(groups).split(dummy, dummy, groups))


def _first_appearance(stim_id: np.ndarray, group: np.ndarray):
    stim_id = np.asarray(stim_id).astype(str)
    uniq, first = np.unique(stim_id, return_index=True)
    order = np.argsort(first)
    return uniq[order], np.asarray(group).astype(str)[first[order]]


def stimulus_folds(stim_id: np.ndarray, group: np.ndarray) -> dict[str, int]:
    """The outer fold in which each stimulus is tested, as :mod:`brainhead.align` splits.

    Repeats of a stimulus are one row (as alignment averages them), so the result is
    exactly the fold of that stimulus in :func:`brainhead.align.score_responses`.

    Parameters
    ----------
    stim_id, group : array-like, shape (n_trials,)
        Stimulus and recording group (run) of every trial of one subject.

    Returns
    -------
    folds : dict of str to int
    """
    stims, first_group = _first_appearance(stim_id, group)
    groups = leakage_free_groups(stims, first_group)
    out = {}
    for k, (_, test) in enumerate(outer_folds(groups)):
        out.update({s: k for s in stims[test]})
    return out


def _stable_stimulus_folds(stimuli: Iterable[str], n_folds: int, seed: int) -> dict[str, int]:
    """Balanced folds of stimuli, keyed by a hash of (seed, id): order-independent."""
    stimuli = sorted(set(stimuli))
    keys = np.array([zlib.crc32(f"{seed}:{s}".encode()) for s in stimuli])
    order = np.argsort(keys, kind="stable")
    return {stimuli[i]: int(rank % n_folds) for rank, i in enumerate(order)}


def joint_folds(subject_folds: Mapping[str, Mapping[str, int]], *, seed: int = 0,
                n_folds: int = 5) -> tuple[dict[str, int], list[str]]:
    """One fold per stimulus for subjects trained together.

    When every subject tests each stimulus in the same fold (the usual case: subjects
    who saw the same stimuli get the same stimulus-grouped folds), that assignment is
    kept, so a jointly trained model is scored on exactly the folds of each subject's
    ridge model. Otherwise the stimuli get one study-level assignment (balanced,
    seeded, independent of subject order) and the subjects whose own folds differ are
    returned, so that the caller can say their scores are not fold-matched to ridge.

    Parameters
    ----------
    subject_folds : mapping of subject to (mapping of stimulus to fold)
        :func:`stimulus_folds` of every subject.

    Returns
    -------
    folds : dict of str to int
        Fold of every stimulus of any subject.
    unmatched : list of str
        Subjects whose own ridge folds differ from ``folds``.
    """
    merged: dict[str, int] = {}
    consistent = True
    n_per_subject = {sub: len(set(f.values())) for sub, f in subject_folds.items()}
    if len(set(n_per_subject.values())) > 1:
        consistent = False
    for folds in subject_folds.values():
        for stim, k in folds.items():
            if merged.setdefault(stim, k) != k:
                consistent = False
    if consistent:
        return merged, []
    folds = _stable_stimulus_folds(merged, n_folds, seed)
    unmatched = [sub for sub, f in subject_folds.items()
                 if any(folds[s] != k for s, k in f.items())]
    logger.warning("subjects do not share one stimulus-grouped split; a study-level split "
                   "of %d stimuli into %d folds is used, so %d subject(s) (%s) are not "
                   "scored on their ridge folds", len(folds), n_folds, len(unmatched),
                   ", ".join(unmatched[:5]))
    return folds, unmatched


def validation_split(train_stimuli: Iterable[str], fraction: float, seed: int
                     ) -> tuple[list[str], list[str]]:
    """Split training stimuli into fitting and validation stimuli (early stopping).

    Only training stimuli are ever passed here, so the validation set never touches the
    test fold. The split is a seeded hash of the stimulus id: the same stimulus goes to
    the same side whatever the subject or the order of the input.

    Returns
    -------
    fit, val : list of str
        Sorted; ``val`` has ``round(fraction * n)`` stimuli (at least 1 when
        ``fraction > 0`` and there are at least 2 stimuli).
    """
    stimuli = sorted(set(train_stimuli))
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    n_val = int(round(fraction * len(stimuli)))
    if fraction > 0 and len(stimuli) >= 2:
        n_val = min(max(n_val, 1), len(stimuli) - 1)
    keys = np.array([zlib.crc32(f"val{seed}:{s}".encode()) for s in stimuli])
    order = np.argsort(keys, kind="stable")
    val = sorted(stimuli[i] for i in order[:n_val])
    fit = sorted(set(stimuli) - set(val))
    return fit, val


def check_disjoint(train: Iterable, test: Iterable, *, what: str = "stimulus",
                   where: str = "") -> None:
    """Raise :class:`LeakageError` if any item is on both sides of a split."""
    both = sorted(set(map(str, train)) & set(map(str, test)))
    if both:
        prefix = f"{where}: " if where else ""
        raise LeakageError(f"{prefix}{len(both)} {what}(s) on both sides of the split, "
                           f"e.g. {both[:5]}")
