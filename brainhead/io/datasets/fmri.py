"""Adapters of public fMRI datasets (registered on import).

``haxby``
    Haxby et al. (2001) block-design object viewing in the OpenFMRI layout (as shipped
    with PyMVPA)::

        <root>/models/model001/condition_key.txt      task001 cond001 house ...
        <root>/sub001/BOLD/task001_run001/bold_25mm.nii.gz   (one folder per run; the
                                                       variants bold, bold_25mm, bold_1slice)
        <root>/sub001/BOLD/task001_run001/bold_moest.txt    motion, one row per volume
        <root>/sub001/model/model001/onsets/task001_run001/cond001.txt
                                                       onset, duration, amplitude per block
        <root>/sub001/masks/25mm/brain.nii.gz          masks per resolution (brain, vt, ...)

    Returns :class:`~brainhead.io.datasets.FmriRuns`: one event per block, ``stim_id`` =
    ``trial_type`` = the condition name, and the motion estimates as confounds.

``nsd``
    Natural Scenes Dataset style single-trial betas, already estimated::

        <root>/nsddata_betas/ppdata/subj01/<space>/<betas>/betas_session01.hdf5
            dataset "betas", int16, shape (trials, k, j, i): the NIfTI axes reversed,
            as NSD's MATLAB-written files read in h5py
        <root>/nsddata_betas/ppdata/subj01/<space>/<betas>/betas_session01.nii.gz
            int16, shape (i, j, k, trials)
        <root>/nsddata/ppdata/subj01/<space>/roi/<roi>.nii.gz
            ROI on the same grid; voxels > 0 are kept (e.g. nsdgeneral)
        <root>/<design>  (default nsddata/experiments/nsd/trials_subj01.tsv)
            one row per trial: session, trial (1-based within the session), stim_id
            (the 73k image id). brainhead's tab-separated replacement for the
            experiment's nsd_expdesign.mat, which it does not read.

    Betas are stored as percent signal change × ``scale`` (300); they are divided by
    it and, by default, z-scored per session and voxel. Returns a
    :class:`~brainhead.io.table.ResponseTable` with view ``stimulus``: one row per
    trial, ``stim_id`` = the 73k id and ``group`` = the session, so repeats of an
    image stay separate rows (for noise ceilings).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..readers import RecordingError
from ..table import ResponseTable, Targets, View
from . import FmriRun, FmriRuns, Option, register

__all__ = ["load_haxby", "load_nsd", "read_condition_key", "read_nsd_design"]


def _rel(path) -> str:
    return os.path.relpath(path)


# --------------------------------------------------------------------------- haxby
def read_condition_key(path: str | os.PathLike, task: str, *,
                       subject: str | None = None) -> dict[str, str]:
    """``cond<NNN>`` → condition name of one task from an OpenFMRI ``condition_key.txt``."""
    who = f"sub-{subject}: " if subject else ""
    path = Path(path)
    out = {}
    for k, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise RecordingError(f"{who}{_rel(path)}: line {k}: expected '<task> <cond> "
                                 f"<name>', got {line.strip()!r}")
        if parts[0] == task:
            out[parts[1]] = " ".join(parts[2:])
    if not out:
        raise RecordingError(f"{who}{_rel(path)}: no conditions of task {task!r}")
    return out


@register(
    "haxby", modalities=("fmri",),
    description="Haxby et al. 2001 object-category blocks, OpenFMRI layout (PyMVPA copy).",
    options={
        "subject": Option((int, str), 1, "Subject number (sub001 -> 1) or folder name."),
        "task": Option((str,), "task001", "OpenFMRI task label."),
        "model": Option((str,), "model001", "OpenFMRI model folder holding the onsets."),
        "bold": Option((str,), "bold_25mm", "BOLD variant file name in each run folder "
                       "(bold, bold_25mm, bold_1slice...), without .nii.gz."),
        "mask": Option((str, type(None)), "brain", "Mask name in sub*/masks/<resolution>/ "
                       "(brain, vt, gray, hoc, white; resolution from the bold variant, "
                       "e.g. 25mm), or null to let preprocessing compute one."),
        "conditions": Option((list, type(None)), None, "Condition names to model "
                             "(e.g. [face, house]); null keeps all."),
        "runs": Option((list, type(None)), None, "Run numbers to read; null reads all."),
        "motion": Option((str, type(None)), "bold_moest.txt", "Motion file in each run "
                         "folder used as confounds; null for none."),
        "level": Option((str,), "block", "Responses: one GLM beta per block, or one row "
                        "per volume inside each block (overrides preprocess.response).",
                        choices=("block", "volume")),
    },
)
def load_haxby(spec, root: Path, options: dict) -> FmriRuns:
    """Read one Haxby subject in the OpenFMRI layout; see the module docstring."""
    subject = options["subject"]
    sub_dir = root / (f"sub{int(subject):03d}" if isinstance(subject, int) else str(subject))
    who = f"sub-{spec.subject}"
    if not sub_dir.is_dir():
        raise RecordingError(f"{who}: {_rel(sub_dir)}: subject folder not found "
                             f"(source.subject={subject!r})")
    task, model = options["task"], options["model"]
    keys = [root / "models" / model / "condition_key.txt",
            sub_dir / "model" / model / "condition_key.txt"]
    key = next((k for k in keys if k.is_file()), None)
    if key is None:
        raise RecordingError(f"{who}: {_rel(keys[0])}: condition key not found")
    conditions = read_condition_key(key, task, subject=spec.subject)
    if options["conditions"] is not None:
        names = [str(c) for c in options["conditions"]]
        unknown = sorted(set(names) - set(conditions.values()))
        if unknown:
            raise RecordingError(f"{who}: {_rel(spec.path)}: key 'source.conditions': "
                                 f"{unknown} are not conditions of {_rel(key)} "
                                 f"(it has {sorted(conditions.values())})")
        conditions = {c: n for c, n in conditions.items() if n in names}
    run_dirs = sorted((sub_dir / "BOLD").glob(f"{task}_run*"))
    labels = {d: str(int(re.sub(r"\D", "", d.name.rsplit("_run", 1)[1]) or 0)) for d in run_dirs}
    if options["runs"] is not None:
        wanted = {str(int(r)) for r in options["runs"]}
        run_dirs = [d for d in run_dirs if labels[d] in wanted]
    if not run_dirs:
        raise RecordingError(f"{who}: {_rel(sub_dir / 'BOLD')}: no run folders {task}_run* "
                             f"(source.runs={options['runs']})")
    from ...preprocess.fmri import read_motion, read_onset_files

    runs = []
    for run_dir in run_dirs:
        bold = run_dir / f"{options['bold']}.nii.gz"
        if not bold.is_file():
            have = sorted(p.name for p in run_dir.glob("*.nii*"))
            raise RecordingError(f"{who}: {_rel(bold)}: BOLD variant {options['bold']!r} not "
                                 f"found (this run has {have})")
        onsets = sub_dir / "model" / model / "onsets" / run_dir.name
        events = read_onset_files(onsets, conditions, subject=spec.subject)
        confounds = None
        if options["motion"]:
            motion = run_dir / options["motion"]
            if not motion.is_file():
                raise RecordingError(f"{who}: {_rel(motion)}: motion file not found (set "
                                     "source.motion: null to go without)")
            confounds = read_motion(motion, subject=spec.subject)
        runs.append(FmriRun(label=labels[run_dir], bold=bold, events=events,
                            confounds=confounds, path=bold))
    mask = None
    if options["mask"] is not None:
        resolution = options["bold"].split("_", 1)[1] if "_" in options["bold"] else "orig"
        mask = sub_dir / "masks" / resolution / f"{options['mask']}.nii.gz"
        if not mask.is_file():
            have = sorted(p.name for p in mask.parent.glob("*.nii*")) if mask.parent.is_dir() \
                else "no such folder"
            raise RecordingError(f"{who}: {_rel(mask)}: mask {options['mask']!r} for "
                                 f"{options['bold']} not found ({have}); set source.mask to "
                                 "another name or null")
    return FmriRuns(runs=runs, mask=mask,
                    info={"response": "volume" if options["level"] == "volume" else "glm",
                          "dataset": "haxby", "bold": options["bold"]})


# --------------------------------------------------------------------------- nsd
def read_nsd_design(path: str | os.PathLike, *, subject: str | None = None) -> pd.DataFrame:
    """The trial table of an NSD-style subject: ``session``, ``trial``, ``stim_id``.

    Tab- (``.tsv``) or comma-separated (``.csv``); one row per trial, ``trial`` 1-based
    within its session, ``stim_id`` the 73k image id.
    """
    who = f"sub-{subject}: " if subject else ""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{who}{_rel(path)}: trial design table not found")
    table = pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t")
    missing = [c for c in ("session", "trial", "stim_id") if c not in table.columns]
    if missing:
        raise RecordingError(f"{who}{_rel(path)}: design table lacks column(s) {missing}; it "
                             f"has {list(table.columns)}")
    for col in ("session", "trial", "stim_id"):
        if not pd.api.types.is_integer_dtype(table[col]):
            raise RecordingError(f"{who}{_rel(path)}: column {col!r} must hold integers")
    return table


def _nsd_betas(path: Path, fmt: str, ref_shape, who: str):
    """(reader of trial chunks, n_trials, spatial shape in NIfTI order) of one session."""
    if fmt == "hdf5":
        import h5py

        fid = h5py.File(path, "r")
        if "betas" not in fid:
            fid.close()
            raise RecordingError(f"{who}: {_rel(path)}: no dataset 'betas' in the HDF5 file")
        ds = fid["betas"]
        if ds.ndim != 4:
            shape = ds.shape
            fid.close()
            raise RecordingError(f"{who}: {_rel(path)}: betas have shape {shape}; expected "
                                 "(trials, k, j, i)")
        spatial = tuple(ds.shape[1:][::-1])
        if ref_shape is not None and spatial != tuple(ref_shape) \
                and tuple(ds.shape[1:]) == tuple(ref_shape):
            spatial, flip = tuple(ds.shape[1:]), False
        else:
            flip = True

        def read(t0, t1):
            block = np.asarray(ds[t0:t1])
            return np.transpose(block, (0, 3, 2, 1)) if flip else block

        return read, ds.shape[0], spatial, fid.close, None
    img = nib.load(path)
    if img.ndim != 4:
        raise RecordingError(f"{who}: {_rel(path)}: betas have shape {img.shape}; expected "
                             "(i, j, k, trials)")

    def read(t0, t1):
        return np.moveaxis(np.asarray(img.dataobj[..., t0:t1]), -1, 0)

    return read, img.shape[3], tuple(img.shape[:3]), lambda: None, img.affine


@register(
    "nsd", modalities=("fmri",),
    description="Natural Scenes Dataset style single-trial betas (HDF5 or NIfTI per session).",
    options={
        "subject": Option((int,), None, "NSD subject number (subj01 -> 1).", required=True),
        "sessions": Option((list, type(None)), None, "Session numbers; null reads every "
                           "betas_session*.<format> file found."),
        "format": Option((str,), "hdf5", "Betas file format.", choices=("hdf5", "nifti")),
        "space": Option((str,), "func1pt8mm", "Data space folder."),
        "betas": Option((str,), "betas_fithrf_GLMdenoise_RR", "Betas version folder."),
        "roi": Option((str, type(None)), "nsdgeneral", "ROI image name in "
                      "nsddata/ppdata/subjNN/<space>/roi/ (voxels > 0 kept); null keeps "
                      "every voxel with a non-zero beta."),
        "design": Option((str,), "nsddata/experiments/nsd/trials_subj{subject:02d}.tsv",
                         "Trial table (session, trial, stim_id) relative to root."),
        "scale": Option((int, float), 300, "Stored betas are percent signal change × scale."),
        "zscore": Option((bool,), True, "Z-score each voxel within each session."),
    },
)
def load_nsd(spec, root: Path, options: dict) -> ResponseTable:
    """Read NSD-style betas of one subject; see the module docstring."""
    who = f"sub-{spec.subject}"
    subj = f"subj{options['subject']:02d}"
    design_path = root / options["design"].format(subject=options["subject"])
    design = read_nsd_design(design_path, subject=spec.subject)
    folder = root / "nsddata_betas" / "ppdata" / subj / options["space"] / options["betas"]
    ext = ".hdf5" if options["format"] == "hdf5" else ".nii.gz"
    if options["sessions"] is None:
        files = sorted(folder.glob(f"betas_session*{ext}"))
        sessions = [int(re.sub(r"\D", "", f.name.split(".")[0])) for f in files]
    else:
        sessions = [int(s) for s in options["sessions"]]
        files = [folder / f"betas_session{s:02d}{ext}" for s in sessions]
    if not files:
        raise RecordingError(f"{who}: {_rel(folder)}: no betas_session*{ext} files")
    for f in files:
        if not f.is_file():
            raise RecordingError(f"{who}: {_rel(f)}: betas file not found")
    roi_img, roi_mask, roi_path = None, None, None
    if options["roi"] is not None:
        roi_path = root / "nsddata" / "ppdata" / subj / options["space"] / "roi" / \
            f"{options['roi']}.nii.gz"
        if not roi_path.is_file():
            raise RecordingError(f"{who}: {_rel(roi_path)}: ROI image not found")
        roi_img = nib.load(roi_path)
        roi_mask = np.asarray(roi_img.dataobj).reshape(roi_img.shape[:3]) > 0
    excluded = {str(r) for r in spec.exclude_runs}
    blocks, stim, group, affine, spatial0 = [], [], [], None, None
    # check every session before reading any betas
    readers = []
    for session, path in zip(sessions, files):
        read, n_trials, spatial, close, aff = _nsd_betas(
            path, options["format"], roi_mask.shape if roi_mask is not None else None, who)
        readers.append((session, path, read, n_trials, close))
        rows = design[design["session"] == session].sort_values("trial")
        if len(rows) != n_trials or not np.array_equal(rows["trial"].to_numpy(),
                                                       np.arange(1, n_trials + 1)):
            for r in readers:
                r[4]()
            raise RecordingError(
                f"{who}: {_rel(path)}: {n_trials} trials in the betas but "
                f"{_rel(design_path)} lists {len(rows)} trials of session {session} "
                f"(trial numbers must be 1..{n_trials})")
        if roi_mask is not None and spatial != roi_mask.shape:
            for r in readers:
                r[4]()
            raise RecordingError(f"{who}: {_rel(path)}: betas grid {spatial} does not match "
                                 f"the ROI {_rel(roi_path)} grid {roi_mask.shape}")
        if spatial0 is not None and spatial != spatial0:
            for r in readers:
                r[4]()
            raise RecordingError(f"{who}: {_rel(path)}: betas grid {spatial} differs from the "
                                 f"first session's {spatial0}")
        spatial0, affine = spatial, aff if aff is not None else affine
    try:
        for session, path, read, n_trials, _ in readers:
            if str(session) in excluded:
                continue
            rows = design[design["session"] == session].sort_values("trial")
            parts = []
            for t0 in range(0, n_trials, 50):
                chunk = read(t0, min(t0 + 50, n_trials))
                if roi_mask is None:
                    parts.append(chunk.reshape(len(chunk), -1))
                else:
                    parts.append(chunk[:, roi_mask])
            X = np.concatenate(parts).astype(np.float32) / np.float32(options["scale"])
            blocks.append(X)
            stim += rows["stim_id"].astype(str).tolist()
            group += [str(session)] * n_trials
    finally:
        for r in readers:
            r[4]()
    if not blocks:
        raise RecordingError(f"{who}: every session is excluded (exclude_runs="
                             f"{spec.exclude_runs})")
    if roi_mask is None:
        keep = np.any(np.concatenate(blocks) != 0, axis=0)
        blocks = [b[:, keep] for b in blocks]
        ijk = np.argwhere(np.ones(spatial0, bool))[keep]
    else:
        ijk = np.argwhere(roi_mask)
    if options["zscore"]:
        for b in blocks:
            sd = b.std(0)
            b -= b.mean(0)
            b /= np.where(sd > 0, sd, 1)
    ref_affine = roi_img.affine if roi_img is not None else affine
    coords = nib.affines.apply_affine(ref_affine, ijk) if ref_affine is not None \
        else np.full((len(ijk), 3), np.nan)
    return ResponseTable(
        subject=spec.subject, modality="fmri",
        targets=Targets(name=[f"v{i}-{j}-{k}" for i, j, k in ijk], kind=["voxel"] * len(ijk),
                        coords=coords, region=[options["roi"] or ""] * len(ijk)),
        views={"stimulus": View(X=np.concatenate(blocks).astype(np.float32),
                                rows={"stim_id": np.asarray(stim, dtype=str),
                                      "group": np.asarray(group, dtype=str)})},
        info={"dataset": "nsd", "nsd_subject": subj, "sessions": [int(s) for s in sessions],
              "format": options["format"], "space": options["space"],
              "betas": options["betas"], "roi": options["roi"] or "",
              "zscore": bool(options["zscore"])},
    )
