"""Modality-specific preprocessing into the uniform response table.

:func:`preprocess_subject` is what the Snakemake rule calls: it finds a subject's
recordings (the simulated BIDS dataset, a BIDS root, or plain files), runs the
pipeline of its modality, and writes ``responses.h5`` atomically. Any problem with the
input is raised before that file exists.
"""

from __future__ import annotations

from pathlib import Path

from .._logging import logger
from ..io.store import provenance, write_responses
from ..io.table import ResponseTable
from ._common import bids_root_of, load_runs
from .eeg import preprocess_eeg
from .fmri import preprocess_fmri
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
    source = spec.source if isinstance(spec.source, str) else sorted(spec.source)
    logger.info("sub-%s (%s): preprocessing, source %s", subject, spec.modality, source)
    epochs_sfreq = decode_epochs_sfreq(study.config, spec.modality)
    if isinstance(spec.source, dict) and "dataset" in spec.source:
        return _from_dataset(spec, seed=study.seed, epochs_sfreq=epochs_sfreq)
    bids_root = bids_root_of(spec, study.root, Path(results_dir))
    if spec.modality == "fmri":
        return _fmri(spec, bids_root)
    datatype = "eeg" if spec.modality == "eeg" else "ieeg"
    runs = load_runs(spec, bids_root, datatype)
    if spec.modality == "eeg":
        return preprocess_eeg(spec, runs, seed=study.seed, epochs_sfreq=epochs_sfreq)
    return preprocess_seeg(spec, runs, epochs_sfreq=epochs_sfreq)


def decode_epochs_sfreq(config: dict, modality: str) -> float | None:
    """Rate of the ``epochs`` view when the study decodes this modality with a model that
    reads raw signals (``decode.models``), else None (no such view is written)."""
    from ..decode import epochs_view_rate

    return epochs_view_rate(config, modality)


def _from_dataset(spec, seed: int = 0, epochs_sfreq: float | None = None) -> ResponseTable:
    """Preprocess a subject read by a dataset adapter (see :mod:`brainhead.io.datasets`)."""
    import mne

    from ..io.datasets import FmriRuns, load_dataset

    data = load_dataset(spec)
    if isinstance(data, ResponseTable):
        return data.validate()
    if isinstance(data, FmriRuns):
        from .fmri import preprocess_fmri_runs

        return preprocess_fmri_runs(spec, data)
    if isinstance(data, mne.BaseEpochs):
        from .eeg import preprocess_eeg_epochs

        return preprocess_eeg_epochs(spec, data, seed=seed, epochs_sfreq=epochs_sfreq)
    if spec.modality == "eeg":
        return preprocess_eeg(spec, data, seed=seed, epochs_sfreq=epochs_sfreq)
    return preprocess_seeg(spec, data, epochs_sfreq=epochs_sfreq)


def _fmri(spec, bids_root) -> ResponseTable:
    """fMRI from the simulated/BIDS dataset or ``source.files``, as :class:`FmriRuns`."""
    from .fmri import preprocess_fmri_runs, runs_from_files

    return preprocess_fmri_runs(spec, runs_from_files(spec, bids_root))


def preprocess_subject(study, subject: str, results_dir: str | Path,
                       out_path: str | Path) -> Path:
    """Preprocess one subject and write ``responses.h5`` atomically with provenance."""
    table = run_preprocessing(study, subject, results_dir)
    spec = study.subjects[subject]
    prov = provenance("preprocess", {"subject": subject, "modality": spec.modality,
                                     "preprocess": spec.preprocess, "source": spec.source})
    return write_responses(out_path, table, prov)
