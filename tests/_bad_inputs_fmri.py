"""Bad sEEG/fMRI inputs, and writers of small files in the layouts brainhead reads.

``CASES`` is a list of ``(case_id, make)``; ``make(study_dir)`` writes the files a
subject needs under ``study_dir`` and returns the subject file's mapping (paths relative
to ``study_dir``) and a substring the error message must contain. Every case must fail
before ``responses.h5`` is written, with a message naming the file and the subject.

The writers (:func:`write_bold`, :func:`write_haxby`, :func:`write_nsd`,
:func:`write_seeg_fif`) are shared with the tests of the adapters and pipelines.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


# --------------------------------------------------------------------------- writers
def write_bold(path: Path, shape=(6, 6, 5), n_scans: int = 60, t_r: float | None = 2.0,
               *, events: pd.DataFrame | None = None, seed: int = 0) -> Path:
    """A 4D BOLD image with a brain-like block and, if ``events`` given, boxcar responses.

    The signal of the voxels in the front half follows the ``trial_type == "a"`` events,
    the back half the ``"b"`` events (delayed by 4 s), on top of noise.
    """
    rng = np.random.default_rng(seed)
    data = np.abs(rng.normal(0, 20, (*shape, n_scans))).astype(np.float32)
    inner = (slice(1, shape[0] - 1), slice(1, shape[1] - 1), slice(1, shape[2] - 1))
    data[inner] = 1000 + rng.normal(0, 5, data[inner].shape)
    if events is not None and t_r:
        times = np.arange(n_scans) * t_r
        for cond, half in (("a", slice(1, shape[0] // 2)), ("b", slice(shape[0] // 2, -1))):
            box = np.zeros(n_scans)
            for onset, dur in events.loc[events["trial_type"] == cond, ["onset", "duration"]].to_numpy():
                box[(times >= onset + 4) & (times < onset + dur + 4)] = 1.0
            data[half, 1:-1, 1:-1] += 20 * box
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    zooms = (4.0, 4.0, 4.0, float(t_r) if t_r else 0.0)
    img.header.set_zooms(zooms)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def block_events(n_blocks: int = 4, *, start: float = 10.0, period: float = 28.0,
                 duration: float = 12.0) -> pd.DataFrame:
    """Alternating ``a``/``b`` blocks with stimulus ids ``a1``, ``b1``, ``a2``..."""
    onsets = start + period * np.arange(n_blocks)
    types = ["a" if k % 2 == 0 else "b" for k in range(n_blocks)]
    return pd.DataFrame({"onset": onsets, "duration": duration, "trial_type": types,
                         "stim_id": [f"{t}{k // 2 + 1}" for k, t in enumerate(types)]})


HAXBY_CONDITIONS = ("house", "face", "cat")


def write_haxby(root: Path, *, n_runs: int = 2, n_scans: int = 60, t_r: float = 2.5,
                shape=(6, 7, 5)) -> Path:
    """A tiny Haxby dataset in the OpenFMRI layout (as in the PyMVPA copy)."""
    (root / "models" / "model001").mkdir(parents=True, exist_ok=True)
    (root / "models" / "model001" / "condition_key.txt").write_text(
        "".join(f"task001 cond{k + 1:03d} {c}\n" for k, c in enumerate(HAXBY_CONDITIONS)))
    sub = root / "sub001"
    rng = np.random.default_rng(1)
    for run in range(1, n_runs + 1):
        name = f"task001_run{run:03d}"
        events = pd.DataFrame({"onset": [10.0, 55.0, 100.0], "duration": 22.5,
                               "trial_type": ["a", "b", "c"]})
        write_bold(sub / "BOLD" / name / "bold_25mm.nii.gz", shape, n_scans, t_r,
                   events=events, seed=run)
        np.savetxt(sub / "BOLD" / name / "bold_moest.txt", rng.normal(0, 0.01, (n_scans, 6)))
        onsets = sub / "model" / "model001" / "onsets" / name
        onsets.mkdir(parents=True, exist_ok=True)
        order = np.roll(np.arange(3), run)  # conditions change places between runs
        for k in range(3):
            onset = [10.0, 55.0, 100.0][order[k]]
            (onsets / f"cond{k + 1:03d}.txt").write_text(f"{onset}\t22.5\t1\n")
    (sub / "masks" / "25mm").mkdir(parents=True, exist_ok=True)
    mask = np.zeros(shape, np.int16)
    mask[1:-1, 1:-1, 1:-1] = 1
    nib.save(nib.Nifti1Image(mask, AFFINE), sub / "masks" / "25mm" / "brain.nii.gz")
    vt = np.zeros(shape, np.int16)
    vt[1:3, 1:3, 1:3] = 1
    nib.save(nib.Nifti1Image(vt, AFFINE), sub / "masks" / "25mm" / "vt.nii.gz")
    return root


def write_nsd(root: Path, *, fmt: str = "hdf5", sessions=(1, 2), n_trials: int = 6,
              shape=(4, 5, 3), subject: int = 1, seed: int = 0) -> dict:
    """A tiny NSD-style dataset; returns the betas (float, % signal change) per session.

    Each session shows stimuli 73k ids ``101..(100 + n_trials // 2)`` twice, so every
    image is repeated within the session.
    """
    import h5py

    rng = np.random.default_rng(seed)
    subj = f"subj{subject:02d}"
    folder = root / "nsddata_betas" / "ppdata" / subj / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"
    folder.mkdir(parents=True, exist_ok=True)
    roi_dir = root / "nsddata" / "ppdata" / subj / "func1pt8mm" / "roi"
    roi_dir.mkdir(parents=True, exist_ok=True)
    roi = -np.ones(shape, np.int16)
    roi[1:3, 1:4, :] = 1
    nib.save(nib.Nifti1Image(roi, AFFINE), roi_dir / "nsdgeneral.nii.gz")
    rows, truth = [], {}
    for s in sessions:
        betas = np.round(rng.normal(0, 2, (*shape, n_trials)) * 300).astype(np.int16)
        truth[s] = betas.astype(float) / 300
        if fmt == "hdf5":
            with h5py.File(folder / f"betas_session{s:02d}.hdf5", "w") as fid:
                fid["betas"] = np.transpose(betas, (3, 2, 1, 0))  # (trials, k, j, i)
        else:
            nib.save(nib.Nifti1Image(betas, AFFINE), folder / f"betas_session{s:02d}.nii.gz")
        ids = 101 + np.tile(np.arange(n_trials // 2), 2)
        rows += [{"session": s, "trial": t + 1, "stim_id": int(i)} for t, i in enumerate(ids)]
    design = root / "nsddata" / "experiments" / "nsd" / f"trials_{subj}.tsv"
    design.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(design, sep="\t", index=False)
    return truth


def write_seeg_fif(path: Path, names: list[str], *, sfreq: float = 500.0,
                   duration: float = 12.0, spacing_mm: float = 3.5, seed: int = 0) -> Path:
    """A FIF sEEG recording: shafts along x at y = 10 mm × shaft index, events a/b."""
    import mne

    from brainhead.preprocess.seeg import parse_contact

    rng = np.random.default_rng(seed)
    info = mne.create_info(names, sfreq, "seeg")
    raw = mne.io.RawArray(rng.normal(0, 20e-6, (len(names), int(sfreq * duration))), info,
                          verbose="error")
    shafts: dict[str, int] = {}
    pos = {}
    for name in names:
        parsed = parse_contact(name)
        if parsed is None:
            pos[name] = np.array([0.0, -0.05, 0.0])  # a reference contact off the shafts
            continue
        shaft, num = parsed
        row = shafts.setdefault(shaft, len(shafts))
        pos[name] = np.array([num * spacing_mm, 10.0 * row, 5.0]) / 1000.0
    raw.set_montage(mne.channels.make_dig_montage(pos, coord_frame="mni_tal"),
                    verbose="error")
    onsets = np.arange(1.0, duration - 1.0, 1.0)
    raw.set_annotations(mne.Annotations(onsets, 0.1, [f"{'ab'[k % 2]}/stim{k}"
                                                      for k in range(len(onsets))]))
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, overwrite=True, verbose="error")
    return path


def _bold_case(study_dir: Path, **kwargs) -> tuple[Path, Path]:
    events = block_events()
    bold = write_bold(study_dir / "raw" / "bold.nii.gz", **kwargs)
    ev = study_dir / "raw" / "events.tsv"
    events.to_csv(ev, sep="\t", index=False)
    return bold, ev


def _fmri_files(sub: str, files=("raw/bold.nii.gz",), events=("raw/events.tsv",), **extra):
    return {"subject": sub, "modality": "fmri",
            "source": {"files": list(files), "events": list(events), **extra}}


# --------------------------------------------------------------------------- cases
def _fmri_3d(study_dir: Path):
    _bold_case(study_dir)
    img = nib.Nifti1Image(np.ones((6, 6, 5), np.float32), AFFINE)
    nib.save(img, study_dir / "raw" / "bold.nii.gz")
    return _fmri_files("bad3d"), "expected a 4D BOLD image"


def _fmri_mask_grid(study_dir: Path):
    _bold_case(study_dir)
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), AFFINE),
             study_dir / "raw" / "mask.nii.gz")
    return _fmri_files("badmask", mask="raw/mask.nii.gz"), "does not match the BOLD grid"


def _fmri_no_tr(study_dir: Path):
    _bold_case(study_dir, t_r=None)
    return _fmri_files("notr"), "repetition time (TR) missing"


def _fmri_event_columns(study_dir: Path):
    _, ev = _bold_case(study_dir)
    block_events().drop(columns=["duration"]).to_csv(ev, sep="\t", index=False)
    return _fmri_files("badcols"), "events lack column(s) ['duration']"


def _fmri_events_outside(study_dir: Path):
    _, ev = _bold_case(study_dir)
    events = block_events()
    events.loc[3, "onset"] = 500.0
    events.to_csv(ev, sep="\t", index=False)
    return _fmri_files("late"), "events lie outside the 120.0 s run"


def _seeg_unpairable(study_dir: Path):
    write_seeg_fif(study_dir / "raw" / "ieeg.fif", ["LA1", "LA2", "LA3", "SPARE", "LB1", "LB2"])
    return ({"subject": "nopair", "modality": "seeg", "source": {"files": ["raw/ieeg.fif"]},
             "preprocess": {"reference": "bipolar"}}, "cannot pair ['SPARE']")


def _seeg_single_contact(study_dir: Path):
    write_seeg_fif(study_dir / "raw" / "ieeg.fif", ["LA1", "LA2", "LA3", "RB1"])
    return ({"subject": "single", "modality": "seeg", "source": {"files": ["raw/ieeg.fif"]},
             "preprocess": {"reference": "bipolar"}}, "single contact")


def _nsd_trial_count(study_dir: Path):
    write_nsd(study_dir / "nsd")
    design = study_dir / "nsd" / "nsddata" / "experiments" / "nsd" / "trials_subj01.tsv"
    table = pd.read_csv(design, sep="\t")
    table.iloc[:-1].to_csv(design, sep="\t", index=False)  # session 2 loses a trial
    return ({"subject": "nsdcount", "modality": "fmri",
             "source": {"dataset": "nsd", "root": "nsd", "subject": 1}},
            "6 trials in the betas but")


def _nsd_shape(study_dir: Path):
    import h5py

    write_nsd(study_dir / "nsd")
    path = (study_dir / "nsd" / "nsddata_betas" / "ppdata" / "subj01" / "func1pt8mm"
            / "betas_fithrf_GLMdenoise_RR" / "betas_session01.hdf5")
    with h5py.File(path, "w") as fid:
        fid["betas"] = np.zeros((6, 60), np.int16)  # flattened: no grid
    return ({"subject": "nsdshape", "modality": "fmri",
             "source": {"dataset": "nsd", "root": "nsd", "subject": 1}},
            "betas have shape (6, 60)")


def _haxby_missing_onset(study_dir: Path):
    write_haxby(study_dir / "haxby")
    (study_dir / "haxby" / "sub001" / "model" / "model001" / "onsets" / "task001_run002"
     / "cond002.txt").unlink()
    return ({"subject": "haxnoons", "modality": "fmri",
             "source": {"dataset": "haxby", "root": "haxby"}},
            "onset file of condition cond002 (face) not found")


def _haxby_motion_rows(study_dir: Path):
    write_haxby(study_dir / "haxby")
    motion = study_dir / "haxby" / "sub001" / "BOLD" / "task001_run001" / "bold_moest.txt"
    np.savetxt(motion, np.zeros((59, 6)))
    return ({"subject": "haxmotion", "modality": "fmri",
             "source": {"dataset": "haxby", "root": "haxby"}},
            "59 confound rows for 60 volumes")


def _fmri_nan_voxels(study_dir: Path):
    bold, _ = _bold_case(study_dir)
    img = nib.load(bold)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[2, 2, 2, 10:20] = np.nan  # one voxel inside the brain loses ten volumes
    data[3, 3, 2, 5] = np.inf
    nib.save(nib.Nifti1Image(data, img.affine, img.header), bold)
    mask = np.zeros(data.shape[:3], np.uint8)
    mask[1:-1, 1:-1, 1:-1] = 1  # the 48 brain voxels
    nib.save(nib.Nifti1Image(mask, img.affine), study_dir / "raw" / "mask.nii.gz")
    return (_fmri_files("nanvox", mask="raw/mask.nii.gz"),
            "2 of 48 voxels inside the brain mask hold NaN or infinite values")


CASES = [
    ("fmri_nan_voxels", _fmri_nan_voxels),
    ("fmri_3d_image", _fmri_3d),
    ("fmri_mask_grid", _fmri_mask_grid),
    ("fmri_tr_missing", _fmri_no_tr),
    ("fmri_events_missing_column", _fmri_event_columns),
    ("fmri_events_outside_run", _fmri_events_outside),
    ("seeg_bipolar_unpairable_name", _seeg_unpairable),
    ("seeg_bipolar_single_contact_shaft", _seeg_single_contact),
    ("nsd_trial_count_vs_design", _nsd_trial_count),
    ("nsd_betas_wrong_shape", _nsd_shape),
    ("haxby_missing_onset_file", _haxby_missing_onset),
    ("haxby_motion_rows", _haxby_motion_rows),
]


def write_study(study_dir: Path, subjects: list[dict], preprocess: dict | None = None):
    """Write ``study.yaml``, ``stimuli.tsv`` and the subject files; return the loaded study."""
    import yaml

    from brainhead.specs import load_study

    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "stimuli.tsv").write_text("stim_id\ttext\na1\tone\n"
        + "".join(f"x{k}\tfiller {k}\n" for k in range(8)))  # align.min_stimuli: 8
    config = {"name": "badinputs", "seed": 0, "stimuli": "stimuli.tsv"}
    if preprocess:
        config["preprocess"] = preprocess
    (study_dir / "study.yaml").write_text(yaml.safe_dump(config))
    (study_dir / "subjects").mkdir(exist_ok=True)
    for sub in subjects:
        (study_dir / "subjects" / f"sub-{sub['subject']}.yaml").write_text(yaml.safe_dump(sub))
    return load_study(study_dir)
