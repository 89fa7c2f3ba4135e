"""What every cross-subject training experiment shares: joint folds and their splits.

A model trained on several subjects at once sees a stimulus through every subject that
heard it, so its folds are study-level (:func:`brainhead.splits.joint_folds`): each
stimulus is on the same side of the split for every subject, and validation stimuli
(early stopping) are carved from the training side only, one set for all subjects.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .._logging import logger
from ..io.store import spec_hash
from ..splits import joint_folds, validation_split
from .data import SubjectResponses, check_split, load_subject_responses
from .trainer import TrainConfig, epoch_seed, resolve_device

__all__ = ["JointExperiment", "load_modality", "stimulus_subset"]


def stimulus_subset(stimuli: Sequence[str], fraction: float, seed: int, key: str
                    ) -> list[str]:
    """A seeded ``fraction`` of ``stimuli`` (at least 2), independent of input order."""
    stimuli = sorted(stimuli)
    if fraction >= 1:
        return stimuli
    n = max(2, int(round(fraction * len(stimuli))))
    rng = np.random.default_rng(epoch_seed(seed, 0, f"subset:{key}:{fraction}"))
    return sorted(np.asarray(stimuli)[rng.choice(len(stimuli), n, replace=False)].tolist())



def load_modality(response_paths: Sequence[str | Path], family: str
                  ) -> tuple[dict[str, SubjectResponses], str]:
    """Every subject's training rows, and their one modality (a job trains one)."""
    subjects = {}
    for path in response_paths:
        sub = load_subject_responses(path)
        subjects[sub.subject] = sub
    modalities = {sub.modality for sub in subjects.values()}
    if len(modalities) != 1:
        raise ValueError(f"{family}: one modality per job, got {sorted(modalities)}")
    return subjects, modalities.pop()


class JointExperiment:
    """Subjects of one modality, their joint outer folds, and the runs trained on them.

    A family subclasses it with its :attr:`family` name, its settings' :attr:`defaults`
    and the :attr:`model_keys` among them that define its model (part of every run key).

    Parameters
    ----------
    subjects : mapping of str to SubjectResponses
    features : dict of str to ndarray, shape (n_layers, n_stimuli, dim)
        Layer features per control (``trained``, ``random``).
    feature_ids : ndarray of str
        Stimulus id of each feature row.
    out_dir : path-like
        The job's output folder (runs go to ``out_dir/runs``).
    params : dict
        The family's section of the study's ``train`` settings (other keys are ignored).
    cfg : TrainConfig
    transfer_subject : str, optional
        The subject held out for new-subject experiments (default: the last by id).
    """

    family = "experiment"
    defaults: dict = {}
    model_keys: tuple[str, ...] = ()

    def __init__(self, subjects: Mapping[str, SubjectResponses], features: dict[str, np.ndarray],
                 feature_ids: np.ndarray, out_dir: str | Path, params: dict, cfg: TrainConfig,
                 *, transfer_subject: str | None = None):
        self.subjects = dict(sorted(subjects.items()))
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.folds, self.unmatched = joint_folds({s: sub.folds for s, sub in
                                                  self.subjects.items()}, seed=cfg.seed)
        self.n_folds = max(self.folds.values()) + 1
        self.transfer_subject = transfer_subject or list(self.subjects)[-1]
        self.runs: list[dict] = []
        self.checks: dict[str, float] = {}
        self.modality = next(iter(self.subjects.values())).modality if self.subjects else ""
        self.features, self.feature_ids = features, np.asarray(feature_ids).astype(str)
        self.out_dir = Path(out_dir)
        self.params = {**self.defaults,
                       **{k: v for k, v in params.items() if k in self.defaults}}
        self.identity = self.identity_hash(features, {k: self.params[k]
                                                      for k in self.model_keys})

    @classmethod
    def from_files(cls, response_paths: Sequence[str | Path], features_path: str | Path,
                   out_dir: str | Path, params: dict, cfg: TrainConfig, *,
                   transfer_subject: str | None = None) -> JointExperiment:
        """The experiment of one training job: every subject's ``responses.h5`` (one
        modality) and the study's ``features/<model>.h5``."""
        from ..features import read_features

        subjects, _ = load_modality(response_paths, cls.family)
        features, feature_ids, _ = read_features(features_path)
        exp = cls(subjects, features, feature_ids, out_dir, params, cfg,
                  transfer_subject=transfer_subject)
        logger.info("%s: %d subjects (%s targets), %d folds, device %s", cls.family,
                    len(subjects), "/".join(str(s.n_targets) for s in subjects.values()),
                    exp.n_folds, exp.device)
        return exp

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

    # ------------------------------------------------------------------ bookkeeping
    def identity_hash(self, features: Mapping[str, np.ndarray], model: dict) -> str:
        """Hash of the data, the model settings and the training settings: the part of
        every run key that is common to the experiment's runs."""
        ident = {s: (sub.Y.shape, zlib.crc32(np.ascontiguousarray(sub.Y).tobytes()))
                 for s, sub in self.subjects.items()}
        ident["features"] = {k: zlib.crc32(np.ascontiguousarray(v).tobytes())
                             for k, v in features.items()}
        return spec_hash({"data": ident, "model": model,
                          "train": {k: v for k, v in vars(self.cfg).items()
                                    if k not in ("progress", "device")}})

    @staticmethod
    def state_hash(net: torch.nn.Module) -> str:
        """CRC of a model's weights (names and values), for run keys built on a model."""
        crc = 0
        for k, v in sorted(net.state_dict().items()):
            crc = zlib.crc32(k.encode() + v.detach().cpu().numpy().tobytes(), crc)
        return f"{crc:08x}"

    def check_frozen(self, name: str, before: dict, net: torch.nn.Module) -> None:
        """Raise unless every weight in ``before`` (a state dict) is unchanged in ``net``;
        the largest change is kept in ``checks['frozen_max_change']``."""
        after = net.state_dict()
        change = max(float((after[k] - v).abs().max()) for k, v in before.items())
        self.checks["frozen_max_change"] = max(self.checks.get("frozen_max_change", 0.0),
                                               change)
        if change != 0.0:
            raise RuntimeError(f"{name}: frozen parameters changed by {change}")

    # ------------------------------------------------------------------ crowd
    def crowd_subsets(self, fraction: float) -> dict[str, list[str]]:
        """Every subject's own seeded ``fraction`` of its outer fold 0 training stimuli:
        what the crowd comparison trains on (validation stimuli are carved from them)."""
        train, _ = self.split(0)
        return {s: stimulus_subset(train[s], fraction, self.cfg.seed, f"crowd:{s}")
                for s in self.subjects}

    def crowd_runs(self, fractions: Sequence[float]) -> Iterator[tuple]:
        """The runs of a crowd comparison on outer fold 0: one model trained on every
        subject against one model per subject, at fractions of the stimuli.

        Each subject keeps its own seeded ``fraction`` of its fold-0 training stimuli, so
        the joint model sees the union of the subsets, each stimulus through the subjects
        that kept it. Validation stimuli come from the union with cross-validation's
        fold-0 draw: at fraction 1 the joint run is that fold's, reused rather than
        trained again. Subjects left with too few stimuli are skipped with a warning.

        Yields
        ------
        fraction, subject, n_stimuli, method ("joint" or "per_subject"), module, data,
        test_stimuli
        """
        if len(self.subjects) < 2:
            logger.warning("%s: the crowd comparison needs at least 2 subjects; skipped",
                           self.family)
            return
        _, test = self.split(0)
        for frac in fractions:
            subset = self.crowd_subsets(frac)
            fit, val = self.fit_val(subset, "cv0")
            joint, data = self.run(f"crowd/{frac}/joint", "trained", fit, val)
            for s in self.subjects:
                if len(fit[s]) < 2 or not val[s]:
                    logger.warning("%s: sub-%s has too few stimuli for the crowd comparison "
                                   "at %s; skipped", self.family, s, frac)
                    continue
                yield frac, s, len(subset[s]), "joint", joint, data, test[s]
                single, sdata = self.run(f"crowd/{frac}/single-{s}", "trained", {s: fit[s]},
                                         {s: val[s]})
                yield frac, s, len(subset[s]), "per_subject", single, sdata, test[s]

    # ------------------------------------------------------------------ new subject
    def new_subject_runs(self, kind: str, fractions: Sequence[float],
                         methods: tuple[str, str], *, fold: int = 0,
                         subject: str | None = None) -> Iterator[tuple]:
        """The runs of a new-subject experiment on one outer fold.

        A base model is trained on every subject but :attr:`transfer_subject`; then, for
        each fraction ``k`` of the new subject's training stimuli, ``methods[0]`` trains
        only the new subject's own parameters on the frozen base (the subclass's
        ``run(..., base=, new_subject=)``) and ``methods[1]`` the same architecture on
        the new subject alone.

        ``fold`` and ``subject`` (default: fold 0 and :attr:`transfer_subject`, what the
        pipeline runs) repeat the experiment on another outer fold or with another
        subject held out, with their own seeded subsets (benchmarks).

        Yields
        ------
        fraction, n_stimuli, method, module, data, test_stimuli
        """
        new = subject or self.transfer_subject
        if new not in self.subjects:
            raise KeyError(f"{self.family}: unknown subject {new!r}; known: "
                           f"{list(self.subjects)}")
        if fold:  # the pipeline's fold 0 keeps its run names and seeds
            kind = f"{kind}-fold{fold}"
        if new != self.transfer_subject:
            kind = f"{kind}-{new}"
        others = [s for s in self.subjects if s != new]
        if not others:
            logger.warning("%s: %s needs at least 2 subjects; skipped", self.family, kind)
            return
        train, test = self.split(fold)
        base_train = {s: train[s] for s in others}
        fit, val = self.fit_val(base_train, f"{kind}-base")
        base, _ = self.run(f"{kind}/base", "trained", fit, val)
        feature_stimuli = sorted({x for v in base_train.values() for x in v})
        for frac in fractions:
            subset = stimulus_subset(train[new], frac, self.cfg.seed, f"{kind}:{new}")
            sfit, sval = self.fit_val({new: subset}, f"{kind}{frac}")
            if len(sfit[new]) < 2 or not sval[new]:
                logger.warning("%s: %d stimuli are too few for %s at k=%s", self.family,
                               len(subset), kind, frac)
                continue
            for method in methods:
                kwargs = ({"base": base.net.cpu(), "new_subject": new}
                          if method == methods[0] else {})
                module, data = self.run(f"{kind}/{frac}/{method}", "trained", sfit, sval,
                                        feature_stimuli=feature_stimuli, **kwargs)
                yield frac, len(subset), method, module, data, test[new]
