"""Entry points of the workflow's training rules: one family x one modality per job."""

from __future__ import annotations

from pathlib import Path

from .._logging import logger, setup_logging
from .._parallel import limit_threads

__all__ = ["OUTPUTS", "family_modalities", "train_family", "train_subjects"]

#: Files that each family's job writes in ``results/<study>/models/<family>/<modality>/``.
OUTPUTS = {"voxel_xattn": ("scores.tsv", "layer_profile.tsv", "transfer.tsv", "crowd.tsv",
                           "predictions.h5", "summary.json"),
           "adapters": ("retrieval.tsv", "adaptation.tsv", "crowd.tsv", "predictions.h5",
                        "summary.json"),
           "memory_rnn": ("memory_depth.tsv", "depth.tsv", "units.tsv", "summary.json")}


def family_modalities(study, family: str) -> list[str]:
    """Modalities that ``family`` trains on in ``study`` (those with at least one subject)."""
    params = study.config.get("train", {})
    if family not in params.get("families", []):
        return []
    wanted = params.get(family, {}).get("modalities", [])
    return [m for m in wanted if any(s.train.get("include", True)
                                     for s in study.by_modality(m))]


def train_subjects(study, modality: str) -> list[str]:
    """Subjects of ``modality`` that take part in training (``train.include``)."""
    return [s.subject for s in study.by_modality(modality) if s.train.get("include", True)]


def train_family(family: str, study, modality: str, responses, features, out_dir, *,
                 threads: int | None = None) -> dict:
    """Train ``family`` on the given subjects' response tables and write its outputs.

    Parameters
    ----------
    family : str
        A name of :data:`brainhead.train.FAMILIES`.
    study : brainhead.specs.StudySpec
    modality : str
    responses : sequence of path-like
        ``responses.h5`` of the subjects to train on.
    features : path-like
    out_dir : path-like
        ``results/<study>/models/<family>/<modality>``.
    threads : int, optional
        Cap on torch and BLAS threads (the rule's ``threads``).
    """
    import warnings

    from . import FAMILIES

    # Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per batch.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    setup_logging()
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    params = study.config["train"]
    holdout = [s.subject for s in study.by_modality(modality)
               if s.train.get("transfer_holdout", False)]
    model = Path(features).stem
    with limit_threads(threads):
        if family == "voxel_xattn":
            from .voxel import train_voxel_encoder as train
        elif family == "memory_rnn":
            from .memory import train_memory_decoder as train
        else:
            from .adapters import train_adapter_decoder as train

        logger.info("training %s on %d %s subjects of study %s", family, len(responses),
                    modality, study.name)
        return train(responses, features, out_dir, params, seed=study.seed, model=model,
                     transfer_subject=(holdout or [None])[0])
