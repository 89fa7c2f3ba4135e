"""The decode stage: every protocol x model x fold of a study, one table, one process.

:func:`run_decoding` is what the Snakemake rule ``decode`` calls. Per modality named in
``decode.modalities`` (with subjects), it pools the subjects' response tables
(:mod:`brainhead.decode.trials`), builds the folds of each protocol
(:mod:`brainhead.decode.protocols`, every split checked for leakage where it is made),
carves a validation split for early stopping from each fold's training side, fits every
model on the same folds and scores it on the test rows with its chance level and a
permutation p-value (:mod:`brainhead.decode.metrics`). It writes, atomically::

    results/<study>/decode/scores.tsv       one row per modality x protocol x subject x
                                            fold x model, plus fold "all" (pooled over a
                                            subject's folds; subject "all": over subjects)
    results/<study>/decode/predictions.h5   test rows: subject, trial, label, prediction,
                                            probabilities (with provenance)
    results/<study>/decode/attention.h5     class-averaged electrode x electrode attention
                                            of the electrode model, per protocol and subject
    results/<study>/decode/summary.json     settings, classes, folds, each fold's fit CPU
                                            time, skipped models and why
    results/<study>/decode/runs/...         training folders of the torch models (resume)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .._logging import logger, progress
from . import OUTPUTS  # the files the decode rule writes
from .metrics import SCORE_COLUMNS, fold_scores, pooled_scores
from .protocols import make_folds, validation_split
from .trials import DecodeRows, load_rows

__all__ = ["OUTPUTS", "decode_study", "run_decoding", "skip_reason"]

TORCH_MODELS = ("electrode_mha", "shallow_convnet")


def skip_reason(model: str, rows: DecodeRows, protocol: str) -> str | None:
    """Why ``model`` cannot run on ``rows`` under ``protocol`` (None when it can)."""
    from .baselines import BASELINES, BINARY_ONLY

    if model in BINARY_ONLY and len(rows.classes) != 2:
        return f"two classes only; {len(rows.classes)} here"
    if model in BASELINES:
        missing = [s for s, d in rows.data.items() if d.epochs is None]
        if missing:
            return (f"no epochs view in the response tables of sub-{', sub-'.join(missing)} "
                    "(preprocess again with this decode section)")
        if protocol == "CrossSubject":
            if rows.modality == "seeg":
                return "implants differ between subjects: raw-signal models have no shared channels"
            if not _common_channels(rows):
                return "no channel common to every subject"
            if len({d.epochs.shape[2] for d in rows.data.values()}) > 1:
                return "epochs of different lengths across subjects"
    return None


def _common_channels(rows: DecodeRows) -> list[str]:
    common = None
    for d in rows.data.values():
        common = list(d.channels) if common is None else [c for c in common if c in d.channels]
    return common or []


def _epochs_of(rows: DecodeRows, idx: np.ndarray, channels: list[str] | None) -> np.ndarray:
    parts = []
    for s, local in rows.per_subject(idx):
        d = rows.data[s]
        X = d.epochs[local]
        if channels is not None:
            X = X[:, [d.channels.index(c) for c in channels]]
        parts.append(X)
    return np.concatenate(parts)


def _electrode_trials(rows: DecodeRows, idx: np.ndarray):
    from ..train.electrode import ElectrodeTrials

    parts = []
    for s, local in rows.per_subject(idx):
        d = rows.data[s]
        coords = d.coords / 1000.0 if np.isfinite(d.coords).all() else None  # metres
        parts.append((s, d.bands[local], d.channels, coords))
    return ElectrodeTrials.from_arrays(parts)


def _fit_predict(model: str, rows: DecodeRows, fit, val, test, settings: dict, *,
                 seed: int, run_dir: Path, sfreq: float | None, channels):
    """Fit one model on rows ``fit`` (early stopping on ``val``); probabilities of ``test``.

    Returns ``(classes, proba, estimator)``.
    """
    if model == "electrode_mha":
        from ..train.electrode import ElectrodeAttentionClassifier

        mha = dict(settings["electrode_mha"])
        if mha.get("identity", "auto") == "auto":  # scalp names; implant coordinates
            mha["identity"] = "name" if rows.modality == "eeg" else "coords"
        clf = ElectrodeAttentionClassifier(**mha, seed=seed, device=settings["device"],
                                           run_dir=run_dir, progress=False)
        clf.fit(_electrode_trials(rows, fit), rows.y[fit],
                val=(_electrode_trials(rows, val), rows.y[val]))
        return clf.classes_, clf.predict_proba(_electrode_trials(rows, test)), clf
    from .baselines import make_baseline

    est = make_baseline(model, settings, sfreq=sfreq, seed=seed, run_dir=run_dir,
                        device=settings["device"])
    if model in TORCH_MODELS:
        est.fit(_epochs_of(rows, fit, channels), rows.y[fit],
                val=(_epochs_of(rows, val, channels), rows.y[val]))
    else:  # no early stopping: every training row
        train = np.sort(np.concatenate([fit, val]))
        est.fit(_epochs_of(rows, train, channels), rows.y[train])
    return est.classes_, est.predict_proba(_epochs_of(rows, test, channels)), est


def _full_proba(classes_fit, proba, classes) -> np.ndarray:
    """Probabilities over every class of the study (0 for a class the fold never saw)."""
    out = np.zeros((len(proba), len(classes)))
    for j, c in enumerate(classes_fit):
        out[:, int(np.searchsorted(classes, c))] = proba[:, j]
    return out


def decode_modality(rows: DecodeRows, settings: dict, *, seed: int, out_dir: Path,
                    n_permutations: int | None = None) -> dict:
    """Every protocol x model x fold on one modality's rows.

    Returns
    -------
    result : dict
        ``scores`` (list of dicts, :data:`SCORE_COLUMNS`), ``predictions`` (key ->
        arrays), ``attention`` (key -> arrays), ``skipped`` (list of dicts), ``folds``
        (protocol -> count).
    """
    n_perm = n_permutations or settings["n_permutations"]
    classes = rows.classes
    rng = np.random.default_rng([seed, 7])
    scores, predictions, attention, skipped, n_folds = [], {}, {}, [], {}
    sfreqs = {float(1.0 / np.diff(d.times[:2])[0]) for d in rows.data.values()
              if d.times is not None and len(d.times) > 1}
    sfreq = sfreqs.pop() if len(sfreqs) == 1 else settings["epochs_sfreq"]
    for protocol in settings["protocols"]:
        folds = make_folds(rows, protocol, n_folds=settings["n_folds"],
                           window_groups=settings["window_groups"], seed=seed)
        n_folds[protocol] = len(folds)
        if not folds:
            why = ("one session per subject" if protocol == "CrossSession"
                   else "fewer than two subjects" if protocol == "CrossSubject"
                   else "too few groups")
            skipped.append({"modality": rows.modality, "protocol": protocol, "model": "*",
                            "reason": why})
            logger.info("%s %s: not run (%s)", rows.modality, protocol, why)
            continue
        for model in settings["models"]:
            reason = skip_reason(model, rows, protocol)
            if reason:
                skipped.append({"modality": rows.modality, "protocol": protocol,
                                "model": model, "reason": reason})
                logger.info("%s %s %s: skipped (%s)", rows.modality, protocol, model, reason)
                continue
            channels = (_common_channels(rows) if protocol == "CrossSubject"
                        and model != "electrode_mha" else None)
            per_subject: dict[str, list] = {}
            maps: dict[str, list] = {}
            for fold in progress(folds, desc=f"{rows.modality} {protocol} {model}"):
                fit, val = validation_split(rows, fold.train, fraction=settings["val_fraction"],
                                            seed=seed + fold.fold, protocol=protocol,
                                            n_blocks=settings["n_folds"])
                run_dir = (out_dir / "runs" / rows.modality / protocol / model
                           / f"sub-{fold.subject}_fold-{fold.fold}")
                start = time.process_time()
                cls_fit, proba, est = _fit_predict(model, rows, fit, val, fold.test, settings,
                                                   seed=seed + fold.fold, run_dir=run_dir,
                                                   sfreq=sfreq, channels=channels)
                seconds = time.process_time() - start
                proba = _full_proba(np.asarray(cls_fit, str), proba, classes)
                y_test = rows.y[fold.test]
                row = {"modality": rows.modality, "protocol": protocol,
                       "subject": fold.subject, "fold": str(fold.fold), "model": model,
                       "n_train": len(fit) + len(val), "fit_seconds": round(seconds, 3),
                       "n_purged": fold.n_purged,
                       **fold_scores(y_test, proba, classes, n_permutations=n_perm, rng=rng)}
                scores.append(row)
                per_subject.setdefault(fold.subject, []).append((y_test, proba))
                key = f"{rows.modality}/{protocol}/{model}"
                for name, arr in (("subject", np.full(len(fold.test), fold.subject)),
                                  ("fold", np.full(len(fold.test), fold.fold)),
                                  ("trial", rows.trial[fold.test]), ("y_true", y_test),
                                  ("y_pred", classes[proba.argmax(1)]), ("proba", proba)):
                    predictions.setdefault(f"{key}/{name}", []).append(arr)
                if model == "electrode_mha":
                    amap = est.attention_maps(_electrode_trials(rows, fold.test), y_test)
                    maps.setdefault(fold.subject, []).append(amap)
            for subject, parts in per_subject.items():
                if len(parts) > 1:
                    scores.append({"modality": rows.modality, "protocol": protocol,
                                   "subject": subject, "fold": "all", "model": model,
                                   "n_train": np.nan, "fit_seconds": np.nan, "n_purged": 0,
                                   **pooled_scores(parts, classes, n_permutations=n_perm,
                                                   rng=rng)})
            if len(per_subject) > 1:
                parts = [p for subject_parts in per_subject.values() for p in subject_parts]
                scores.append({"modality": rows.modality, "protocol": protocol,
                               "subject": "all", "fold": "all", "model": model,
                               "n_train": np.nan, "fit_seconds": np.nan, "n_purged": 0,
                               **pooled_scores(parts, classes, n_permutations=n_perm, rng=rng)})
            for subject, amaps in maps.items():
                _add_attention(attention, f"{rows.modality}/{protocol}/sub-{subject}", amaps)
    return {"scores": scores, "predictions": predictions, "attention": attention,
            "skipped": skipped, "folds": n_folds, "classes": classes.tolist()}


def _add_attention(out: dict, key: str, amaps: list[dict]) -> None:
    """Average the attention maps of a subject's folds (over electrodes they share)."""
    names = list(amaps[0]["names"])
    for a in amaps[1:]:
        names = [n for n in names if n in a["names"]]
    stack = []
    for a in amaps:
        pos = [list(a["names"]).index(n) for n in names]
        stack.append(np.asarray(a["maps"])[:, pos][:, :, pos])
    out[f"{key}/maps"] = np.nanmean(np.stack(stack), axis=0)
    out[f"{key}/names"] = np.asarray(names, dtype=str)
    out[f"{key}/classes"] = np.asarray(amaps[0]["classes"], dtype=str)
    coords = amaps[0].get("coords")
    if coords is not None:
        pos = [list(amaps[0]["names"]).index(n) for n in names]
        out[f"{key}/coords"] = np.asarray(coords)[pos]


def run_decoding(study, response_paths, out_dir, *, n_permutations: int | None = None) -> dict:
    """Decode every modality of ``study`` and write the outputs of :data:`OUTPUTS`.

    Parameters
    ----------
    study : brainhead.specs.StudySpec
        With a ``decode`` section.
    response_paths : list of path-like
        The subjects' ``responses.h5``.
    out_dir : path-like
        ``results/<study>/decode``.
    n_permutations : int | None
        Overrides ``decode.n_permutations`` (tests).

    Returns
    -------
    summary : dict
        What ``summary.json`` holds.
    """
    from ..io.store import atomic_path, provenance, write_arrays

    settings = study.config["decode"]
    seed = int(settings["seed"] if settings["seed"] is not None else study.seed)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    scores, predictions, attention, skipped, folds, classes = [], {}, {}, [], {}, {}
    for modality in settings["modalities"]:
        if not study.by_modality(modality):
            continue
        rows = load_rows(study, modality, response_paths)
        logger.info("%s: %d rows of %d subjects, classes %s", modality, len(rows),
                    len(rows.subjects), rows.classes.tolist())
        res = decode_modality(rows, settings, seed=seed, out_dir=out_dir,
                              n_permutations=n_permutations)
        scores += res["scores"]
        predictions.update({k: np.concatenate(v) for k, v in res["predictions"].items()})
        attention.update(res["attention"])
        skipped += res["skipped"]
        folds[modality] = res["folds"]
        classes[modality] = res["classes"]
    table = pd.DataFrame(scores, columns=[*SCORE_COLUMNS, "fit_seconds"])
    # fit times are measurements, not results: they go to summary.json, so that a rerun
    # (or a run resumed after a kill) writes the same scores.tsv
    fit_times = table.loc[table["fold"] != "all", [*FIT_TIME_KEYS, "fit_seconds"]]
    table = table[SCORE_COLUMNS]
    prov = provenance("decode", {"decode": settings, "seed": seed,
                                 "subjects": sorted(study.subjects)})
    summary = {"study": study.name, "seed": seed, "settings": settings, "classes": classes,
               "folds": folds, "skipped": skipped,
               "seconds": round(time.perf_counter() - start, 1),
               "fit_cpu_seconds": fit_times.to_dict("records"),
               "p_value": ("test labels permuted within each fold against the predictions, "
                           "for balanced accuracy (whose chance is one over the classes)"),
               "chance": "majority rate of the test labels (for accuracy)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_arrays(out_dir / "predictions.h5", predictions, prov)
    write_arrays(out_dir / "attention.h5", attention, prov)
    with atomic_path(out_dir / "scores.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(out_dir / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str))
    return summary


#: Keys of a fold's fit time in ``summary.json`` (``fit_cpu_seconds``).
FIT_TIME_KEYS = ["modality", "protocol", "subject", "fold", "model"]


def read_scores(folder) -> pd.DataFrame:
    """``decode/scores.tsv`` with each fold's fit CPU time (``fit_seconds``, from
    ``summary.json``; NaN on pooled rows)."""
    folder = Path(folder)
    scores = pd.read_csv(folder / "scores.tsv", sep="\t", dtype={"subject": str, "fold": str})
    summary = json.loads((folder / "summary.json").read_text())
    times = pd.DataFrame(summary.get("fit_cpu_seconds", []),
                         columns=[*FIT_TIME_KEYS, "fit_seconds"])
    times = times.astype({"subject": str, "fold": str})
    return scores.merge(times, on=FIT_TIME_KEYS, how="left")


def decode_study(study, results_dir, out_dir=None, **kwargs) -> dict:
    """:func:`run_decoding` on every subject's ``responses.h5`` in ``results_dir``."""
    from .trials import responses_path

    paths = [responses_path(results_dir, s) for s in study.subjects]
    return run_decoding(study, paths, out_dir or Path(results_dir) / "decode", **kwargs)
