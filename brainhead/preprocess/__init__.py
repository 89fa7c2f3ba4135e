"""Modality-specific preprocessing into the uniform response table.

:func:`preprocess_subject` is what the Snakemake rule calls: it finds a subject's
recordings (the simulated BIDS dataset, a BIDS root, or plain files), runs the
pipeline of its modality, and writes ``responses.h5`` atomically. Any problem with the
input is raised before that file exists.
"""

from __future__ import annotations

from pathlib import Path

from ..io.store import provenance, write_responses
from ..io.table import ResponseTable
from ._common import bids_root_of, load_runs
from .eeg import preprocess_eeg
from .fmri import find_bids_func_runs, preprocess_fmri
from .seeg import preprocess_seeg

__all__ = ["preprocess_subject", "run_preprocessing", "preprocess_eeg", "preprocess_seeg",
           "preprocess_fmri"]


def run_preprocessing(study, subject: str, results_dir: str | Path) -> ResponseTable:
    """Preprocess one subject of a study and return its response table (nothing written).

    Parameters
    ----------
    study : brainhead.specs.StudySpec
    subject : str
        Subject id (without ``sub-``).
    results_dir : path-like
        ``results/<study>``; the simulated BIDS dataset lives in its ``bids/``.
    """
    if subject not in study.subjects:
        raise KeyError(f"{study.path}: no subject '{subject}' (have {sorted(study.subjects)})")
    spec = study.subjects[subject]
    bids_root = bids_root_of(spec, study.root, Path(results_dir))
    if spec.modality == "fmri":
        return _fmri(spec, bids_root)
    datatype = "eeg" if spec.modality == "eeg" else "ieeg"
    runs = load_runs(spec, bids_root, datatype)
    if spec.modality == "eeg":
        return preprocess_eeg(spec, runs)
    return preprocess_seeg(spec, runs)


def _fmri(spec, bids_root):
    src = spec.source if isinstance(spec.source, dict) else {}
    if bids_root is not None:
        task = src.get("task", "sentences")
        runs = find_bids_func_runs(bids_root, spec.subject, task)
        excluded = {str(r) for r in spec.exclude_runs}
        runs = [r for r in runs if r[0] not in excluded]
        func = Path(bids_root) / f"sub-{spec.subject}" / "func"
        masks = sorted(func.glob(f"sub-{spec.subject}_*desc-brain_mask.nii*"))
        regions = sorted(func.glob(f"sub-{spec.subject}_*desc-regions_dseg.nii*"))
    else:
        runs = [(str(i), Path(f), Path(e)) for i, (f, e) in
                enumerate(zip(src["files"], src.get("events", [])), start=1)
                if str(i) not in {str(r) for r in spec.exclude_runs}]
        masks = [Path(src["mask"])] if "mask" in src else []
        regions = []
    if spec.preprocess.get("mask"):
        masks = [Path(spec.preprocess["mask"])]
    return preprocess_fmri(spec, runs, masks[0] if masks else None,
                           regions[0] if regions else None)


def preprocess_subject(study, subject: str, results_dir: str | Path,
                       out_path: str | Path) -> Path:
    """Preprocess one subject and write ``responses.h5`` atomically with provenance."""
    table = run_preprocessing(study, subject, results_dir)
    spec = study.subjects[subject]
    prov = provenance("preprocess", {"subject": subject, "modality": spec.modality,
                                     "preprocess": spec.preprocess, "source": spec.source})
    return write_responses(out_path, table, prov)
