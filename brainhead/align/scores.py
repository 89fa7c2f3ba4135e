"""Layer-by-layer encoding scores of a subject against a model and its random control."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

from .._logging import logger, progress
from ..io.readers import RecordingError
from ..io.store import provenance, read_responses, write_arrays, atomic_path
from .ridge import GroupRidgeCV, pearson_r

SUMMARY_COLUMNS = ["subject", "modality", "region", "model", "control", "layer", "metric",
                   "score", "n_targets"]


def leakage_free_groups(stim_id: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cross-validation groups such that no stimulus is on both sides of a split.

    Starts from the recording groups (runs/sessions) and merges every set of groups that
    share a stimulus. If that leaves fewer than three groups (too few for grouped alpha
    selection inside each training set), stimuli themselves become the groups (all repeats of a stimulus stay together).

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


def _outer_splitter(groups: np.ndarray):
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("encoding needs at least 2 groups of samples")
    return LeaveOneGroupOut() if n_groups <= 6 else GroupKFold(n_splits=5)


def encoding_scores(features: np.ndarray, Y: np.ndarray, groups: np.ndarray,
                    alphas: np.ndarray, n_inner_splits: int) -> np.ndarray:
    """Held-out Pearson r per target, averaged over outer folds.

    Parameters
    ----------
    features : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_targets)
    groups : ndarray, shape (n_samples,)
        Outer and inner folds never split a group.

    Returns
    -------
    r : ndarray, shape (n_targets,)
    """
    rs = []
    for train, test in _outer_splitter(groups).split(features, Y, groups):
        model = GroupRidgeCV(alphas=alphas, n_splits=n_inner_splits)
        model.fit(features[train], Y[train], groups=groups[train])
        rs.append(pearson_r(model.predict(features[test]), Y[test]))
    return np.nanmean(np.stack(rs), axis=0)


def score_subject(responses_path, features_path, model: str, align_params: dict
                  ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Score every layer of a model and of its random control against one subject.

    Returns
    -------
    summary : DataFrame
        Columns :data:`SUMMARY_COLUMNS`; one row per region (plus ``all``), control,
        layer; metric ``r`` is the mean held-out Pearson r over the region's targets.
    per_target : dict of str to ndarray
        ``r_trained`` and ``r_random``, shape (n_layers, n_targets).
    """
    from ..features import read_features

    table = read_responses(responses_path)
    view = table.view(align_params["view"])
    feats, feat_ids, _ = read_features(features_path)
    index = {s: i for i, s in enumerate(feat_ids)}
    missing = sorted(set(view.rows["stim_id"]) - set(index))
    if missing:
        raise RecordingError(
            f"sub-{table.subject}: {len(missing)} stimuli of {Path(responses_path).name} are "
            f"not in the stimuli table of {Path(features_path).name} (e.g. {missing[:3]})"
        )
    rows = np.array([index[s] for s in view.rows["stim_id"]])
    groups = leakage_free_groups(view.rows["stim_id"], view.rows["group"])
    Y = view.X.astype(np.float64)
    lo, hi, n = align_params["alphas_log10"]
    alphas = np.logspace(lo, hi, int(n))
    per_target = {}
    records = []
    regions = table.targets.region
    region_names = ["all"] + sorted(set(regions.tolist()) - {""})
    for control, F in feats.items():
        scores = np.stack([
            encoding_scores(F[layer][rows].astype(np.float64), Y, groups, alphas,
                            align_params["n_inner_splits"])
            for layer in progress(range(F.shape[0]), desc=f"sub-{table.subject} {control}")
        ])
        per_target[f"r_{control}"] = scores.astype(np.float32)
        for region in region_names:
            cols = np.ones(len(regions), bool) if region == "all" else regions == region
            for layer in range(F.shape[0]):
                records.append({"subject": table.subject, "modality": table.modality,
                                "region": region, "model": model, "control": control,
                                "layer": layer, "metric": "r",
                                "score": float(np.nanmean(scores[layer, cols])),
                                "n_targets": int(cols.sum())})
    logger.info("sub-%s: scored %d layers x 2 controls", table.subject, F.shape[0])
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS), per_target


def align_subject(responses_path, features_path, model: str, align_params: dict,
                  out_h5, out_tsv) -> pd.DataFrame:
    """Score one subject and write per-target scores (HDF5) and the summary rows (TSV)."""
    summary, per_target = score_subject(responses_path, features_path, model, align_params)
    table = read_responses(responses_path)
    attrs = provenance("align", {"model": model, **align_params})
    write_arrays(out_h5, {**per_target, "target_name": table.targets.name,
                          "target_region": table.targets.region}, attrs)
    with atomic_path(out_tsv) as tmp:
        summary.to_csv(tmp, sep="\t", index=False)
    return summary


def collect_summary(tsv_paths, out_path) -> pd.DataFrame:
    """Concatenate per-subject summaries into ``align/summary.tsv``."""
    frames = [pd.read_csv(p, sep="\t", dtype={"subject": str}) for p in tsv_paths]
    summary = pd.concat(frames, ignore_index=True)[SUMMARY_COLUMNS]
    with atomic_path(out_path) as tmp:
        summary.to_csv(tmp, sep="\t", index=False)
    return summary
