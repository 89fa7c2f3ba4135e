"""What every cross-subject training experiment shares: joint folds and their splits.

A model trained on several subjects at once sees a stimulus through every subject that
heard it, so its folds are study-level (:func:`brainhead.splits.joint_folds`): each
stimulus is on the same side of the split for every subject, and validation stimuli
(early stopping) are carved from the training side only, one set for all subjects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..splits import joint_folds, validation_split
from .data import SubjectResponses, check_split
from .trainer import TrainConfig, epoch_seed, resolve_device

__all__ = ["JointExperiment", "stimulus_subset"]


def stimulus_subset(stimuli: Sequence[str], fraction: float, seed: int, key: str
                    ) -> list[str]:
    """A seeded ``fraction`` of ``stimuli`` (at least 2), independent of input order."""
    stimuli = sorted(stimuli)
    if fraction >= 1:
        return stimuli
    n = max(2, int(round(fraction * len(stimuli))))
    rng = np.random.default_rng(epoch_seed(seed, 0, f"subset:{key}:{fraction}"))
    return sorted(np.asarray(stimuli)[rng.choice(len(stimuli), n, replace=False)].tolist())



class JointExperiment:
    """Subjects of one modality, their joint outer folds, and the runs trained on them.

    Parameters
    ----------
    subjects : mapping of str to SubjectResponses
    cfg : TrainConfig
    transfer_subject : str, optional
        The subject held out for new-subject experiments (default: the last by id).
    """

    family = "experiment"

    def __init__(self, subjects: Mapping[str, SubjectResponses], cfg: TrainConfig, *,
                 transfer_subject: str | None = None):
        self.subjects = dict(sorted(subjects.items()))
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.folds, self.unmatched = joint_folds({s: sub.folds for s, sub in
                                                  self.subjects.items()}, seed=cfg.seed)
        self.n_folds = max(self.folds.values()) + 1
        self.transfer_subject = transfer_subject or list(self.subjects)[-1]
        self.runs: list[dict] = []
        self.checks: dict[str, float] = {}

    # ------------------------------------------------------------------ splits
    def split(self, fold: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Training and test stimuli of every subject in outer fold ``fold``."""
        train, test = {}, {}
        for s, sub in self.subjects.items():
            k = np.array([self.folds[x] for x in sub.stim_id])
            train[s] = sorted(sub.stim_id[k != fold].tolist())
            test[s] = sorted(sub.stim_id[k == fold].tolist())
        check_split(train, test, where=f"{self.family} fold {fold}")
        return train, test

    def fit_val(self, train: Mapping[str, Sequence[str]], salt: str
                ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Carve validation stimuli (early stopping) out of the training side only.

        The validation stimuli are one set for all subjects, so a shared model is never
        validated on a stimulus that it fitted through another subject.
        """
        union = sorted({x for v in train.values() for x in v})
        _, val = validation_split(union, self.cfg.val_fraction,
                                  epoch_seed(self.cfg.seed, 0, f"val:{salt}"))
        val = set(val)
        fit = {s: [x for x in v if x not in val] for s, v in train.items()}
        vals = {s: [x for x in v if x in val] for s, v in train.items()}
        return fit, vals

    def truth(self, subject: str, stimuli: Sequence[str]) -> np.ndarray:
        sub = self.subjects[subject]
        rows = {s: i for i, s in enumerate(sub.stim_id)}
        return sub.Y[[rows[s] for s in stimuli]]

    def _region_rows(self, subject: str, r: np.ndarray, extra: dict) -> list[dict]:
        region = self.subjects[subject].region
        rows = [{"subject": subject, **extra, "region": "all", "r": float(np.nanmean(r)),
                 "n_targets": int(r.size)}]
        for reg in sorted(set(region)):
            cols = region == reg
            rows.append({"subject": subject, **extra, "region": reg,
                         "r": float(np.nanmean(r[cols])), "n_targets": int(cols.sum())})
        return rows
