"""Simulated fMRI subject: 4D BOLD in MNI space on nilearn's packaged brain mask."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .signals import ar1_noise, assign_regions, planted_responses, schedule

T_R = 2.0
TASK = "sentences"


def _subject_mask(voxel_size: float) -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    mask = load_mni152_brain_mask(resolution=2)
    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = mask.affine[:3, 3]
    shape = tuple(int(np.ceil(s * 2 / voxel_size)) for s in mask.shape)
    img = resample_img(mask, target_affine=affine, target_shape=shape,
                       interpolation="nearest", copy_header=True, force_resample=True)
    data = (img.get_fdata() > 0.5).astype(np.uint8)
    return nib.Nifti1Image(data, affine)


def simulate_fmri_subject(
    bids_root: Path,
    subject: str,
    stimuli: pd.DataFrame,
    features: np.ndarray,
    planted: dict[str, int],
    params: dict,
    snr: float,
    n_runs: int,
    rng: np.random.Generator,
    n_repeats: int = 1,
    shared_bases: dict[str, np.ndarray] | None = None,
) -> dict:
    """Write one fMRI subject's runs, events, mask and region labels as BIDS.

    Voxel responses are the HRF-convolved planted responses (one amplitude per stimulus
    and voxel), plus a slow drift and AR(1) noise. With ``shared_bases`` (region ->
    basis of shape (dim, rank), see :func:`~brainhead.simulate.signals.shared_bases`)
    every voxel reads out its region's subspace shared across subjects.

    Returns
    -------
    info : dict
        Number of voxels and the regions planted.
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    mask = _subject_mask(params["voxel_size"])
    ijk = np.argwhere(mask.get_fdata() > 0)
    xyz = nib.affines.apply_affine(mask.affine, ijk)
    regions = assign_regions(xyz[:, 1], list(planted))
    responses = planted_responses(features, regions, planted, rng,
                                  shared_bases)  # (n_stim, n_vox)

    func = bids_root / f"sub-{subject}" / "func"
    func.mkdir(parents=True, exist_ok=True)
    prefix = f"sub-{subject}_task-{TASK}"
    nib.save(mask, func / f"{prefix}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    labels = np.zeros(mask.shape, dtype=np.int16)
    names = list(planted)
    for k, name in enumerate(names, start=1):
        sel = ijk[regions == name]
        labels[tuple(sel.T)] = k
    nib.save(nib.Nifti1Image(labels, mask.affine),
             func / f"{prefix}_space-MNI152NLin2009cAsym_desc-regions_dseg.nii.gz")
    pd.DataFrame({"index": range(1, len(names) + 1), "name": names}).to_csv(
        func / f"{prefix}_space-MNI152NLin2009cAsym_desc-regions_dseg.tsv", sep="\t",
        index=False)

    for run, order in enumerate(schedule(len(stimuli), n_runs, rng, n_repeats), start=1):
        onsets = 6.0 + np.arange(len(order)) * 6.0 + rng.uniform(0, 2.0, len(order))
        n_scans = int(np.ceil((onsets[-1] + 24.0) / T_R))
        frame_times = np.arange(n_scans) * T_R
        events = pd.DataFrame({
            "onset": np.round(onsets, 3),
            "duration": 2.0,
            "trial_type": stimuli["stim_id"].to_numpy()[order],
            "stim_id": stimuli["stim_id"].to_numpy()[order],
            "text": stimuli["text"].to_numpy()[order],
        })
        design = make_first_level_design_matrix(
            frame_times, events[["onset", "duration", "trial_type"]], hrf_model="glover",
            drift_model=None)
        design = design[list(events["trial_type"])].to_numpy()  # (n_scans, n_events)
        amplitude = 1.0 + snr * responses[order]  # evoked response + planted signal
        signal = design @ amplitude
        drift = np.outer(np.linspace(-1, 1, n_scans), rng.standard_normal(len(xyz)))
        bold = 100.0 + signal + 0.5 * drift + ar1_noise(n_scans, len(xyz), 0.3, rng)
        vol = np.zeros(mask.shape + (n_scans,), dtype=np.float32)
        vol[tuple(ijk.T)] = bold.T
        img = nib.Nifti1Image(vol, mask.affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = T_R
        stem = func / f"{prefix}_run-{run}"
        nib.save(img, f"{stem}_bold.nii.gz")
        Path(f"{stem}_bold.json").write_text(json.dumps({"RepetitionTime": T_R,
                                                         "TaskName": TASK}, indent=2))
        events.to_csv(f"{stem}_events.tsv", sep="\t", index=False)
    return {"n_targets": int(len(xyz))}
