"""fMRI: masking, detrending, standardisation and stimulus-level betas through nilearn.

Writes two views: ``stimulus`` (one least-squares-all GLM beta per stimulus and voxel,
HRF from nilearn) and ``timeseries`` (the cleaned BOLD per TR with the stimulus onsets).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .._logging import logger
from ..io.readers import RecordingError, read_bold, read_events_tsv
from ..io.table import ResponseTable, Targets, View


def find_bids_func_runs(bids_root: Path, subject: str, task: str) -> list[tuple[str, Path, Path]]:
    """``(run, bold, events)`` triples of a subject's BIDS func folder, sorted by run."""
    func = Path(bids_root) / f"sub-{subject}" / "func"
    out = []
    for bold in sorted(func.glob(f"sub-{subject}_task-{task}*_bold.nii*")):
        run = "1"
        for part in bold.name.split("_"):
            if part.startswith("run-"):
                run = part[4:]
        events = Path(str(bold).split("_bold.nii")[0] + "_events.tsv")
        out.append((run, bold, events))
    if not out:
        raise RecordingError(f"sub-{subject}: no BOLD runs for task '{task}' in "
                             f"{os.path.relpath(func)}")
    return out


def _check_mask(mask_img, bold_img, subject: str, mask_path) -> None:
    if mask_img.shape[:3] != bold_img.shape[:3] or not np.allclose(mask_img.affine, bold_img.affine):
        raise RecordingError(
            f"sub-{subject}: mask {os.path.relpath(mask_path)} (shape {mask_img.shape[:3]}) "
            f"does not match the BOLD grid (shape {bold_img.shape[:3]})"
        )


def lsa_betas(Y: np.ndarray, frame_times: np.ndarray, events: pd.DataFrame,
              hrf_model: str, high_pass: float | None) -> tuple[np.ndarray, list[str]]:
    """Least-squares-all betas: one regressor per stimulus, cosine drifts, OLS.

    Parameters
    ----------
    Y : ndarray, shape (n_scans, n_voxels)
    frame_times : ndarray, shape (n_scans,)
    events : DataFrame with ``onset``, ``duration`` and ``stim_id``

    Returns
    -------
    betas : ndarray, shape (n_stimuli, n_voxels)
    stim_ids : list of str
        In the order of ``betas``' rows.
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    ev = pd.DataFrame({"onset": events["onset"], "duration": events["duration"],
                       "trial_type": events["stim_id"].astype(str)})
    design = make_first_level_design_matrix(
        frame_times, ev, hrf_model=hrf_model,
        drift_model="cosine" if high_pass else None, high_pass=high_pass or 0.01)
    stims = list(dict.fromkeys(ev["trial_type"]))
    coef, *_ = np.linalg.lstsq(design.to_numpy(), Y, rcond=None)
    idx = [design.columns.get_loc(s) for s in stims]
    return coef[idx], stims


def preprocess_fmri(spec, runs: list[tuple[str, Path, Path]], mask_path: Path | None = None,
                    regions_path: Path | None = None) -> ResponseTable:
    """Preprocess a subject's BOLD runs into a response table.

    Parameters
    ----------
    spec : brainhead.specs.SubjectSpec
    runs : list of (run, bold path, events path)
    mask_path : path | None
        Brain mask on the BOLD grid; None computes an EPI mask from the first run.
    regions_path : path | None
        Integer labels image with a ``.tsv`` (index, name) beside it.
    """
    from nilearn.masking import compute_epi_mask
    from nilearn.maskers import NiftiMasker

    params = spec.preprocess
    t_r_override = spec.source.get("t_r") if isinstance(spec.source, dict) else None
    first_img, _ = read_bold(runs[0][1], subject=spec.subject, t_r=t_r_override)
    if mask_path is not None:
        mask_img = nib.load(mask_path)
        _check_mask(mask_img, first_img, spec.subject, mask_path)
    else:
        mask_img = compute_epi_mask(first_img)
    stim_X, stim_rows, stim_groups, ts_X, ts_time, ts_group, ev = [], [], [], [], [], [], []
    masker = None
    for run, bold, events_path in runs:
        img, t_r = read_bold(bold, subject=spec.subject, t_r=t_r_override)
        if img.shape[:3] != first_img.shape[:3]:
            raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(bold)}: grid "
                                 f"{img.shape[:3]} differs from the first run's")
        events = read_events_tsv(events_path, subject=spec.subject)
        if "stim_id" not in events.columns:
            if "trial_type" not in events.columns:
                raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(events_path)}: "
                                     "needs a stim_id or trial_type column")
            events["stim_id"] = events["trial_type"]
        n_scans = img.shape[3]
        frame_times = np.arange(n_scans) * t_r
        late = events["onset"] >= n_scans * t_r
        if late.any() or (events["onset"] < 0).any():
            raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(events_path)}: "
                                 f"{int(late.sum())} events lie outside the {n_scans * t_r:.0f} s run")
        masker = NiftiMasker(mask_img=mask_img, detrend=params["detrend"],
                             standardize="zscore_sample" if params["standardize"] else False,
                             high_pass=params["high_pass"], t_r=t_r,
                             smoothing_fwhm=params["smoothing_fwhm"]).fit()
        Y = masker.transform(img)
        betas, stims = lsa_betas(Y, frame_times, events, params["hrf_model"], params["high_pass"])
        stim_X.append(betas)
        stim_rows += stims
        stim_groups += [run] * len(stims)
        ts_X.append(Y)
        ts_time.append(frame_times)
        ts_group += [run] * n_scans
        ev.append(pd.DataFrame({"onset": events["onset"], "stim_id": events["stim_id"].astype(str),
                                "group": run}))
    mask_data = masker.mask_img_.get_fdata() > 0
    ijk = np.argwhere(mask_data)
    coords = nib.affines.apply_affine(masker.mask_img_.affine, ijk)
    regions = np.full(len(ijk), "", dtype=object)
    if regions_path is not None:
        labels = np.asarray(nib.load(regions_path).dataobj)[tuple(ijk.T)].astype(int)
        names = pd.read_csv(str(regions_path).replace(".nii.gz", ".tsv"), sep="\t")
        lookup = dict(zip(names["index"], names["name"]))
        regions = np.array([lookup.get(v, "") for v in labels], dtype=object)
    ev_t = pd.concat(ev, ignore_index=True)
    logger.info("sub-%s: %d voxels, %d stimuli, %d scans", spec.subject, len(ijk),
                len(stim_rows), len(ts_group))
    names = np.array([f"v{i}-{j}-{k}" for i, j, k in ijk])
    return ResponseTable(
        subject=spec.subject, modality="fmri",
        targets=Targets(name=names, kind=["voxel"] * len(ijk), coords=coords,
                        region=regions.astype(str)),
        views={
            "stimulus": View(X=np.concatenate(stim_X).astype(np.float32),
                             rows={"stim_id": np.asarray(stim_rows, dtype=str),
                                   "group": np.asarray(stim_groups, dtype=str)}),
            "timeseries": View(X=np.concatenate(ts_X).astype(np.float32),
                               rows={"time": np.concatenate(ts_time),
                                     "group": np.asarray(ts_group, dtype=str)},
                               events={"onset": ev_t["onset"].to_numpy(float),
                                       "stim_id": ev_t["stim_id"].to_numpy(str),
                                       "group": ev_t["group"].astype(str).to_numpy()}),
        },
        info={"t_r": t_r, "runs": [r[0] for r in runs], "n_voxels": int(len(ijk))},
    ).validate()
