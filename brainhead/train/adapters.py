"""Subject adapters and a shared decoder (brain -> model): retrieval and reset-tuning.

:func:`train_adapter_decoder` trains :class:`encoders.adapters.AdapterDecoder` jointly on
every subject of one modality, decoding the features of every layer of a model at once
(one output block per layer, so one run per fold gives the whole layer curve), and
writes, under ``results/<study>/models/adapters/<modality>/``:

``retrieval.tsv``
    Held-out retrieval per subject, layer and feature control: top-1 and top-5 accuracy
    of each decoded stimulus among the candidates of its fold (that fold's held-out
    stimuli), with the chance level and a permutation p-value. Controls: ``trained``
    (the model's features), ``random`` (the random-weights model's features) and
    ``shuffled`` (trained features, stimulus labels permuted within the training data,
    which must sit at chance).
``adaptation.tsv``
    Reset-tuning: a fresh adapter for a held-out subject, everything else frozen,
    trained on a fraction of its training stimuli, against a decoder trained from
    scratch on that subject alone at the same fraction. A linear adapter starts from
    its closed-form fit (:meth:`DecoderExperiment.fit_new_adapter`), then is fine-tuned.
``crowd.tsv``
    Joint against per-subject decoders on fold 0, each subject with its own seeded
    fraction of its training stimuli (as the voxel encoder's crowd comparison): does a
    decoder shared by every subject decode better than one per subject when data are
    scarce?
``predictions.h5``, ``summary.json``, ``runs/<hash>/``
    As for the voxel encoder (:mod:`brainhead.train.voxel`).

Held-out stimuli are held out for every subject at once (joint folds): retrieval among
stimuli that the shared decoder saw through another subject would be inflated.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._logging import progress
from ..io.store import atomic_path, provenance, spec_hash, write_arrays
from .data import EncodingData, loader
from .experiment import JointExperiment
from .modules import DecoderModule
from .trainer import TrainConfig, epoch_seed, fit_run

__all__ = ["DEFAULTS", "FAMILY", "DecoderExperiment", "decoder_config", "retrieval_hits",
           "train_adapter_decoder"]

FAMILY = "adapters"

#: Defaults of the study's ``train.adapters`` section.
DEFAULTS = {"d_shared": 256, "depth": 2, "adapter": "linear", "pool": None, "dropout": 0.1,
            "contrastive_weight": 1.0, "temperature": 0.07, "learn_temperature": True,
            "n_permutations": 1000, "adapt": True, "adapt_fractions": [0.1, 0.25, 0.5, 1.0],
            "shuffled_control": True, "crowd": True, "crowd_fractions": [0.25],
            "lr": None, "batch_size": None, "max_epochs": None, "min_steps_per_epoch": None,
            "patience": None, "reset_init": "ridge", "reset_lr": None}

#: Ridge penalties among which generalised cross-validation chooses, for the closed-form
#: fits of reset-tuning (on standardised responses and features).
RESET_ALPHAS = np.logspace(-2, 6, 17)

#: Settings of the ``train`` section that the ``adapters`` section may override (None:
#: the ``train`` value).
TRAIN_OVERRIDES = ("lr", "batch_size", "max_epochs", "min_steps_per_epoch", "patience")


def decoder_config(cfg: TrainConfig, params: Mapping) -> TrainConfig:
    """``cfg`` with the family's own training settings (those not None) in place."""
    return replace(cfg, **{k: params[k] for k in TRAIN_OVERRIDES
                           if params.get(k) is not None})


def retrieval_hits(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Rank of each decoded row's own stimulus among all candidates (0 = retrieved first).

    Parameters
    ----------
    pred, true : ndarray, shape (n, D)
        Decoded and true features of the same ``n`` candidate stimuli, row by row.

    Returns
    -------
    ranks : ndarray of int, shape (n,)
        Candidates more similar (cosine) to row ``i``'s decoded features than its own
        stimulus; ties count against the decoder.
    """
    sims = _cosine(pred, true)
    own = np.diag(sims)
    return (sims >= own[:, None]).sum(1) - 1


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def _null_topk(sims: np.ndarray, perms: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """Top-k hits (count) of every permutation of the candidates' labels, (n_perm, len(ks)).

    Under the null the decoded row ``i`` belongs to candidate ``perm[i]``; its rank is
    the number of candidates at least as similar as that one, minus one.
    """
    own = np.take_along_axis(sims[None, :, :], perms[:, :, None], axis=2)[..., 0]  # (P, n)
    ranks = (sims[None, :, :] >= own[..., None]).sum(2) - 1                      # (P, n)
    return np.stack([(ranks < k).sum(1) for k in ks], axis=1)


class DecoderExperiment(JointExperiment):
    """Everything one modality's decoder job trains and scores (see the module doc)."""

    family = FAMILY
    defaults = DEFAULTS
    model_keys = ("d_shared", "depth", "adapter", "pool", "dropout", "contrastive_weight",
                  "temperature", "learn_temperature")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layers = list(range(next(iter(self.features.values())).shape[0]))

    # ------------------------------------------------------------------ one run
    def _shuffled(self, features: np.ndarray, stimuli: Sequence[str], key: str) -> np.ndarray:
        """``features`` with the rows of ``stimuli`` permuted among themselves (seeded)."""
        index = {s: i for i, s in enumerate(self.feature_ids)}
        rows = np.array([index[s] for s in sorted(set(stimuli))])
        rng = np.random.default_rng(epoch_seed(self.cfg.seed, 0, f"shuffle:{key}"))
        out = np.array(features, copy=True)
        out[:, rows] = features[:, rows[rng.permutation(len(rows))]]
        return out

    def run(self, name: str, control: str, fit: Mapping[str, Sequence[str]],
            val: Mapping[str, Sequence[str]], *, base: torch.nn.Module | None = None,
            new_subject: str | None = None, feature_stimuli: Sequence[str] | None = None
            ) -> tuple[DecoderModule, EncodingData]:
        """Train one decoder (or, with ``base``, only ``new_subject``'s adapter)."""
        from encoders.adapters import AdapterDecoder

        subjects = {s: self.subjects[s] for s in fit}
        train = {s: list(fit[s]) + list(val.get(s, [])) for s in fit}
        feats = self.features["trained" if control == "shuffled" else control]
        if control == "shuffled":  # pairing broken within the training data only
            feats = self._shuffled(feats, [x for v in train.values() for x in v], name)
        data = EncodingData(feats, self.feature_ids, subjects, train,
                            feature_stimuli=feature_stimuli)
        p = self.params
        lr = self.cfg.lr
        definition = {"identity": self.identity, "control": control,
                      "fit": {s: list(v) for s, v in fit.items()},
                      "val": {s: list(v) for s, v in val.items()},
                      "feature_stimuli": sorted(feature_stimuli or []),
                      "base": None if base is None else self.state_hash(base),
                      "new_subject": new_subject}
        if base is not None:
            closed_form = p["reset_init"] == "ridge" and p["adapter"] == "linear"
            lr = p["reset_lr"] or (0.1 * lr if closed_form else lr)
            definition["reset"] = {"init": "ridge" if closed_form else "random", "lr": lr}
        key = spec_hash(definition)
        torch.manual_seed(epoch_seed(self.cfg.seed, 0, f"init:{key}"))
        if base is None:
            net = AdapterDecoder({s: data.Y[s].shape[1] for s in subjects},
                                 d_out=len(self.layers) * data.features.shape[2],
                                 d_shared=p["d_shared"], depth=p["depth"], adapter=p["adapter"],
                                 pool=p["pool"], dropout=p["dropout"])
            trainable = None
        else:
            net = copy.deepcopy(base)
            net.add_subject(new_subject, data.Y[new_subject].shape[1])
            trainable = [new_subject]
            if definition["reset"]["init"] == "ridge":
                self.fit_new_adapter(net, base, data, new_subject, fit[new_subject],
                                     feature_stimuli)
        module = DecoderModule(net, layers=self.layers, lr=lr,
                               weight_decay=self.cfg.weight_decay,
                               contrastive_weight=p["contrastive_weight"],
                               temperature=p["temperature"],
                               learn_temperature=p["learn_temperature"], trainable=trainable)
        before = None if base is None else copy.deepcopy(base.state_dict())
        train_loader = loader(data, fit, batch_size=self.cfg.batch_size, n_sampled_targets=None,
                              shuffle=True, seed=epoch_seed(self.cfg.seed, 0, f"batches:{key}"),
                              min_batches=self.cfg.min_steps_per_epoch * len(fit))
        val_loader = loader(data, val, batch_size=self.cfg.batch_size, n_sampled_targets=None,
                            shuffle=False, seed=0)
        info = fit_run(module, train_loader, val_loader, self.out_dir / "runs" / key, self.cfg,
                       name=name)
        if before is not None:  # the frozen parameters must not have moved
            self.check_frozen(name, before, net)
        self.runs.append({"run": name, "dir": f"runs/{key}", **info})
        return module, data

    @torch.no_grad()
    def shared_targets(self, base: torch.nn.Module, feature_stimuli: Sequence[str] | None,
                       stimuli: Sequence[str]) -> np.ndarray:
        """Where the frozen ``base`` expects ``stimuli`` in its shared space, (n, d).

        A shared-space encoding model: ridge regression (penalty by generalised
        cross-validation) from a stimulus' features (every decoded layer, standardised
        as in the base's run) to its shared representation, the mean over the base's
        subjects of their adapters' output for their responses to it, fitted on the
        base's training stimuli (``feature_stimuli``) alone; then predicted for
        ``stimuli``. Only the base's training data are read, so the targets need no
        stimulus in common with the new subject, and no held-out one.
        """
        from sklearn.linear_model import RidgeCV

        if not feature_stimuli:
            raise ValueError(f"{FAMILY}: reset-tuning from a ridge fit needs the base run's "
                             "training stimuli (feature_stimuli)")
        fs = sorted(set(feature_stimuli))
        seen = {}
        for s in base.subjects:
            own = set(self.subjects[s].stim_id.tolist())
            seen[s] = [x for x in fs if x in own]
        data = EncodingData(self.features["trained"], self.feature_ids,
                            {s: self.subjects[s] for s in base.subjects}, seen,
                            feature_stimuli=fs)
        was_training = base.training
        base.eval()
        device = next(base.parameters()).device
        total = np.zeros((len(fs), base.d_shared))
        count = np.zeros(len(fs))
        pos = {x: i for i, x in enumerate(fs)}
        for s, stims in seen.items():
            y = data.Y[s][torch.from_numpy(data.response_rows(s, stims))].to(device)
            rows = [pos[x] for x in stims]
            np.add.at(total, rows, base.embed(y, s).double().cpu().numpy())
            np.add.at(count, rows, 1)
        base.train(was_training)
        known = count > 0
        stims = [x for x, k in zip(fs, known) if k]
        F = self.true_features(data, stims).reshape(len(stims), -1)
        encoder = RidgeCV(alphas=RESET_ALPHAS).fit(F, total[known] / count[known, None])
        return encoder.predict(self.true_features(data, stimuli).reshape(len(stimuli), -1))

    def fit_new_adapter(self, net: torch.nn.Module, base: torch.nn.Module,
                        data: EncodingData, subject: str, stimuli: Sequence[str],
                        feature_stimuli: Sequence[str] | None) -> float:
        """Set ``subject``'s linear adapter in ``net`` to its closed-form fit.

        Ridge regression (penalty by generalised cross-validation) of the
        :meth:`shared_targets` of ``stimuli`` on the subject's responses to them (its
        fitting stimuli only, never the validation or test ones): the least-squares map
        into the shared space that the frozen decoder reads, regularised as a few dozen
        stimuli need. From a random start, gradient steps through the decoder learnt less
        from a few dozen stimuli than this fit (``benchmarks/reset_tuning.py``); the
        fine-tuning that follows starts here.

        Returns
        -------
        alpha : float
            The chosen penalty (also kept in ``checks['reset_alpha']``).
        """
        from sklearn.linear_model import RidgeCV

        target = self.shared_targets(base, feature_stimuli, stimuli)
        adapter = net.adapters[subject]
        with torch.no_grad():
            y = data.Y[subject][torch.from_numpy(data.response_rows(subject, stimuli))]
            X = adapter.map_inputs(y).double().numpy()
        fit = RidgeCV(alphas=RESET_ALPHAS).fit(X, target)
        adapter.set_linear(torch.from_numpy(fit.coef_).float(),
                           torch.from_numpy(np.asarray(fit.intercept_)).float())
        self.checks["reset_alpha"] = float(fit.alpha_)
        return float(fit.alpha_)

    @torch.no_grad()
    def decode(self, module: DecoderModule, data: EncodingData, subject: str,
               stimuli: Sequence[str]) -> np.ndarray:
        """Decoded features of ``subject``'s responses to ``stimuli``, (n, n_layers, D)."""
        module.eval().to(self.device)
        y = data.Y[subject][torch.from_numpy(data.response_rows(subject, stimuli))]
        return module(y.to(self.device), subject).float().cpu().numpy()

    @staticmethod
    def true_features(data: EncodingData, stimuli: Sequence[str]) -> np.ndarray:
        """The (standardised) features the decoder is trained on, (n, L, D)."""
        return data.features[torch.from_numpy(data.feature_rows("", stimuli))].numpy()

    # ------------------------------------------------------------------ experiments
    def cross_validate(self) -> tuple[list[dict], dict]:
        """Joint training on every outer fold, for every control; retrieval per layer."""
        controls = list(self.features) + (["shuffled"] if self.params["shuffled_control"]
                                          else [])
        n_perm = int(self.params["n_permutations"])
        rng = np.random.default_rng(epoch_seed(self.cfg.seed, 0, "retrieval-null"))
        rows, arrays = [], {}
        for control in controls:
            # per subject and layer: observed hits and null hits, summed over folds
            hits = {s: np.zeros((len(self.layers), 2)) for s in self.subjects}
            null = {s: np.zeros((len(self.layers), n_perm, 2)) for s in self.subjects}
            n_seen = {s: 0 for s in self.subjects}
            chance = {s: np.zeros(2) for s in self.subjects}
            decoded = {s: np.zeros((len(sub.stim_id), len(self.layers),
                                    self.features["trained"].shape[2]), np.float32)
                       for s, sub in self.subjects.items()}
            for fold in progress(range(self.n_folds), desc=f"{FAMILY} {control}"):
                train, test = self.split(fold)
                fit, val = self.fit_val(train, f"cv{fold}")
                module, data = self.run(f"cv/{control}/fold{fold}", control, fit, val)
                for s in self.subjects:
                    stimuli = test[s]
                    if len(stimuli) < 2:
                        continue
                    pred = self.decode(module, data, s, stimuli)
                    true = self.true_features(data, stimuli)
                    decoded[s][data.response_rows(s, stimuli)] = pred
                    n = len(stimuli)
                    perms = np.stack([rng.permutation(n) for _ in range(n_perm)])
                    for k, _ in enumerate(self.layers):
                        sims = _cosine(pred[:, k], true[:, k])
                        ranks = retrieval_hits(pred[:, k], true[:, k])
                        hits[s][k] += [(ranks < 1).sum(), (ranks < 5).sum()]
                        null[s][k] += _null_topk(sims, perms, (1, 5))
                    n_seen[s] += n
                    chance[s] += [1.0, min(5, n)]
            for s in self.subjects:
                n = max(n_seen[s], 1)
                for k, layer in enumerate(self.layers):
                    obs = hits[s][k]
                    p = (1 + (null[s][k] >= obs[None, :]).sum(0)) / (1 + n_perm)
                    rows.append({"subject": s, "control": control, "layer": layer,
                                 "top1": obs[0] / n, "top5": obs[1] / n,
                                 "chance_top1": chance[s][0] / n, "chance_top5": chance[s][1] / n,
                                 "p_top1": float(p[0]), "p_top5": float(p[1]),
                                 "n_stimuli": n_seen[s]})
                arrays[f"sub-{s}/decoded_{control}"] = decoded[s]
        return rows, arrays

    def adaptation(self, *, fold: int = 0, subject: str | None = None) -> list[dict]:
        """Reset-tuning of a held-out subject against a from-scratch decoder, on fold 0
        (``fold``, ``subject``: see
        :meth:`~brainhead.train.experiment.JointExperiment.new_subject_runs`)."""
        new, rows = subject or self.transfer_subject, []
        for frac, n, method, module, data, test in self.new_subject_runs(
                "adapt", self.params["adapt_fractions"], ("reset_tuning", "scratch"),
                fold=fold, subject=subject):
            rows += self._layer_hits(module, data, new, test, {"fraction": frac,
                                                               "n_stimuli": n, "method": method})
        return rows

    def _layer_hits(self, module, data: EncodingData, subject: str,
                    test: Sequence[str], extra: dict) -> list[dict]:
        """Per decoded layer: top-1/top-5 of ``subject``'s ``test`` stimuli among
        themselves, one row each with ``extra``."""
        pred = self.decode(module, data, subject, test)
        true = self.true_features(data, test)
        rows = []
        for k, layer in enumerate(self.layers):
            ranks = retrieval_hits(pred[:, k], true[:, k])
            rows.append({"subject": subject, **extra, "layer": layer,
                         "top1": float((ranks < 1).mean()),
                         "top5": float((ranks < 5).mean()), "n_candidates": len(test)})
        return rows

    def crowd(self) -> list[dict]:
        """Joint decoder against one decoder per subject at fractions of the stimuli
        (:meth:`~brainhead.train.experiment.JointExperiment.crowd_runs`), scored by
        top-1/top-5 among fold 0's held-out stimuli, which no run saw."""
        rows = []
        for frac, s, n, method, module, data, test in self.crowd_runs(
                self.params["crowd_fractions"]):
            rows += self._layer_hits(module, data, s, test, {"fraction": frac,
                                                             "n_stimuli": n, "method": method})
        return rows


def train_adapter_decoder(response_paths: Sequence[str | Path], features_path: str | Path,
                          out_dir: str | Path, params: dict, *, seed: int = 0, model: str = "",
                          transfer_subject: str | None = None) -> dict:
    """Train and score the adapter decoder on one modality's subjects.

    Parameters are those of :func:`brainhead.train.voxel.train_voxel_encoder`; the
    model's settings are the ``adapters`` sub-section of the study's ``train`` section.

    Returns
    -------
    summary : dict
        The content of ``summary.json``.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    cfg = decoder_config(TrainConfig.from_params(params, seed),
                         {**DEFAULTS, **params.get(FAMILY, {})})
    exp = DecoderExperiment.from_files(response_paths, features_path, out_dir,
                                       params.get(FAMILY, {}), cfg,
                                       transfer_subject=transfer_subject)
    modality = exp.modality
    retrieval, arrays = exp.cross_validate()
    adaptation = exp.adaptation() if exp.params["adapt"] else []
    crowd = exp.crowd() if exp.params["crowd"] else []
    for s, sub in exp.subjects.items():
        arrays.update({f"sub-{s}/stim_id": sub.stim_id,
                       f"sub-{s}/fold": np.array([exp.folds[x] for x in sub.stim_id])})
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"retrieval.tsv": pd.DataFrame(retrieval).assign(modality=modality, model=model),
              "adaptation.tsv": pd.DataFrame(adaptation, columns=[
                  "subject", "fraction", "n_stimuli", "method", "layer", "top1", "top5",
                  "n_candidates"]),
              "crowd.tsv": pd.DataFrame(crowd, columns=[
                  "subject", "fraction", "n_stimuli", "method", "layer", "top1", "top5",
                  "n_candidates"])}
    for name, frame in tables.items():
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, sep="\t", index=False)
    write_arrays(out_dir / "predictions.h5", arrays,
                 provenance("train", {"family": FAMILY, "model": model, "seed": cfg.seed,
                                      **params}))
    summary = {"family": FAMILY, "modality": modality, "model": model,
               "subjects": list(exp.subjects), "n_folds": exp.n_folds, "layers": exp.layers,
               "folds_match_ridge": not exp.unmatched, "unmatched_subjects": exp.unmatched,
               "transfer_subject": exp.transfer_subject, "device": exp.device,
               "settings": {**vars(cfg), FAMILY: exp.params}, "runs": exp.runs,
               "checks": exp.checks, "seconds": round(time.perf_counter() - start, 2)}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary
