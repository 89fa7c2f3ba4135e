"""fMRI: masking, confounds, standardisation and stimulus-level responses through nilearn.

Every input path (the simulated BIDS dataset, a BIDS root, plain files, a dataset
adapter) becomes :class:`~brainhead.io.datasets.FmriRuns`, preprocessed by
:func:`preprocess_fmri_runs`:

1. checks, before any work: 4D images on one grid, a repetition time, events with
   ``onset``/``duration`` and ``trial_type`` or ``stim_id`` inside each run, one
   confound row per volume, a mask on the image grid;
2. brain mask: the one given (``preprocess.mask`` or the source's), else computed from
   the data (:func:`nilearn.masking.compute_epi_mask`) or nilearn's MNI152 template
   mask resampled to the data (``brain_mask: mni152``);
3. per run, :class:`nilearn.maskers.NiftiMasker` (or
   :class:`~nilearn.maskers.NiftiLabelsMasker` with a ``parcellation``) with optional
   smoothing, regressing out the confounds (motion parameters when the source has them),
   detrending, high-pass filtering and z-scoring;
4. responses, view ``stimulus``: one beta per event from a first-level GLM
   (least-squares-all or least-squares-separate on nilearn design matrices, fitted by
   :func:`nilearn.glm.first_level.run_glm`), or one row per volume inside each event
   (``response: volume``, the hemodynamic delay taken into account);
5. view ``timeseries``: the cleaned signal per TR with the events (onset, duration,
   stim_id, run) kept for FIR models downstream.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .._logging import logger, progress
from ..io.datasets import FmriRun, FmriRuns
from ..io.readers import RecordingError, read_bold
from ..io.table import ResponseTable, Targets, View
from ._common import study_path as _study_path

__all__ = ["find_bids_func_runs", "lsa_betas", "lss_betas", "preprocess_fmri",
           "preprocess_fmri_runs", "read_events", "read_motion", "read_onset_files",
           "volume_responses"]


def _rel(path) -> str:
    return os.path.relpath(path) if path is not None else "<in memory>"


# --------------------------------------------------------------------------- inputs
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


def read_events(path: str | os.PathLike, *, subject: str | None = None) -> pd.DataFrame:
    """Read a BIDS ``events.tsv`` for fMRI.

    Parameters
    ----------
    path : path-like
        Tab-separated with ``onset`` and ``duration`` (s) and ``trial_type`` and/or
        ``stim_id``; ``n/a`` is missing.
    subject : str | None
        Named in error messages.

    Returns
    -------
    events : DataFrame
        Columns ``onset``, ``duration``, ``trial_type``, ``stim_id`` (strings; a missing
        one copied from the other); ``events.attrs["path"]`` is the file.
    """
    path = Path(path)
    who = f"sub-{subject}: " if subject else ""
    if not path.is_file():
        raise RecordingError(f"{who}{_rel(path)}: events file not found")
    events = pd.read_csv(path, sep="\t", na_values="n/a",
                         dtype={"trial_type": str, "stim_id": str})
    events.attrs["path"] = str(path)
    return _check_event_columns(events, subject, path)


def _check_event_columns(events: pd.DataFrame, subject, path) -> pd.DataFrame:
    who = f"sub-{subject}: " if subject else ""
    missing = [c for c in ("onset", "duration") if c not in events.columns]
    if "trial_type" not in events.columns and "stim_id" not in events.columns:
        missing.append("trial_type or stim_id")
    if missing:
        raise RecordingError(f"{who}{_rel(path)}: events lack column(s) {missing}; they have "
                             f"{list(events.columns)}")
    events = events.copy()
    for col in ("onset", "duration"):
        values = pd.to_numeric(events[col], errors="coerce")
        if values.isna().any():
            rows = (np.flatnonzero(values.isna().to_numpy()) + 1).tolist()
            raise RecordingError(f"{who}{_rel(path)}: column {col!r} is not a number in "
                                 f"event row(s) {rows[:5]}")
        events[col] = values.astype(float)
    if "stim_id" not in events.columns:
        events["stim_id"] = events["trial_type"]
    if "trial_type" not in events.columns:
        events["trial_type"] = events["stim_id"]
    events["stim_id"] = events["stim_id"].astype(str)
    events["trial_type"] = events["trial_type"].astype(str)
    events.attrs["path"] = str(path) if path is not None else None
    return events


def read_onset_files(folder: str | os.PathLike, conditions: dict[str, str], *,
                     subject: str | None = None) -> pd.DataFrame:
    """Events of one run in the OpenFMRI layout.

    Parameters
    ----------
    folder : path-like
        ``model/model001/onsets/task001_run001/``, holding one ``cond<NNN>.txt`` per
        condition with three whitespace-separated columns: onset (s), duration (s),
        amplitude.
    conditions : dict of str to str
        ``cond001`` → condition name (from ``condition_key.txt``); every one must have
        its file.
    subject : str | None
        Named in error messages.

    Returns
    -------
    events : DataFrame
        ``onset``, ``duration``, ``amplitude``, ``trial_type`` (= ``stim_id``), sorted
        by onset.
    """
    folder = Path(folder)
    who = f"sub-{subject}: " if subject else ""
    if not folder.is_dir():
        raise RecordingError(f"{who}{_rel(folder)}: onsets folder not found")
    frames = []
    for cond, name in conditions.items():
        path = folder / f"{cond}.txt"
        if not path.is_file():
            raise RecordingError(f"{who}{_rel(path)}: onset file of condition {cond} "
                                 f"({name}) not found")
        try:
            table = np.loadtxt(path, ndmin=2)
        except ValueError as err:
            raise RecordingError(f"{who}{_rel(path)}: not a table of numbers: {err}") from err
        if table.size == 0:
            continue
        if table.shape[1] != 3:
            raise RecordingError(f"{who}{_rel(path)}: expected 3 columns (onset, duration, "
                                 f"amplitude), got {table.shape[1]}")
        frames.append(pd.DataFrame({"onset": table[:, 0], "duration": table[:, 1],
                                    "amplitude": table[:, 2], "trial_type": name}))
    if not frames:
        raise RecordingError(f"{who}{_rel(folder)}: no events in the onset files")
    events = pd.concat(frames, ignore_index=True).sort_values("onset", kind="stable")
    events = events.reset_index(drop=True)
    events["stim_id"] = events["trial_type"]
    events.attrs["path"] = str(folder)
    return events


def read_motion(path: str | os.PathLike, *, subject: str | None = None) -> pd.DataFrame:
    """Motion parameters, one row per volume (whitespace-separated, e.g. ``bold_moest.txt``).

    Returns
    -------
    confounds : DataFrame
        Columns ``motion_1`` ... ``motion_<k>``.
    """
    path = Path(path)
    who = f"sub-{subject}: " if subject else ""
    try:
        table = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as err:
        raise RecordingError(f"{who}{_rel(path)}: cannot read motion parameters: {err}") from err
    return pd.DataFrame(table, columns=[f"motion_{k + 1}" for k in range(table.shape[1])])


def runs_from_files(spec, bids_root: Path | None) -> FmriRuns:
    """The :class:`FmriRuns` of a simulated/BIDS subject or of ``source.files``."""
    src = spec.source if isinstance(spec.source, dict) else {}
    excluded = {str(r) for r in spec.exclude_runs}
    t_r = src.get("t_r")
    if bids_root is not None:
        task = src.get("task", "sentences")
        triples = find_bids_func_runs(bids_root, spec.subject, task)
        func = Path(bids_root) / f"sub-{spec.subject}" / "func"
        masks = sorted(func.glob(f"sub-{spec.subject}_*desc-brain_mask.nii*"))
        regions = sorted(func.glob(f"sub-{spec.subject}_*desc-regions_dseg.nii*"))
        confounds = {}
        for run, bold, _ in triples:
            stem = str(bold).split("_bold.nii")[0]
            found = sorted(Path(stem).parent.glob(Path(stem).name + "*_desc-confounds_timeseries.tsv"))
            if found:
                confounds[run] = pd.read_csv(found[0], sep="\t", na_values="n/a")
    else:
        events = src.get("events", [])
        if len(events) != len(src["files"]):
            raise RecordingError(f"sub-{spec.subject}: {_rel(spec.path)}: key 'source.events': "
                                 f"{len(events)} events files for {len(src['files'])} BOLD files")
        triples = [(str(i), Path(f), Path(e))
                   for i, (f, e) in enumerate(zip(src["files"], events), start=1)]
        masks = [Path(src["mask"])] if "mask" in src else []
        regions, confounds = [], {}
    runs = [FmriRun(label=run, bold=bold, events=read_events(ev, subject=spec.subject),
                    confounds=confounds.get(run), t_r=t_r, path=Path(bold))
            for run, bold, ev in triples if run not in excluded]
    if not runs:
        raise RecordingError(f"sub-{spec.subject}: every run is excluded (exclude_runs="
                             f"{spec.exclude_runs})")
    return FmriRuns(runs=runs, mask=masks[0] if masks else None,
                    regions=regions[0] if regions else None)


# --------------------------------------------------------------------------- responses
def _design(frame_times, events, columns, hrf_model, high_pass, extra=None):
    from nilearn.glm.first_level import make_first_level_design_matrix

    ev = pd.DataFrame({"onset": events["onset"].to_numpy(float),
                       "duration": events["duration"].to_numpy(float),
                       "trial_type": columns})
    if "amplitude" in events.columns and not np.allclose(events["amplitude"], 1.0):
        ev["modulation"] = events["amplitude"].to_numpy(float)
    return make_first_level_design_matrix(
        frame_times, ev, hrf_model=hrf_model,
        drift_model="cosine" if high_pass else None, high_pass=high_pass or 0.01)


def _fit(Y, design, noise_model):
    from nilearn.glm.first_level import run_glm

    labels, results = run_glm(Y, design.to_numpy(), noise_model=noise_model)
    theta = np.zeros((design.shape[1], Y.shape[1]))
    for label, res in results.items():
        theta[:, labels == label] = res.theta
    return theta


def lsa_betas(Y: np.ndarray, frame_times: np.ndarray, events: pd.DataFrame,
              hrf_model: str, high_pass: float | None, *,
              noise_model: str = "ols") -> np.ndarray:
    """Least-squares-all betas: one regressor per event, cosine drifts, one GLM.

    Parameters
    ----------
    Y : ndarray, shape (n_scans, n_targets)
    frame_times : ndarray, shape (n_scans,)
        Acquisition time of each scan (s).
    events : DataFrame
        ``onset``, ``duration`` (and ``amplitude``), one row per event.
    hrf_model : str
        nilearn HRF model (``glover``, ``spm``...).
    high_pass : float | None
        Cutoff (Hz) of the cosine drift regressors; None for none.
    noise_model : str
        ``ols`` or ``ar1`` (:func:`nilearn.glm.first_level.run_glm`).

    Returns
    -------
    betas : ndarray, shape (n_events, n_targets)
        In the order of ``events``' rows.
    """
    cols = [f"trial_{k:05d}" for k in range(len(events))]
    design = _design(frame_times, events, cols, hrf_model, high_pass)
    theta = _fit(Y, design, noise_model)
    return theta[[design.columns.get_loc(c) for c in cols]]


def lss_betas(Y: np.ndarray, frame_times: np.ndarray, events: pd.DataFrame,
              hrf_model: str, high_pass: float | None, *,
              noise_model: str = "ols") -> np.ndarray:
    """Least-squares-separate betas: one GLM per event (Mumford et al., 2012).

    Each GLM has the event of interest as one regressor and every other event pooled
    by ``trial_type`` (the "LSS-N" variant), plus drifts. Parameters and return as in
    :func:`lsa_betas`.
    """
    types = events["trial_type"].astype(str).to_numpy()
    betas = np.empty((len(events), Y.shape[1]))
    for k in range(len(events)):
        cols = np.array([f"other_{t}" for t in types], dtype=object)
        cols[k] = "target"
        design = _design(frame_times, events, list(cols), hrf_model, high_pass)
        betas[k] = _fit(Y, design, noise_model)[design.columns.get_loc("target")]
    return betas


def volume_responses(Y: np.ndarray, frame_times: np.ndarray, events: pd.DataFrame,
                     delay: float) -> tuple[np.ndarray, np.ndarray]:
    """Volumes acquired while each event drives the BOLD signal.

    A volume belongs to an event when its time lies in ``[onset + delay,
    onset + duration + delay)``; an event shorter than a TR gets the first volume at or
    after ``onset + delay``.

    Returns
    -------
    X : ndarray, shape (n_rows, n_targets)
    event_index : ndarray of int, shape (n_rows,)
        The event (row of ``events``) of each volume.
    """
    rows, index = [], []
    for k, (onset, dur) in enumerate(zip(events["onset"], events["duration"])):
        vols = np.flatnonzero((frame_times >= onset + delay)
                              & (frame_times < onset + dur + delay))
        if len(vols) == 0:
            vols = np.flatnonzero(frame_times >= onset + delay)[:1]
        rows.append(vols)
        index += [k] * len(vols)
    vols = np.concatenate(rows) if rows else np.empty(0, int)
    return Y[vols], np.asarray(index, dtype=int)


# --------------------------------------------------------------------------- masks
def _load_3d(value, what: str, subject: str):
    if value is None or not isinstance(value, (str, os.PathLike)):
        return value
    path = Path(value)
    if not path.is_file():
        raise RecordingError(f"sub-{subject}: {_rel(path)}: {what} not found")
    img = nib.load(path)
    if len(img.shape) != 3 and not (len(img.shape) == 4 and img.shape[3] == 1):
        raise RecordingError(f"sub-{subject}: {_rel(path)}: {what} must be a 3D image, got "
                             f"shape {img.shape}")
    return img


def _check_grid(img, ref_img, subject: str, path, what: str) -> None:
    if img.shape[:3] != ref_img.shape[:3] or not np.allclose(img.affine, ref_img.affine,
                                                             atol=1e-3):
        raise RecordingError(
            f"sub-{subject}: {what} {_rel(path)} (shape {img.shape[:3]}) does not match the "
            f"BOLD grid (shape {ref_img.shape[:3]}; the affines must agree too)"
        )


def _finite_image(img):
    """``img`` with NaN/inf set to 0 (for computing a mask; the voxels are judged later)."""
    import nibabel as nib

    values = np.asanyarray(img.dataobj)
    if not np.issubdtype(values.dtype, np.floating) or np.isfinite(values).all():
        return img
    return nib.Nifti1Image(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0),
                           img.affine, img.header)


def _brain_mask(spec, data: FmriRuns, first_img, first_path):
    """The mask image on the BOLD grid, and where it came from."""
    from nilearn.image import resample_to_img
    from nilearn.masking import compute_epi_mask

    params = spec.preprocess
    given = _study_path(spec, params["mask"]) if params.get("mask") else data.mask
    if given is not None:
        img = _load_3d(given, "mask", spec.subject)
        _check_grid(img, first_img, spec.subject, given if isinstance(given, (str, Path))
                    else None, "mask")
        img = nib.Nifti1Image((np.asarray(img.dataobj).reshape(img.shape[:3]) > 0)
                              .astype(np.uint8), first_img.affine)
        source = Path(given).name if isinstance(given, (str, Path)) else "given"
    elif params.get("brain_mask", "data") == "mni152":
        from nilearn.datasets import load_mni152_brain_mask

        img = resample_to_img(load_mni152_brain_mask(), first_img.slicer[..., 0],
                              interpolation="nearest", copy_header=True,
                              force_resample=True)
        source = "mni152"
    else:
        img = compute_epi_mask(_finite_image(first_img))
        source = "data"
    if not np.asarray(img.dataobj).any():
        raise RecordingError(f"sub-{spec.subject}: {_rel(first_path)}: the brain mask "
                             f"({source}) is empty on this image grid")
    return img, source


# --------------------------------------------------------------------------- pipeline
def _check_run(spec, run: FmriRun, t_r_override):
    """Load one run's image and check its events and confounds; no processing."""
    where = f"sub-{spec.subject}"
    if isinstance(run.bold, (str, os.PathLike)):
        img, t_r = read_bold(run.bold, subject=spec.subject, t_r=run.t_r or t_r_override)
    else:
        img = run.bold
        if img.ndim != 4:
            raise RecordingError(f"{where}: {_rel(run.path)}: expected a 4D BOLD image, got "
                                 f"{img.ndim}D with shape {img.shape}")
        zooms = img.header.get_zooms()
        t_r = run.t_r or t_r_override or (float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0
                                          else None)
        if not t_r:
            raise RecordingError(f"{where}: {_rel(run.path)}: repetition time (TR) missing "
                                 "from the header; set source.t_r in the subject file")
    events_path = run.events.attrs.get("path") if hasattr(run.events, "attrs") else None
    events = _check_event_columns(run.events, spec.subject, events_path or run.path)
    n_scans = img.shape[3]
    length = n_scans * t_r
    out = (events["onset"] < 0) | (events["onset"] >= length) | (events["duration"] < 0)
    if out.any():
        rows = (np.flatnonzero(out.to_numpy()) + 1).tolist()
        raise RecordingError(
            f"{where}: {_rel(events_path or run.path)}: {int(out.sum())} events lie outside "
            f"the {length:.1f} s run ({n_scans} volumes × TR {t_r} s; event rows {rows[:5]}, "
            f"onsets {events['onset'][out].tolist()[:5]})"
        )
    if run.confounds is not None and len(run.confounds) != n_scans:
        raise RecordingError(f"{where}: {_rel(run.path)}: {len(run.confounds)} confound rows "
                             f"for {n_scans} volumes")
    return img, float(t_r), events


def _drop_nonfinite(spec, runs, checked, mask_img):
    """The mask without voxels that hold NaN or infinite values in any run, and their number.

    Such voxels are an error unless ``preprocess.drop_nonfinite`` is true (nilearn would
    turn them into a constant that standardising makes a plateau of several SD).
    """
    import nibabel as nib

    mask = np.asarray(mask_img.dataobj).astype(bool)
    bad = np.zeros(mask.shape, bool)
    first_file = {}
    for run, (img, _, _) in zip(runs, checked):
        values = np.asarray(img.dataobj)[mask]  # (n_voxels, n_scans)
        here = ~np.isfinite(values).all(axis=1)
        if here.any():
            idx = tuple(a[here] for a in np.nonzero(mask))
            new = here & ~bad[mask]
            if new.any():
                first_file.setdefault("path", run.path)
                first_file.setdefault("voxel", tuple(int(a[0]) for a in idx))
            bad[idx] = True
    n_bad = int(bad.sum())
    if not n_bad:
        return mask_img, 0
    where = f"sub-{spec.subject}: {_rel(first_file['path'])}"
    if not spec.preprocess.get("drop_nonfinite", False):
        raise RecordingError(
            f"{where}: {n_bad} of {int(mask.sum())} voxels inside the brain mask hold NaN or "
            f"infinite values (first at voxel {first_file['voxel']}); key "
            "'preprocess.drop_nonfinite': set it true to leave them out, or fix the image")
    if n_bad == mask.sum():
        raise RecordingError(f"{where}: every voxel inside the brain mask holds NaN or "
                             "infinite values")
    logger.warning("%s: %d voxels with NaN or infinite values left out of the targets "
                   "(preprocess.drop_nonfinite)", where, n_bad)
    return nib.Nifti1Image((mask & ~bad).astype(np.uint8), mask_img.affine), n_bad


def preprocess_fmri_runs(spec, data: FmriRuns) -> ResponseTable:
    """Preprocess a subject's BOLD runs into a response table.

    Parameters
    ----------
    spec : brainhead.specs.SubjectSpec
        ``spec.preprocess`` holds the ``fmri`` keys of the study schema.
    data : FmriRuns
        The runs (image, events, confounds, TR), with an optional mask and regions image
        (integer labels with a ``.tsv`` of ``index``/``name`` beside it).
        ``data.info["response"]`` (``glm`` or ``volume``), set by an adapter, overrides
        ``preprocess.response``.

    Returns
    -------
    table : ResponseTable
        Views ``stimulus`` (event or volume × target) and ``timeseries`` (volume ×
        target, with the events). Targets are voxels, or parcels with a parcellation.

    Raises
    ------
    RecordingError
        Naming the subject, the file and what is wrong, before anything is computed.
    """
    from nilearn.maskers import NiftiLabelsMasker, NiftiMasker

    params = spec.preprocess
    response = data.info.get("response", params.get("response", "glm"))
    t_r_override = spec.source.get("t_r") if isinstance(spec.source, dict) else None
    excluded = {str(r) for r in spec.exclude_runs}
    runs = [r for r in data.runs if str(r.label) not in excluded]
    if not runs:
        raise RecordingError(f"sub-{spec.subject}: every run is excluded (exclude_runs="
                             f"{spec.exclude_runs})")
    checked = [_check_run(spec, run, t_r_override) for run in runs]
    first_img = checked[0][0]
    for run, (img, _, _) in zip(runs[1:], checked[1:]):
        if img.shape[:3] != first_img.shape[:3] or not np.allclose(img.affine, first_img.affine,
                                                                   atol=1e-3):
            raise RecordingError(f"sub-{spec.subject}: {_rel(run.path)}: grid {img.shape[:3]} "
                                 f"differs from the first run's {first_img.shape[:3]}")
    mask_img, mask_source = _brain_mask(spec, data, first_img, runs[0].path)
    mask_img, n_nonfinite = _drop_nonfinite(spec, runs, checked, mask_img)
    parc = _study_path(spec, params["parcellation"]) if params.get("parcellation") else None
    if parc is not None:
        parc_img = _load_3d(parc, "parcellation", spec.subject)
        _check_grid(parc_img, first_img, spec.subject, parc, "parcellation")
        lut_path = (_study_path(spec, params["parcellation_lut"])
                    if params.get("parcellation_lut") else None)
        lookup = _label_lookup(parc, lut_path, spec.subject)
    stim_X, stim_id, stim_group, stim_y = [], [], [], []
    ts_X, ts_time, ts_group, ev = [], [], [], []
    masker = None
    for run, (img, t_r, events) in progress(list(zip(runs, checked)),
                                            desc=f"sub-{spec.subject}: fMRI runs (mask, GLM)"):
        kwargs = dict(mask_img=mask_img, detrend=params["detrend"],
                      standardize="zscore_sample" if params["standardize"] else False,
                      high_pass=params["high_pass"], t_r=t_r,
                      smoothing_fwhm=params["smoothing_fwhm"])
        if parc is not None:
            masker = NiftiLabelsMasker(labels_img=parc_img, keep_masked_labels=False,
                                       **kwargs).fit()
        else:
            masker = NiftiMasker(**kwargs).fit()
        confounds = None
        if params.get("confounds", True) and run.confounds is not None:
            confounds = run.confounds.to_numpy(float)
            if not np.isfinite(confounds).all():  # fMRIPrep's first-row n/a derivatives
                confounds = np.nan_to_num(confounds)
        Y = masker.transform(img, confounds=confounds)
        n_scans = img.shape[3]
        frame_times = np.arange(n_scans) * t_r
        if response == "volume":
            X, idx = volume_responses(Y, frame_times, events, params.get("volume_delay", 4.0))
        else:
            solver = lss_betas if params.get("glm", "lsa") == "lss" else lsa_betas
            X = solver(Y, frame_times, events, params["hrf_model"], params["high_pass"],
                       noise_model=params.get("noise_model", "ols"))
            idx = np.arange(len(events))
        stim_X.append(X)
        stim_id += events["stim_id"].to_numpy(str)[idx].tolist()
        stim_y += events["trial_type"].to_numpy(str)[idx].tolist()
        stim_group += [str(run.label)] * len(idx)
        ts_X.append(Y)
        ts_time.append(frame_times)
        ts_group += [str(run.label)] * n_scans
        ev.append(pd.DataFrame({"onset": events["onset"], "duration": events["duration"],
                                "stim_id": events["stim_id"].astype(str),
                                "trial_type": events["trial_type"].astype(str),
                                "group": str(run.label)}))
    if parc is not None:
        targets = _parcel_targets(masker, parc_img, lookup)
    else:
        targets = _voxel_targets(masker.mask_img_, data.regions, spec.subject)
    ev_t = pd.concat(ev, ignore_index=True)
    rows = {"stim_id": np.asarray(stim_id, dtype=str), "group": np.asarray(stim_group, dtype=str)}
    if response == "volume" or not np.array_equal(ev_t["trial_type"], ev_t["stim_id"]):
        rows["y"] = np.asarray(stim_y, dtype=str)
    logger.info("sub-%s: %d targets, %d %s rows, %d scans", spec.subject, len(targets),
                len(stim_id), response, len(ts_group))
    return ResponseTable(
        subject=spec.subject, modality="fmri", targets=targets,
        views={
            "stimulus": View(X=np.concatenate(stim_X).astype(np.float32), rows=rows),
            "timeseries": View(X=np.concatenate(ts_X).astype(np.float32),
                               rows={"time": np.concatenate(ts_time),
                                     "group": np.asarray(ts_group, dtype=str)},
                               events={"onset": ev_t["onset"].to_numpy(float),
                                       "duration": ev_t["duration"].to_numpy(float),
                                       "stim_id": ev_t["stim_id"].to_numpy(str),
                                       "group": ev_t["group"].to_numpy(str)}),
        },
        info={"t_r": checked[0][1], "runs": [str(r.label) for r in runs],
              "n_targets": int(len(targets)), "response": response, "mask": mask_source,
              "n_nonfinite_voxels": n_nonfinite,
              **{k: v for k, v in data.info.items() if k != "response"}},
    ).validate()


def _label_lookup(parc: Path, lut: Path | None, subject: str) -> dict[int, str]:
    from .seeg import read_label_table

    if lut is None:
        beside = Path(str(parc).replace(".nii.gz", ".tsv").replace(".nii", ".tsv"))
        if not beside.is_file():
            raise RecordingError(f"sub-{subject}: {_rel(parc)}: parcellation needs a lookup "
                                 f"table: set preprocess.parcellation_lut or put "
                                 f"{beside.name} (index, name) beside it")
        lut = beside
    return read_label_table(lut)


def _parcel_targets(masker, parc_img, lookup: dict[int, str]) -> Targets:
    data = np.asarray(parc_img.dataobj).reshape(parc_img.shape[:3]).astype(int)
    values = [int(v) for k, v in masker.region_ids_.items() if k != "background"]
    coords = np.array([nib.affines.apply_affine(parc_img.affine,
                                                np.argwhere(data == v)).mean(0)
                       for v in values])
    names = [lookup.get(v, f"parcel-{v}") for v in values]
    return Targets(name=[f"{n}" if names.count(n) == 1 else f"{n}-{v}"
                         for n, v in zip(names, values)],
                   kind=["parcel"] * len(values), coords=coords,
                   region=[lookup.get(v, "") for v in values])


def _voxel_targets(mask_img, regions_img, subject: str) -> Targets:
    ijk = np.argwhere(np.asarray(mask_img.dataobj) > 0)
    coords = nib.affines.apply_affine(mask_img.affine, ijk)
    regions = np.full(len(ijk), "", dtype=object)
    if regions_img is not None:
        img = _load_3d(regions_img, "regions image", subject)
        labels = np.asarray(img.dataobj).reshape(img.shape[:3])[tuple(ijk.T)].astype(int)
        if isinstance(regions_img, (str, os.PathLike)):
            lookup = _label_lookup(Path(regions_img), None, subject)
            regions = np.array([lookup.get(v, "") for v in labels], dtype=object)
    return Targets(name=[f"v{i}-{j}-{k}" for i, j, k in ijk], kind=["voxel"] * len(ijk),
                   coords=coords, region=regions.astype(str))


def preprocess_fmri(spec, runs: list[tuple[str, Path, Path]], mask_path: Path | None = None,
                    regions_path: Path | None = None) -> ResponseTable:
    """Preprocess ``(run, bold, events.tsv)`` triples; see :func:`preprocess_fmri_runs`.

    Parameters
    ----------
    spec : brainhead.specs.SubjectSpec
    runs : list of (run, bold path, events path)
    mask_path : path | None
        Brain mask on the BOLD grid; None: ``preprocess.brain_mask`` decides.
    regions_path : path | None
        Integer labels image with a ``.tsv`` (index, name) beside it.
    """
    t_r = spec.source.get("t_r") if isinstance(spec.source, dict) else None
    data = FmriRuns(runs=[FmriRun(label=r, bold=b, events=read_events(e, subject=spec.subject),
                                  t_r=t_r, path=Path(b)) for r, b, e in runs],
                    mask=mask_path, regions=regions_path)
    return preprocess_fmri_runs(spec, data)
