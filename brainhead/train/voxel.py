"""The cross-subject voxel cross-attention encoder of a study: train, score, transfer, crowd.

:func:`train_voxel_encoder` trains :class:`encoders.voxel_xattn.VoxelCrossAttention`
jointly on every subject of one modality and writes, under
``results/<study>/models/voxel_xattn/<modality>/``:

``scores.tsv``
    Held-out Pearson r per subject, region and feature control (``trained`` model
    features, and the same architecture's ``random``-weights features through the same
    encoder), on the outer folds of :mod:`brainhead.align` (same stimuli per fold).
``layer_profile.tsv``
    A model-derived layer-alignment map per region: ``weight``, the encoder's attention
    over layers averaged over heads, held-out stimuli and the region's targets; and
    ``contribution``, each layer's share of the variance of the targets' held-out
    predicted responses (:func:`variance_shares` of the attention-weighted read-out of
    each layer), averaged over the region's targets. Neighbouring transformer layers
    carry similar features, so attention can split its weight between layers that the
    read-out then uses unequally; the contribution says which layer the predictions
    actually come from.
``transfer.tsv``
    New-subject transfer: every shared parameter frozen, only a held-out subject's
    target embeddings and read-outs learnt from a fraction ``k`` of its training
    stimuli, against the same architecture trained on that subject alone.
``crowd.tsv``
    Joint training over all subjects against one model per subject, at full and
    reduced data.
``predictions.h5``
    Per subject: held-out predictions, per-target r, attention profiles.
``summary.json``
    Settings, folds, runs (epochs, best epoch, seconds, device) and checks.

Each training run has its own folder under ``runs/`` (checkpoints, metrics.csv), keyed
by a hash of everything that defines it, so a rerun resumes or reuses it
(:func:`brainhead.train.trainer.fit_run`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._logging import progress
from ..io.store import atomic_path, provenance, spec_hash, write_arrays
from .data import EncodingData, loader
from .experiment import JointExperiment
from .modules import EncoderModule
from .trainer import TrainConfig, epoch_seed, fit_run

FAMILY = "voxel_xattn"

#: Defaults of the study's ``train.voxel_xattn`` section (the schema repeats them).
DEFAULTS = {"d_model": 32, "n_heads": 1, "dropout": 0.0, "n_sampled_targets": 4096,
            "cosine_weight": 0.0, "subject_lr_scale": 3.0, "n_components": None,
            "readout": "ridge", "init": "ridge",
            "keys": "layer", "transfer": True, "transfer_fractions": [0.1, 0.25, 0.5, 1.0],
            "crowd": True, "crowd_fractions": [1.0, 0.25]}



def _r(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    from ..align.ridge import pearson_r

    return pearson_r(pred.astype(np.float64), y.astype(np.float64))


def variance_shares(terms: np.ndarray) -> np.ndarray:
    """Each layer's share of the variance of a target's predicted response.

    With the prediction ``p = sum_l t_l`` (plus a constant), ``cov(t_l, p) / var(p)``
    sums to 1 over layers: the part of the predicted response that each layer's term
    carries (a layer can take a negative share when its term works against the others).
    Targets whose prediction does not vary get NaN.

    Parameters
    ----------
    terms : ndarray, shape (n_stimuli, n_targets, n_layers)
        :meth:`encoders.voxel_xattn.VoxelCrossAttention.layer_terms` over stimuli.

    Returns
    -------
    shares : ndarray, shape (n_targets, n_layers)
    """
    terms = np.asarray(terms, dtype=np.float64)
    centred = terms - terms.mean(0)
    pred = centred.sum(-1)
    var = (pred ** 2).sum(0)
    cov = np.einsum("bsl,bs->sl", centred, pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var[:, None] > 1e-12 * max(1.0, float(var.max(initial=0.0))),
                        cov / var[:, None], np.nan)


@torch.no_grad()
def ridge_init_projection(net: torch.nn.Module, data: EncodingData,
                          stimuli: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Start the shared projection from the principal directions of ridge encoding.

    Each subject's targets are regressed on each layer's features over ``stimuli`` (that
    subject's fitting stimuli) by ridge, with a penalty per target chosen by exact
    leave-one-out (:class:`brainhead.align.ridge.GroupRidgeCV`). The rows of the
    projection become the top ``d_model`` eigenvectors of ``sum C C^T`` over the
    coefficient matrices ``C`` (features x targets) of every subject and layer (one
    projection per layer, from that layer's coefficients, when layers are not shared):
    the feature directions that ridge encoding reads out, a reduced-rank ridge estimate.

    Why: the layers of a transformer are so alike on a few hundred stimuli that, from a
    random projection, attention over layers finds the planted layer of a region only
    by luck of the initialisation (on the demo the posterior region's profile peaked at
    layer 0, 1 or 2 from seed to seed); from these directions the layer whose content
    the targets read out predicts them best, and attention can tell it from its
    neighbours. The validation and test stimuli are not used; row norms keep the scale
    of PyTorch's default initialisation.

    Parameters
    ----------
    net : VoxelCrossAttention
        Its ``proj`` layers are overwritten (weights and biases).
    data : EncodingData
        Features and responses as the encoder sees them.
    stimuli : mapping of str to sequence of str
        Subject -> the stimuli to fit on (subjects with fewer than 3 are left out).

    Returns
    -------
    spectrum : ndarray, shape (n_projections, n_features)
        Eigenvalues of each projection's ``sum C C^T``, largest first.
    """
    from ..align.ridge import GroupRidgeCV
    from .readout import DEFAULT_ALPHAS

    n_layers, d_feat = data.features.shape[1], data.features.shape[2]
    grams = torch.zeros(n_layers, d_feat, d_feat, dtype=torch.float64)
    for s, stims in stimuli.items():
        if len(stims) < 3:
            continue
        x = data.features[torch.from_numpy(data.feature_rows(s, stims))].double().numpy()
        y = data.Y[s][torch.from_numpy(data.response_rows(s, stims))].double().numpy()
        for layer in range(n_layers):
            coef = GroupRidgeCV(alphas=DEFAULT_ALPHAS, cv="loo", standardize=False,
                                device="cpu").fit(x[:, layer], y).coef_
            coef = torch.from_numpy(np.asarray(coef, dtype=np.float64))
            grams[layer] += coef @ coef.T
    if len(net.proj) == 1:
        grams = grams.sum(0, keepdim=True)
    spectra = []
    for proj, gram in zip(net.proj, grams):
        evals, evecs = torch.linalg.eigh(gram)                      # ascending
        top = evecs[:, -proj.weight.shape[0]:].flip(-1).T           # (d_model, d_feat)
        scale = proj.weight.norm(dim=1).mean()
        proj.weight.copy_((top * scale).to(proj.weight.dtype))
        proj.bias.zero_()
        spectra.append(evals.flip(0).numpy())
    return np.stack(spectra)


class VoxelEncoderExperiment(JointExperiment):
    """Everything one modality's encoder job trains and scores (see the module doc)."""

    family = FAMILY
    defaults = DEFAULTS
    model_keys = ("d_model", "n_heads", "dropout", "n_sampled_targets", "cosine_weight",
                  "subject_lr_scale", "n_components", "keys", "readout", "init")

    # ------------------------------------------------------------------ one run
    def _net(self, n_targets: Mapping[str, int], dims: Sequence[int], key: str):
        from encoders.voxel_xattn import VoxelCrossAttention

        torch.manual_seed(epoch_seed(self.cfg.seed, 0, f"init:{key}"))
        p = self.params
        return VoxelCrossAttention(n_targets, dims, d_model=p["d_model"], n_heads=p["n_heads"],
                                   dropout=p["dropout"], keys=p["keys"],
                                   shared_projection=len(set(dims)) == 1)

    def run(self, name: str, control: str, fit: Mapping[str, Sequence[str]],
            val: Mapping[str, Sequence[str]], *, feature_stimuli: Sequence[str] | None = None,
            base: torch.nn.Module | None = None, new_subject: str | None = None
            ) -> tuple[EncoderModule, EncodingData]:
        """Train one model (or, with ``base``, only ``new_subject``'s parameters)."""
        subjects = {s: self.subjects[s] for s in fit}
        train = {s: list(fit[s]) + list(val.get(s, [])) for s in fit}
        data = EncodingData(self.features[control], self.feature_ids, subjects, train,
                            feature_stimuli=feature_stimuli,
                            n_components=self.params["n_components"])
        definition = {"identity": self.identity, "control": control,
                      "fit": {s: list(v) for s, v in fit.items()},
                      "val": {s: list(v) for s, v in val.items()},
                      "feature_stimuli": sorted(feature_stimuli or []),
                      "base": None if base is None else self.state_hash(base),
                      "new_subject": new_subject}
        key = spec_hash(definition)
        if base is None:
            net = self._net({s: data.Y[s].shape[1] for s in subjects}, data.layer_dims, key)
            if self.params["init"] == "ridge":
                ridge_init_projection(net, data, fit)
            trainable = None
        else:
            net = copy.deepcopy(base)
            torch.manual_seed(epoch_seed(self.cfg.seed, 0, f"init:{key}"))
            net.add_subject(new_subject, data.Y[new_subject].shape[1])
            trainable = [new_subject]
        # sparse per-target updates only where a step samples some of a subject's targets
        sparse = any(data.Y[s].shape[1] > self.params["n_sampled_targets"] for s in subjects)
        module = EncoderModule(net, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                               cosine_weight=self.params["cosine_weight"], trainable=trainable,
                               subject_lr_scale=self.params["subject_lr_scale"],
                               sparse_targets=sparse)
        before = None if base is None else copy.deepcopy(base.state_dict())
        device = self._batch_device(data)
        train_loader = loader(data, fit, batch_size=self.cfg.batch_size,
                              n_sampled_targets=self.params["n_sampled_targets"], shuffle=True,
                              seed=epoch_seed(self.cfg.seed, 0, f"batches:{key}"),
                              min_batches=self.cfg.min_steps_per_epoch * len(fit),
                              device=device)
        val_loader = loader(data, val, batch_size=self.cfg.batch_size,
                            n_sampled_targets=self.params["n_sampled_targets"] * 16,
                            shuffle=False, seed=0, device=device)
        run_dir = self.out_dir / "runs" / key
        info = fit_run(module, train_loader, val_loader, run_dir, self.cfg, name=name)
        if self.params["readout"] == "ridge":
            self._refit_readouts(net, data, trainable or list(fit), train, run_dir)
        if before is not None:  # the frozen parameters must not have moved
            self.check_frozen(name, before, net)
        self.runs.append({"run": name, "dir": f"runs/{key}", **info})
        return module, data

    def _batch_device(self, data: EncodingData) -> str | None:
        """Where a run's batches are gathered: on the GPU when it trains on one GPU.

        The run's features and responses are then copied to the GPU once, when they
        take at most half of its free memory, and every step gathers its batch there
        (on an H200 at 4 x 100,000 targets, batch 256 and 32,768 sampled targets,
        gathering on the host took 56 of a step's 58 ms). Several GPUs (each of
        Lightning's processes holds one) and the CPU gather on the host.
        """
        if self.device != "cuda" or not self.cfg.single_process:
            return None
        free, _ = torch.cuda.mem_get_info()
        return "cuda" if data.nbytes <= free // 2 else None

    def _refit_readouts(self, net: torch.nn.Module, data: EncodingData,
                        subjects: Sequence[str], train: Mapping[str, Sequence[str]],
                        run_dir: Path) -> None:
        """Closed-form ridge read-outs on every training stimulus (fit + validation).

        The trained read-outs came from the fit split alone and stopped early; the
        ridge solution uses all training stimuli of each target with its own penalty
        (:func:`brainhead.train.readout.refit_readouts`). The test fold is never seen.
        The refitted weights go to ``final.pt`` (a state dict) beside the checkpoints,
        once: a reused run refits to the same weights and leaves its folder untouched.
        """
        from .readout import refit_readouts

        net.to("cpu")
        for s in subjects:
            stimuli = sorted(train[s])
            x = data.features[torch.from_numpy(data.feature_rows(s, stimuli))]
            y = data.Y[s][torch.from_numpy(data.response_rows(s, stimuli))]
            refit_readouts(net, x, y, s)
        if not (run_dir / "final.pt").is_file():
            with atomic_path(run_dir / "final.pt") as tmp:
                torch.save(net.state_dict(), tmp)

    @torch.no_grad()
    def predict(self, module: EncoderModule, data: EncodingData, subject: str,
                stimuli: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Predictions (n_stimuli, n_targets), in response units, and the mean attention
        over layers of each target on these stimuli (n_targets, n_layers)."""
        net = module.net.to(self.device).eval()
        n_t = data.Y[subject].shape[1]
        chunk = max(1, 2 ** 22 // max(1, len(stimuli) * net.n_heads * len(data.layer_dims)))
        x = data.features[torch.from_numpy(data.feature_rows(subject, stimuli))].to(self.device)
        preds, attns = [], []
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device == "cuda")
        with autocast:
            for t0 in range(0, n_t, chunk):
                t = torch.arange(t0, min(t0 + chunk, n_t), device=self.device)
                p, a = net(x, subject, t, return_attention=True)
                preds.append(p.float().cpu())
                attns.append(a.float().mean(0).cpu())
        pred = torch.cat(preds, 1).numpy()
        return data.unstandardise(subject, pred), torch.cat(attns, 0).numpy()

    def contributions(self, module: EncoderModule, data: EncodingData, subject: str,
                      stimuli: Sequence[str]) -> np.ndarray:
        """Each layer's share of the variance of every target's predicted response on
        these stimuli (:func:`variance_shares`), shape (n_targets, n_layers)."""
        net = module.net.to(self.device).eval()
        x = data.features[torch.from_numpy(data.feature_rows(subject, stimuli))].to(self.device)
        n_t = data.Y[subject].shape[1]
        chunk = max(1, 2 ** 22 // max(1, len(stimuli) * net.n_heads * len(data.layer_dims)))
        shares = []
        with torch.no_grad():
            for t0 in range(0, n_t, chunk):
                t = torch.arange(t0, min(t0 + chunk, n_t), device=self.device)
                shares.append(variance_shares(net.layer_terms(x, subject, t).float().cpu()
                                              .numpy()))
        return np.concatenate(shares, 0)

    # ------------------------------------------------------------------ experiments
    def cross_validate(self) -> dict:
        """Joint training on every outer fold, for each feature control."""
        out = {}
        for control in self.features:
            per = {s: {"pred": np.zeros_like(sub.Y), "r_folds": [], "attn": 0.0,
                       "share": 0.0} for s, sub in self.subjects.items()}
            for fold in progress(range(self.n_folds), desc=f"{FAMILY} {control}"):
                train, test = self.split(fold)
                fit, val = self.fit_val(train, f"cv{fold}")
                module, data = self.run(f"cv/{control}/fold{fold}", control, fit, val)
                for s in self.subjects:
                    if not test[s]:
                        continue
                    pred, attn = self.predict(module, data, s, test[s])
                    rows = data.response_rows(s, test[s])
                    per[s]["pred"][rows] = pred
                    per[s]["r_folds"].append(_r(pred, self.truth(s, test[s])))
                    per[s]["attn"] = per[s]["attn"] + attn * len(test[s])
                    share = self.contributions(module, data, s, test[s])
                    per[s]["share"] = per[s]["share"] + share * len(test[s])
            for s, sub in self.subjects.items():
                per[s]["r"] = np.nanmean(np.stack(per[s]["r_folds"]), axis=0)
                per[s]["attn"] = per[s]["attn"] / len(sub.stim_id)
                per[s]["share"] = per[s]["share"] / len(sub.stim_id)
            out[control] = per
        return out

    def transfer(self) -> list[dict]:
        """New-subject transfer on fold 0 against the same architecture trained alone."""
        new, rows = self.transfer_subject, []
        for frac, n, method, module, data, test in self.new_subject_runs(
                "transfer", self.params["transfer_fractions"], ("transfer", "alone")):
            pred, _ = self.predict(module, data, new, test)
            rows += self._region_rows(new, _r(pred, self.truth(new, test)),
                                      {"fraction": frac, "n_stimuli": n, "method": method})
        return rows

    def crowd(self) -> list[dict]:
        """Joint training over subjects against one model per subject, on fold 0."""
        rows = []
        for frac, s, n, method, module, data, test in self.crowd_runs(
                self.params["crowd_fractions"]):
            pred, _ = self.predict(module, data, s, test)
            rows += self._region_rows(s, _r(pred, self.truth(s, test)),
                                      {"fraction": frac, "n_stimuli": n, "method": method})
        return rows


def train_voxel_encoder(response_paths: Sequence[str | Path], features_path: str | Path,
                        out_dir: str | Path, params: dict, *, seed: int = 0,
                        model: str = "", transfer_subject: str | None = None) -> dict:
    """Train and score the voxel cross-attention encoder on one modality's subjects.

    Parameters
    ----------
    response_paths : sequence of path-like
        ``responses.h5`` of every subject to train on (one modality).
    features_path : path-like
        ``features/<model>.h5`` (trained and random-weights features).
    out_dir : path-like
        ``results/<study>/models/voxel_xattn/<modality>``.
    params : dict
        The study's validated ``train`` section (its ``voxel_xattn`` sub-section holds
        the model's settings).
    seed : int
        The study seed (``train.seed`` overrides it).
    transfer_subject : str, optional
        Subject held out for new-subject transfer (default: the last by id).

    Returns
    -------
    summary : dict
        The content of ``summary.json``.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    cfg = TrainConfig.from_params(params, seed)
    exp = VoxelEncoderExperiment.from_files(response_paths, features_path, out_dir,
                                            params.get(FAMILY, {}), cfg,
                                            transfer_subject=transfer_subject)
    modality = exp.modality
    cv = exp.cross_validate()
    transfer = exp.transfer() if exp.params["transfer"] else []
    crowd = exp.crowd() if exp.params["crowd"] else []
    _write_outputs(exp, cv, transfer, crowd, out_dir, modality=modality, model=model,
                   params=params, seed=cfg.seed)
    summary = {"family": FAMILY, "modality": modality, "model": model,
               "subjects": list(exp.subjects), "n_folds": exp.n_folds,
               "folds_match_ridge": not exp.unmatched, "unmatched_subjects": exp.unmatched,
               "transfer_subject": exp.transfer_subject, "device": exp.device,
               "settings": {**vars(cfg), FAMILY: exp.params}, "runs": exp.runs,
               "checks": exp.checks, "seconds": round(time.perf_counter() - start, 2)}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _write_outputs(exp: VoxelEncoderExperiment, cv: dict, transfer: list[dict],
                   crowd: list[dict], out_dir: Path, *, modality: str, model: str,
                   params: dict, seed: int) -> None:
    scores, profile, arrays = [], [], {}
    for control, per in cv.items():
        for s, res in per.items():
            sub = exp.subjects[s]
            for row in exp._region_rows(s, res["r"], {}):
                scores.append({"subject": s, "modality": modality, "region": row["region"],
                               "model": model, "control": control, "metric": "r",
                               "score": row["r"], "n_targets": row["n_targets"]})
            for reg in ["all", *sorted(set(sub.region))]:
                cols = np.ones(sub.n_targets, bool) if reg == "all" else sub.region == reg
                weights = res["attn"][cols].mean(0)
                shares = np.nanmean(res["share"][cols], axis=0)
                profile += [{"subject": s, "modality": modality, "region": reg,
                             "control": control, "layer": layer, "weight": float(w),
                             "contribution": float(c)}
                            for layer, (w, c) in enumerate(zip(weights, shares))]
            arrays.update({f"sub-{s}/pred_{control}": res["pred"].astype(np.float32),
                           f"sub-{s}/r_{control}": res["r"].astype(np.float32),
                           f"sub-{s}/attention_{control}": res["attn"].astype(np.float32),
                           f"sub-{s}/contribution_{control}": res["share"].astype(np.float32)})
    for s, sub in exp.subjects.items():
        arrays.update({f"sub-{s}/stim_id": sub.stim_id,
                       f"sub-{s}/fold": np.array([exp.folds[x] for x in sub.stim_id]),
                       f"sub-{s}/target_name": sub.target_name,
                       f"sub-{s}/target_region": sub.region})
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"scores.tsv": pd.DataFrame(scores), "layer_profile.tsv": pd.DataFrame(profile),
              "transfer.tsv": pd.DataFrame(transfer, columns=["subject", "fraction", "n_stimuli",
                                                              "method", "region", "r",
                                                              "n_targets"]),
              "crowd.tsv": pd.DataFrame(crowd, columns=["subject", "fraction", "n_stimuli",
                                                        "method", "region", "r", "n_targets"])}
    for name, frame in tables.items():
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, sep="\t", index=False)
    attrs = provenance("train", {"family": FAMILY, "model": model, "seed": seed, **params})
    write_arrays(out_dir / "predictions.h5", arrays, attrs)
